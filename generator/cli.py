"""`python -m generator TASKS`: chart values for a task list, on stdout or in -o FILE."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from workqueue.cli import positive_int, whole_number
from workqueue.progress import plural
from workqueue.taskfile import FORMATS

from .chart import DEFAULT_CHART
from .errors import GeneratorError
from .plan import INLINE_MAX_BYTES, AtomicFile, Options, Result, generate

EXAMPLES = """\
examples:
  python -m generator tasks.txt -o values.yaml      # or: workqueue-generator tasks.txt ...
  helm install myjob charts/workqueue-job -f values.yaml    # or oci://REGISTRY/charts/...

  # one pod per task, on RabbitMQ, with your image and program ({} becomes the task)
  python -m generator frames.txt --mode coarse --broker rabbitmq \\
      --image registry.example/render:1.4 --command "render --frame {}" -o values.yaml

  # JSON Lines (each line one JSON value) from stdin
  generate-params | python -m generator - --format jsonl --parallelism 20 -o values.yaml

Input: one task per line; blank lines and # comments are skipped. Files ending in .jsonl or
.ndjson hold one JSON value per line. Lists too big for a Helm release are written to a
ConfigMap manifest (NAME-tasks.yaml) to apply first; the exact commands are printed.
"""


def _command(text: str) -> list[str]:
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {text!r} into words: {exc}") from None
    if not argv:
        raise argparse.ArgumentTypeError("the command is empty; give the program to run per task")
    return argv


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generator", description="Render workqueue-job chart values from a task "
        "list.", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tasks", help="task file (text, or .jsonl), or - for stdin")
    parser.add_argument("--format", choices=FORMATS, default="auto",
                        help="text (one task per line) or jsonl (one JSON value per line); "
                             "auto goes by the file name, and reads stdin as text")
    parser.add_argument("--broker", choices=("redis", "rabbitmq"),
                        help="queue broker (chart default: redis; not with --mode indexed)")
    parser.add_argument("--mode", choices=("fine", "coarse", "indexed"),
                        help="fine: workers drain the queue; coarse: one pod per task; "
                             "indexed: one pod per task of an Indexed Job, no broker "
                             "(chart default: fine)")
    parser.add_argument("--parallelism", type=positive_int,
                        help="worker pods at once (chart default: 2)")
    parser.add_argument("--image", help="worker image REPOSITORY[:TAG] (chart default: "
                                        "workqueue-job:<appVersion>)")
    parser.add_argument("--command", type=_command,
                        help="program run per task, as a shell-style string; the task arrives "
                             "on stdin, in $WORKQUEUE_PAYLOAD and in place of {} (chart default: "
                             "echo \"Working on ...\"; sleep 2)")
    parser.add_argument("--max-attempts", type=positive_int,
                        help="runs of a task before it is dead-lettered (chart default: 3)")
    parser.add_argument("--task-timeout", type=positive_int, metavar="SECONDS",
                        help="stop a task's command after this long and fail the attempt "
                             "(chart default: no limit)")
    parser.add_argument("--retry-delay", type=whole_number, metavar="SECONDS",
                        help="wait before a failed task's first retry, doubling for each later "
                             "one; 0: retry at once (chart default: 10)")
    parser.add_argument("--name", default="myjob",
                        help="Helm release name; names the task ConfigMaps (default %(default)s)")
    parser.add_argument("-o", "--output", type=Path, help="values file to write (default stdout)")
    parser.add_argument("--tasks-manifest", type=Path,
                        help="where to write the ConfigMaps of a big list (default "
                             "NAME-tasks.yaml next to the output)")
    parser.add_argument("--inline-max-bytes", type=positive_int, default=INLINE_MAX_BYTES,
                        help="largest task list kept inline in the values (default %(default)s)")
    parser.add_argument("--chart", type=Path, default=DEFAULT_CHART,
                        help="the chart to check the values against (default: the one this "
                             "package was built with: a checkout's, or the files its wheel "
                             "carries)")
    return parser


def _options(args: argparse.Namespace) -> Options:
    return Options(tasks=args.tasks, format=args.format, name=args.name, broker=args.broker,
                   mode=args.mode,
                   parallelism=args.parallelism, image=args.image, command=args.command,
                   max_attempts=args.max_attempts, task_timeout=args.task_timeout,
                   retry_delay=args.retry_delay,
                   output=args.output,
                   tasks_manifest=args.tasks_manifest, inline_max_bytes=args.inline_max_bytes,
                   chart=args.chart)


def _write_values(result: Result, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(result.values)
        return
    try:
        values = AtomicFile(output)
    except GeneratorError:
        if result.manifest:
            result.manifest.unlink(missing_ok=True)
        raise
    try:
        values.file.write(result.values)
        values.commit()
    except OSError as exc:
        values.discard()
        if result.manifest:
            result.manifest.unlink(missing_ok=True)
        raise GeneratorError(f"cannot write {output}: {exc.strerror}") from None


def _report(result: Result, options: Options) -> None:
    # Written to stdout, the values went wherever the shell sent them: name no file for them.
    values = shlex.quote(str(options.output)) if options.output else "VALUES_FILE"
    install = (f"  helm install {options.name} {result.chart_ref} -f {values}"
               + ("" if options.output else "   (VALUES_FILE: where you saved this output)"))
    if result.chart_ref.startswith("oci://REGISTRY/"):
        install += "\n  (REGISTRY: where the chart is published, e.g. by make publish)"
    tasks = plural(result.count, "task")
    if not result.config_maps:
        print(f"generator: {tasks}, inline in the values. Install:\n{install}", file=sys.stderr)
        return
    selector = f"app.kubernetes.io/instance={options.name},app.kubernetes.io/component=tasks"
    print(f"generator: {tasks} are too many for a Helm release; they are in "
          f"{len(result.config_maps)} ConfigMaps in {result.manifest}.\n"
          "Apply them first, in the namespace you install into, then install:\n"
          f"  kubectl apply --server-side -f {result.manifest}\n"
          f"{install}\n"
          f"Remove them after `helm uninstall`:\n"
          f"  kubectl delete configmap -l {selector}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    options = _options(args)
    try:
        result = generate(options)
        _write_values(result, options.output)
    except GeneratorError as exc:
        print(f"generator: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("generator: interrupted; nothing written", file=sys.stderr)
        return 130
    _report(result, options)
    return 0
