"""From a task list and options to chart values (and, for big lists, ConfigMap chunks)."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined

from workqueue.errors import TaskSourceError
from workqueue.taskfile import iter_tasks, no_tasks_error

from .chart import DEFAULT_CHART, Chart, load_chart, schema_errors
from .chunks import iter_chunks, write_chunks
from .errors import GeneratorError
from .yamltext import yaml_string

INLINE_MAX_BYTES = 256 * 1024
"""Tasks up to this size (as YAML) go inline. Helm stores a release, values and rendered
manifest together, gzipped, in one Secret capped at 1 MiB, and the tasks appear in both."""

RELEASE_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,51}[a-z0-9])?$")
"""A Helm release name the chart can serve: its objects' names (a Service among them) must be
DNS-1035 labels, which start with a letter and hold no dots."""

# Where each option lands in the values, to name the flag when the schema rejects it.
FLAGS = {"mode": "--mode", "broker.type": "--broker", "worker.parallelism": "--parallelism",
         "worker.command": "--command", "worker.maxAttempts": "--max-attempts",
         "worker.taskTimeoutSeconds": "--task-timeout",
         "worker.retryDelaySeconds": "--retry-delay",
         "image.repository": "--image", "image.tag": "--image"}


@dataclass(frozen=True)
class Options:
    """What to generate. None means "the chart's default"."""

    tasks: str
    format: str = "auto"
    name: str = "myjob"
    broker: str | None = None
    mode: str | None = None
    parallelism: int | None = None
    image: str | None = None
    command: list[str] | None = None
    max_attempts: int | None = None
    task_timeout: int | None = None
    retry_delay: int | None = None
    output: Path | None = None
    tasks_manifest: Path | None = None
    inline_max_bytes: int = INLINE_MAX_BYTES
    chart: Path = DEFAULT_CHART


@dataclass
class Result:
    """What was generated: the values text, the task count, and the chunk ConfigMaps if any."""

    values: str
    count: int
    config_maps: list[str] = field(default_factory=list)
    manifest: Path | None = None
    chart_ref: str = ""
    """What `helm install` takes for the chart: the checkout's folder, or, for the files a
    wheel carries, the published chart at this version."""


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("generator", "templates"), undefined=StrictUndefined,
                      keep_trailing_newline=True, autoescape=False)
    env.filters["yaml_string"] = yaml_string
    return env


def _split_image(image: str) -> tuple[str, str]:
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        return image, ""
    return repository, tag


def _manifest_path(options: Options) -> Path:
    if options.tasks_manifest:
        return options.tasks_manifest
    folder = options.output.parent if options.output else Path.cwd()
    return folder / f"{options.name}-tasks.yaml"


def _checked_tasks(path: str, fmt: str) -> Iterator[str]:
    try:
        yield from iter_tasks(path, fmt)
    except TaskSourceError as exc:
        raise GeneratorError(str(exc)) from None


def _refuse_overwriting_the_input(options: Options) -> None:
    """-o or --tasks-manifest naming the task file would replace the user's list."""
    if options.tasks == "-":
        return
    source = Path(options.tasks).resolve()
    for flag, target in (("-o", options.output), ("--tasks-manifest", _manifest_path(options))):
        if target is not None and target.resolve() == source:
            raise GeneratorError(f"{flag} {target} is the task list itself; write the "
                                 "output to another file")


class AtomicFile:
    """A file written under a temporary name and renamed into place only on success."""

    def __init__(self, target: Path) -> None:
        self.target = target
        try:
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        except OSError as exc:
            raise GeneratorError(f"cannot write to {target.parent}: {exc.strerror}") from None
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "w", encoding="utf-8")

    def commit(self) -> None:
        self.file.close()
        # mkstemp makes the file private; give it the mode any new file would get.
        umask = os.umask(0)
        os.umask(umask)
        self.tmp.chmod(0o666 & ~umask)
        self.tmp.replace(self.target)

    def discard(self) -> None:
        self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def generate(options: Options) -> Result:
    """Read the tasks, build the values, check them against the chart's schema, and write the
    chunk manifest (if the list is too big to inline). Raises GeneratorError, writing nothing."""
    if not RELEASE_NAME.match(options.name):
        raise GeneratorError(
            f"--name {options.name!r} is not a release name the chart can serve: use up to 53 "
            "lowercase letters, digits and '-', starting with a letter and ending with a letter "
            "or digit"
        )
    chart = load_chart(options.chart)
    env = _environment()
    _refuse_overwriting_the_input(options)
    tasks = _checked_tasks(options.tasks, options.format)
    inline: list[str] = []
    size = 0
    for task in tasks:
        inline.append(task)
        size += len(yaml_string(task)) + 5
        if size > options.inline_max_bytes:
            break
    else:
        if not inline:
            raise GeneratorError(str(no_tasks_error(options.tasks)))
        return _finish(options, chart, env, inline, len(inline), [], None)

    manifest = AtomicFile(_manifest_path(options))
    try:
        names, count, checksum = write_chunks(env, manifest.file, options.name,
                                              iter_chunks(itertools.chain(inline, tasks)))
        result = _finish(options, chart, env, [], count, names, manifest.target, checksum)
        manifest.commit()
    except BaseException:
        manifest.discard()
        raise
    return result


