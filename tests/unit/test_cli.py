"""CLI flags: bad values give one line with the fix, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from workqueue.cli import build_parser


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workqueue", *args], capture_output=True,
                          text=True, timeout=30, env=env)


@pytest.mark.parametrize("args, message", [
    (["work", "--batch-size", "0", "--", "true"], "0 is too small; use 1 or more"),
    (["work", "--lease-seconds", "soon", "--", "true"], "'soon' is not a number"),
    (["work", "--mode", "medium", "--", "true"], "invalid choice: 'medium'"),
    (["work", "--broker-url", "redis://x:1/0"], "no command given"),
    (["work", "--broker-url", "redis://x:1/0", "--", "no-such-program-xyz"],
     "command not found: 'no-such-program-xyz'"),
    (["work", "--broker-url", "kafka://x:1", "--", "true"], "use redis://HOST:PORT/0"),
    (["status"], "no broker given: set WORKQUEUE_BROKER_URL"),
    (["purge", "--broker-url", "redis://x:1/0"], "add --yes"),
])
def test_bad_flags_exit_2_with_one_clear_line(args, message):
    result = run(*args, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_subcommands_the_chart_uses_exist():
    commands = build_parser()._subparsers._group_actions[0].choices
    assert {"seed", "work", "status", "run-local"} <= set(commands)
