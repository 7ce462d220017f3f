"""`workqueue` CLI processes for the integration tests: workers as the chart's pods run them,
each logging to a file, and one-shot commands."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from conftest import WORKQUEUE
from pod_processes import start_pod

BOUND_SECONDS = 60
"""Longest any worker may take to notice a fault and exit: a run must never hang."""


class Workers:
    """`workqueue work` processes, as the worker Job's pods run them, each logging to a file."""

    def __init__(self, env: dict[str, str], logs: Path, count: int, *command: str) -> None:
        logs.mkdir(exist_ok=True)
        self.logs = [logs / f"worker-{i}.log" for i in range(count)]
        self.procs = [start_pod([*WORKQUEUE, "work", "--", *command], {**os.environ, **env}, log)
                      for log in self.logs]

    def wait(self, timeout: float = BOUND_SECONDS) -> list[int]:
        """Each worker's exit code; a worker still running after ``timeout`` is a hang, which
        fails the test with what the workers logged."""
        try:
            return [proc.wait(timeout) for proc in self.procs]
        except subprocess.TimeoutExpired:
            raise AssertionError(f"a worker still ran after {timeout:.0f} s (a hang); the "
                                 f"workers' logs:\n{self.text()[-4000:]}") from None
        finally:
            for proc in self.procs:
                proc.kill()

    def text(self) -> str:
        return "\n".join(log.read_text() for log in self.logs)


def cli(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 60):
    return subprocess.run([*WORKQUEUE, *args], capture_output=True, text=True, input=stdin,
                          timeout=timeout, env={**os.environ, **env})


def wait_until(check, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
