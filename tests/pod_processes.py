"""Worker pods as processes: `workqueue` runs forked from a server that has already imported
it, the rest as programs.

A pod of the chart is `python -m workqueue work ...`: a new interpreter that spends 0.3-0.5 s
of CPU importing the CLI and both broker clients (redis-py loads its asyncio half too) before
it does anything the tests check, and the Job controller model starts hundreds of them per
run on two cores. multiprocessing's forkserver imports those once and forks each pod from
there, with the pod's own pid, session, environment, working directory and stderr, so that
signals, exit codes and logs are what a new interpreter's would be: the same `main(argv)` runs
and its return value is the exit code (`__main__.py` is `sys.exit(main())`).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

CLI_PREFIX = [sys.executable, "-m", "workqueue"]
"""How the tests start the CLI (conftest.WORKQUEUE); only such argv are forked."""
PRELOAD = ["workqueue.cli", "workqueue.brokers.redis", "workqueue.brokers.rabbitmq.consumer",
           "workqueue.handlers", "workqueue.tethered", __name__]
"""What a worker pod imports on its way to its first task, and this module, whose
``_run_cli`` each forked pod runs."""

_FORKSERVER = multiprocessing.get_context("forkserver")
_FORKSERVER.set_forkserver_preload(PRELOAD)


def _run_cli(argv: list[str], env: dict[str, str], cwd: str, log: str) -> None:
    """The forked pod: what `python -m workqueue` would do with this argv and environment."""
    os.setsid()
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # dup2 onto fds 1 and 2 so that the shells a worker starts write where it does.
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(os.open(log, os.O_WRONLY | os.O_APPEND), 2)
    sys.argv = [CLI_PREFIX[-1], *argv]
    from workqueue.cli import main

    sys.exit(main(argv))


class ForkedPod:
    """A forked CLI process with the part of subprocess.Popen's interface the model uses."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        log.write_text("")  # there once started, as Popen's would be
        self._process = _FORKSERVER.Process(target=_run_cli,
                                            args=(argv, env, os.getcwd(), str(log)))
        self._process.start()
        self.pid = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(CLI_PREFIX, timeout)
        return self._process.exitcode

    def send_signal(self, signum: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()


def start_pod(argv: list[str], env: dict[str, str], log: Path) -> ForkedPod | subprocess.Popen:
    """Start one pod's process: forked when it runs the CLI, otherwise a program of its own,
    each in a session of its own (as a container's processes are), stderr to ``log``."""
    if argv[:len(CLI_PREFIX)] == CLI_PREFIX:
        return ForkedPod(argv[len(CLI_PREFIX):], env, log)
    return start_program(argv, env, log)


def start_program(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``argv`` as a program of its own, in a session of its own, stderr to ``log``."""
    with log.open("w") as out:
        return subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=out,
                                start_new_session=True)
