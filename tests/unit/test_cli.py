"""CLI flags: bad values give one line with the fix, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from docker_engine import docker_lock
from workqueue.cli import build_parser


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workqueue", *args], capture_output=True,
                          text=True, timeout=30, env=env)


@pytest.mark.parametrize("args, message", [
    (["work", "--batch-size", "0", "--", "true"], "0 is too small; use 1 or more"),
    (["work", "--lease-seconds", "soon", "--", "true"], "'soon' is not a number"),
    (["work", "--mode", "medium", "--", "true"], "'medium' is not one of fine, coarse"),
    (["work", "--broker-url", "redis://x:1/0"], "no command given"),
    (["work", "--broker-url", "redis://x:1/0", "--", "no-such-program-xyz"],
     "command not found: 'no-such-program-xyz'"),
    (["work", "--broker-url", "kafka://x:1", "--", "true"], "use redis://HOST:PORT/0"),
    (["status"], "no broker given: set WORKQUEUE_BROKER_URL"),
    (["status", "--broker-url", "redis://a:1/0,redis://b:1/0"], "only RabbitMQ takes several"),
    (["status", "--broker-url", "amqp://u@a:1/%2F,kafka://b:1"], "use redis://HOST:PORT/0"),
    (["status", "--broker-url", "amqp://u@a:1/%2F", "--broker-replicas", "2"],
     "broker replicas 2 is even; use an odd number"),
    (["status", "--broker-url", "redis://a:1/0", "--broker-replicas", "3"],
     "only RabbitMQ replicates queues"),
    (["status", "--broker-url", ","], "the broker URL is empty"),
    (["purge", "--broker-url", "redis://x:1/0"], "add --yes"),
    (["status", "--bogus"], "unrecognized arguments: --bogus (see workqueue --help)"),
    # One process per worker: a hundred thousand once brought a machine down
    (["run-local", "--tasks", "t.txt", "--parallelism", "100000", "--", "true"],
     "100000 worker processes on a machine with"),
])
def test_bad_flags_exit_2_with_one_clear_line(args, message):
    result = run(*args, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    # The problem comes first, on the only line: no usage block before it
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("variable, value, message", [
    ("WORKQUEUE_BATCH_SIZE", "abc", "'abc' is not a whole number (set by --batch-size or "
                                    "WORKQUEUE_BATCH_SIZE)"),
    ("WORKQUEUE_LEASE_SECONDS", "-1", "-1.0 must be above 0 (set by --lease-seconds or "
                                      "WORKQUEUE_LEASE_SECONDS)"),
    ("WORKQUEUE_CONNECT_TIMEOUT", "never", "'never' is not a number of seconds"),
    ("WORKQUEUE_MAX_ATTEMPTS", "0", "0 is too small"),
    ("WORKQUEUE_LEASE_SECONDS", "nan", "'nan' is not a finite number of seconds"),
    ("WORKQUEUE_GRACE_SECONDS", "inf", "'inf' is not a finite number of seconds"),
    ("WORKQUEUE_MODE", "medium", "'medium' is not one of fine, coarse (set by --mode or "
                                 "WORKQUEUE_MODE)"),
    ("WORKQUEUE_ON_DEAD", "maybe", "'maybe' is not one of fail, succeed"),
    ("WORKQUEUE_LOG_LEVEL", "LOUD", "WORKQUEUE_LOG_LEVEL='LOUD' is not one of DEBUG, INFO"),
])
def test_bad_environment_values_are_one_clear_line_too(variable, value, message):
    result = run("work", "--", "true", env={"PATH": "/usr/bin:/bin", variable: value})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_values_become_the_defaults(monkeypatch):
    monkeypatch.setenv("WORKQUEUE_BATCH_SIZE", "25")
    monkeypatch.setenv("WORKQUEUE_GRACE_SECONDS", "7.5")
    args = build_parser().parse_args(["work", "--", "true"])
    assert (args.batch_size, args.grace_seconds, args.max_attempts) == (25, 7.5, 3)


def test_subcommands_the_chart_uses_exist():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"seed", "work", "status", "run-local"} <= set(commands)


def test_every_exit_code_is_in_the_help_and_the_readme():
    from workqueue.errors import EXIT_CODES

    help_text = run("--help", env={"PATH": "/usr/bin:/bin"}).stdout
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
    assert sorted(int(code) for code in rows) == [row.code for row in EXIT_CODES]
    for row in EXIT_CODES:
        assert f"  {row.code:>3}  " in help_text
        assert row.chart.split(" ")[0].lower() in rows[str(row.code)].lower()


def test_make_help_lists_every_target_and_e2e_skips_without_an_error():
    root = Path(__file__).resolve().parents[2]
    targets = subprocess.run(["make", "-s", "help"], cwd=root, capture_output=True, text=True,
                             timeout=30).stdout
    for target in ("setup", "lint", "check", "test", "demo", "images", "e2e", "bench", "clean"):
        assert f"make {target} " in targets
    # No kind and no cluster: the suite skips itself, and make says nothing of an error.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp"}
    with docker_lock():  # `make e2e` may start dockerd, as the image tests do
        e2e = subprocess.run(["make", "e2e"], cwd=root, capture_output=True, text=True,
                             timeout=300, env=env)
    assert e2e.returncode == 0, e2e.stdout + e2e.stderr
    # One line, saying why and what to do
    assert e2e.stdout.startswith("e2e: skipped: kind not found: install it"), e2e.stdout
    assert len((e2e.stdout + e2e.stderr).splitlines()) == 1, e2e.stdout + e2e.stderr