def _values(options: Options, chart: Chart, tasks: list[str], count: int,
            config_maps: list[str], checksum: str) -> dict[str, Any]:
    defaults = chart.defaults
    repository, tag = _split_image(options.image) if options.image else (
        defaults["image"]["repository"], defaults["image"]["tag"] or chart.app_version)
    values: dict[str, Any] = {
        "mode": options.mode or defaults["mode"],
        "image": {"repository": repository, "tag": tag or chart.app_version},
        "worker": {
            "command": options.command if options.command is not None
            else defaults["worker"]["command"],
            "parallelism": options.parallelism if options.parallelism is not None
            else defaults["worker"]["parallelism"],
            "maxAttempts": options.max_attempts if options.max_attempts is not None
            else defaults["worker"]["maxAttempts"],
        },
    }
    if values["mode"] != "indexed":
        values["broker"] = {"type": options.broker or defaults["broker"]["type"]}
    elif options.broker:
        raise GeneratorError("--broker: indexed mode runs without a broker; drop --broker, or "
                             "use --mode fine or coarse")
    elif options.retry_delay is not None:
        raise GeneratorError("--retry-delay: indexed mode retries with the Job controller's own "
                             "backoff; drop --retry-delay, or use --mode fine or coarse")
    if options.task_timeout is not None:
        values["worker"]["taskTimeoutSeconds"] = options.task_timeout
    if options.retry_delay is not None:
        values["worker"]["retryDelaySeconds"] = options.retry_delay
    if config_maps:
        values["tasks"] = []
        values["tasksFrom"] = {"configMaps": config_maps, "count": count, "checksum": checksum}
    else:
        values["tasks"] = tasks
    return values


def _check(chart: Chart, values: dict[str, Any]) -> None:
    errors = schema_errors(chart, values)
    if errors:
        path, message = errors[0]
        flag = FLAGS.get(path)
        where = f"{flag} (chart value {path})" if flag else f"chart value {path or '(top)'}"
        raise GeneratorError(f"{where}: {message}; see --help for what it accepts")


def _finish(options: Options, chart: Chart, env: Environment, tasks: list[str], count: int,
            config_maps: list[str], manifest: Path | None, checksum: str = "") -> Result:
    values = _values(options, chart, tasks, count, config_maps, checksum)
    _check(chart, values)
    text = env.get_template("values.yaml.j2").render(
        source=options.tasks if options.tasks != "-" else "stdin", name=options.name,
        manifest=manifest.name if manifest else None, count=count, config_maps=config_maps,
        tasks=tasks, mode=values["mode"], broker=values.get("broker", {}).get("type"),
        image_repository=values["image"]["repository"], image_tag=values["image"]["tag"],
        command=values["worker"]["command"], parallelism=values["worker"]["parallelism"],
        max_attempts=values["worker"]["maxAttempts"],
        task_timeout=values["worker"].get("taskTimeoutSeconds"),
        retry_delay=values["worker"].get("retryDelaySeconds"), checksum=checksum,
        chart_version=chart.version)
    # What is written must be what was checked: parse it back.
    if yaml.safe_load(text) != values:
        raise GeneratorError("internal error: the rendered values do not read back as built; "
                             "please report this with the task file")
    return Result(text, count, config_maps, manifest, _chart_ref(chart))


def _chart_ref(chart: Chart) -> str:
    if chart.installable:
        return os.path.relpath(chart.path)
    return f"oci://REGISTRY/charts/workqueue-job --version {chart.version}"
