"""The generator's input handling, options and errors, without helm."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from generator import Options, generate
from generator.chunks import CHUNK_MAX_BYTES
from generator.yamltext import yaml_string

YAML_SPECIAL = ["yes", "no", "null", "~", "- x", "{a: b}", "[1, 2]", "  leading", "trailing  ",
                "#not a comment in jsonl", "key: value", "'single'", '"double"', "1e3", "0x1F",
                "on", "a\\b", "tab\there", "üñí", "😀 emoji", "\u2028 line sep", "\x85 nel",
                "\x1b[31m escape", "\ufeff bom", "&anchor", "*alias", "!tag", "%directive", "|"]


def run(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "generator", *args], capture_output=True,
                          text=True, cwd=cwd, input=stdin, timeout=120)


def test_text_file_round_trips_through_the_values(tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_bytes(b"\xef\xbb\xbfframe-1\r\n# a comment\r\n\r\nyes\r\n- x\r\n  leading\r\n")
    values = yaml.safe_load(generate(Options(str(tasks))).values)
    assert values["tasks"] == ["frame-1", "yes", "- x", "  leading"]


def test_a_task_timeout_lands_in_the_worker_values_only_when_given(tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("a\n")
    timed = yaml.safe_load(generate(Options(str(tasks), task_timeout=600)).values)
    assert timed["worker"]["taskTimeoutSeconds"] == 600
    plain = yaml.safe_load(generate(Options(str(tasks))).values)
    assert "taskTimeoutSeconds" not in plain["worker"]
    refused = run(str(tasks), "--task-timeout", "0", cwd=tmp_path)
    assert refused.returncode == 2 and "--task-timeout: 0 is too small" in refused.stderr


def test_a_retry_delay_lands_in_the_worker_values_only_when_given(tmp_path):
    tasks = tmp_path / "tasks.txt"
    tasks.write_text("a\n")
    delayed = yaml.safe_load(generate(Options(str(tasks), retry_delay=0)).values)
    assert delayed["worker"]["retryDelaySeconds"] == 0
    assert "retryDelaySeconds" not in yaml.safe_load(generate(Options(str(tasks))).values)["worker"]
    refused = run(str(tasks), "--mode", "indexed", "--retry-delay", "5", cwd=tmp_path)
    assert refused.returncode == 2 and "Job controller's own backoff" in refused.stderr


def test_jsonl_values_become_payloads_and_yaml_specials_survive(tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(json.dumps(t) for t in [*YAML_SPECIAL, {"n": 1}]) + "\n")
    values = yaml.safe_load(generate(Options(str(tasks))).values)
    assert values["tasks"] == [*YAML_SPECIAL, '{"n":1}']


@pytest.mark.parametrize("text", YAML_SPECIAL)
def test_yaml_string_reads_back_unchanged(text):
    assert yaml.safe_load(yaml_string(text)) == text


def test_options_land_in_the_values(tmp_path):
    tasks = tmp_path / "t.txt"
    tasks.write_text("a\nb\nc\n")
    result = generate(Options(str(tasks), broker="rabbitmq", mode="coarse", parallelism=7,
                              image="registry.local:5000/render:1.4",
                              command=["render", "--frame", "{}"], max_attempts=5))
    values = yaml.safe_load(result.values)
    assert values["broker"] == {"type": "rabbitmq"} and values["mode"] == "coarse"
    assert values["image"] == {"repository": "registry.local:5000/render", "tag": "1.4"}
    assert values["worker"] == {"command": ["render", "--frame", "{}"], "parallelism": 7,
                                "maxAttempts": 5}
    assert values["tasks"] == ["a", "b", "c"] and result.count == 3


def test_indexed_mode_writes_no_broker_values(tmp_path):
    tasks = tmp_path / "t.txt"
    tasks.write_text("a\nb\n")
    values = yaml.safe_load(generate(Options(str(tasks), mode="indexed")).values)
    assert values["mode"] == "indexed" and "broker" not in values
    assert values["tasks"] == ["a", "b"]


def test_big_list_goes_to_chunks_holding_every_task_once_in_order(tmp_path):
    tasks = tmp_path / "t.txt"
    expected = [f"task {i} {'x' * (i % 50)}" for i in range(60_000)]
    tasks.write_text("\n".join(expected) + "\n")
    result = generate(Options(str(tasks), output=tmp_path / "values.yaml"))
    values = yaml.safe_load(result.values)
    assert values["tasks"] == [] and values["tasksFrom"]["count"] == len(expected)
    maps = list(yaml.load_all(result.manifest.read_text(), Loader=yaml.CSafeLoader))
    assert [m["metadata"]["name"] for m in maps] == values["tasksFrom"]["configMaps"]
    assert len(maps) > 1
    seen = []
    for config_map in maps:
        data = config_map["data"]["tasks.jsonl"]
        assert len(data.encode()) <= CHUNK_MAX_BYTES
        seen += [json.loads(line) for line in data.splitlines()]
    assert seen == expected


def test_stdin_is_read(tmp_path):
    out = run("-", "--parallelism", "3", cwd=tmp_path, stdin="one\ntwo\n")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["tasks"] == ["one", "two"]
    assert "2 tasks" in out.stderr


@pytest.mark.parametrize("content, args, message", [
    (None, [], "no such file"),
    (b"caf\xe9\n", [], "not UTF-8"),
    (b"# only comments\n\n", [], "no tasks found"),
    (b"ok\n" + b"x" * (300 * 1024) + b"\n", [], "over the 262144-byte limit"),
    (b'"ok"\n{"a": \n', ["--jsonl"], "tasks.jsonl:2: not valid JSON"),
    (b"ok\n", ["--max-attempts", "5000"], "--max-attempts (chart value worker.maxAttempts)"),
    (b"ok\n", ["--parallelism", "0"], "0 is too small"),
    (b"ok\n", ["--broker", "kafka"], "invalid choice: 'kafka'"),
    (b"ok\n", ["--command", ""], "the command is empty"),
    (b"ok\n", ["--name", "My_Job"], "not a release name the chart can serve"),
    (b"ok\n", ["--name", "1job"], "starting with a letter"),
    (b"ok\n", ["--name", "my.job"], "not a release name the chart can serve"),
    (b"ok\n", ["-o", "tasks.txt"], "-o tasks.txt is the task list itself"),
    (b"ok\n", ["--tasks-manifest", "tasks.txt"], "--tasks-manifest tasks.txt is the task list"),
    (b'""\n', ["--jsonl"], "chart value tasks.0"),
    (b"ok\n", ["--mode", "indexed", "--broker", "redis"], "indexed mode runs without a broker"),
])
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, content, args, message):
    name = "tasks.jsonl" if "--jsonl" in args else "tasks.txt"
    args = [a for a in args if a != "--jsonl"]
    if content is not None:
        (tmp_path / name).write_bytes(content)
    before = set(tmp_path.iterdir())
    output = [] if "-o" in args else ["-o", "values.yaml"]
    out = run(name, *args, *output, "--inline-max-bytes", "1000", cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert set(tmp_path.iterdir()) == before, "something was written"


def test_error_after_chunking_started_leaves_no_manifest(tmp_path):
    lines = [f"task-{i}" for i in range(5000)] + ["bad \xff"]
    (tmp_path / "t.txt").write_bytes("\n".join(lines[:-1]).encode() + b"\nbad \xff\n")
    out = run("t.txt", "-o", "values.yaml", "--inline-max-bytes", "1000", cwd=tmp_path)
    assert out.returncode == 2 and "t.txt:5001: not UTF-8" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]


def test_help_shows_examples(tmp_path):
    out = run("--help", cwd=tmp_path)
    assert out.returncode == 0 and "helm install myjob charts/workqueue-job" in out.stdout


def test_jsonl_from_stdin_with_format(tmp_path):
    out = run("-", "--format", "jsonl", "-o", "values.yaml", cwd=tmp_path,
              stdin='{"frame": 1}\n"two"\n')
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load((tmp_path / "values.yaml").read_text())["tasks"] == [
        '{"frame":1}', "two"]


@pytest.mark.parametrize("output", [["-o", "my values.yaml"], []], ids=["file", "stdout"])
def test_the_printed_install_command_names_the_real_values_file(tmp_path, output):
    (tmp_path / "t.txt").write_text("a\n")
    out = run("t.txt", *output, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "generator: 1 task, inline" in out.stderr
    expected = "-f 'my values.yaml'" if output else "-f VALUES_FILE"
    assert expected in out.stderr
    assert "-f values.yaml" not in out.stderr
