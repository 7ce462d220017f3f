"""A pod forked from the preloaded server ends as `python -m workqueue` started anew would:
same exit code, same log, a session of its own, signals handled the same way."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pod_processes import CLI_PREFIX, ForkedPod, start_pod, start_program

STARTS = {"forked": lambda argv, env, log: start_pod([*CLI_PREFIX, *argv], env, log),
          "program": lambda argv, env, log: start_program([*CLI_PREFIX, *argv], env, log)}
"""The CLI forked, and as a new interpreter, the way a container runs it."""


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def waiting_env() -> dict[str, str]:
    """A worker pointed at a loopback port nobody listens on: it waits, retrying."""
    return {**os.environ, "WORKQUEUE_BROKER_URL": f"redis://127.0.0.1:{closed_port()}",
            "WORKQUEUE_QUEUE": "q", "WORKQUEUE_CONNECT_TIMEOUT": "60"}


def wait_for_line(log: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in {log.read_text()!r}"
        time.sleep(0.05)


def test_only_the_cli_is_forked(tmp_path):
    pod = start_pod([*CLI_PREFIX, "--help"], dict(os.environ), tmp_path / "cli.log")
    other = start_pod(["true"], dict(os.environ), tmp_path / "true.log")
    assert isinstance(pod, ForkedPod) and isinstance(other, subprocess.Popen)
    assert (pod.wait(30), other.wait(30)) == (0, 0)


@pytest.mark.parametrize("start", STARTS)
def test_a_config_error_exits_2_with_its_line_in_the_log(tmp_path, start):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKQUEUE_")}
    pod = STARTS[start](["work", "--", "true"], env, tmp_path / "pod.log")
    assert pod.wait(30) == 2
    assert (tmp_path / "pod.log").read_text().strip() == (
        "workqueue: error: no broker given: set WORKQUEUE_BROKER_URL or pass --broker-url")


@pytest.mark.parametrize("start", STARTS)
def test_sigterm_while_waiting_for_the_broker_exits_143_holding_no_task(tmp_path, start):
    log = tmp_path / "pod.log"
    pod = STARTS[start](["work", "--", "true"], waiting_env(), log)
    wait_for_line(log, "retrying for up to 60s")
    assert os.getsid(pod.pid) == pod.pid
    pod.send_signal(signal.SIGTERM)
    assert pod.wait(30) == 128 + signal.SIGTERM
    assert "stopped while waiting for redis" in log.read_text()


@pytest.mark.parametrize("start", STARTS)
def test_sigkill_is_reported_as_the_signal(tmp_path, start):
    log = tmp_path / "pod.log"
    pod = STARTS[start](["work", "--", "true"], waiting_env(), log)
    wait_for_line(log, "retrying for up to 60s")
    pod.kill()
    assert pod.wait(30) == -signal.SIGKILL
