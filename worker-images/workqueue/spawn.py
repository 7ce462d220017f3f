"""Starting a task's command with posix_spawn, in a session of its own, with pipes for its stdin,
its stderr and (optionally) its stdout.

subprocess.Popen cannot use posix_spawn with start_new_session, and its own start costs a
tenth of a millisecond more per task in Python code; for a no-op command that is a tenth of the
whole run. This does only what the worker needs: the session (so the whole group can be
signalled), the pipes, and signal dispositions reset as Popen resets them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import BinaryIO

RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)
"""Python ignores these, and an ignored signal stays ignored across exec: a shell pipeline in
the command would then see EPIPE instead of ending quietly. Popen resets them the same way."""
FIRST_WAIT_STEP_SECONDS = 0.0005
LAST_WAIT_STEP_SECONDS = 0.05


class Command:
    """A running command: ``pid`` (also its process group's id), its pipes, and its exit code
    once it has ended. ``poll`` and ``wait`` may be called from two threads (the worker's and
    the supervisor's); only one of them reaps the process."""

    def __init__(self, executable: str, argv: Sequence[str], env: Mapping[bytes, bytes],
                 capture_stdout: bool) -> None:
        stdin_read, stdin_write = _pipe()
        stderr_read, stderr_write = _pipe()
        child_ends = [stdin_read, stderr_write]
        actions = [(os.POSIX_SPAWN_DUP2, stdin_read, 0), (os.POSIX_SPAWN_DUP2, stderr_write, 2)]
        stdout_read = None
        if capture_stdout:
            stdout_read, stdout_write = _pipe()
            child_ends.append(stdout_write)
            actions.append((os.POSIX_SPAWN_DUP2, stdout_write, 1))
        try:
            self.pid = os.posix_spawn(executable, list(argv), env, file_actions=actions,
                                      setsid=True, setsigdef=RESET_SIGNALS)
        except BaseException:
            for fd in (stdin_write, stderr_read, stdout_read):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in child_ends:
                os.close(fd)
        self.stdin: BinaryIO = open(stdin_write, "wb", buffering=0)  # noqa: SIM115
        self.stderr: BinaryIO = open(stderr_read, "rb", buffering=0)  # noqa: SIM115
        self.stdout: BinaryIO | None = (open(stdout_read, "rb", buffering=0)  # noqa: SIM115
                                        if stdout_read is not None else None)
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def poll(self) -> int | None:
        """The exit code (negative: killed by that signal), or None while it runs."""
        with self._lock:
            if self.returncode is None:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
            return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit code, once it has ended; raises subprocess.TimeoutExpired after
        ``timeout`` seconds. Like Popen's: a wait without a timeout blocks until the exit, one
        with a timeout polls at growing intervals."""
        if timeout is None:
            while (code := self.poll()) is None:
                # Waits for the exit without reaping, so the other thread's poll stays free;
                # if that thread reaped it first, its exit code is already recorded.
                with contextlib.suppress(ChildProcessError):
                    os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
            return code
        deadline = time.monotonic() + timeout
        delay = FIRST_WAIT_STEP_SECONDS
        while (code := self.poll()) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(min(delay, left))
            delay = min(2 * delay, LAST_WAIT_STEP_SECONDS)
        return code


def close_on_exec_above_stdio() -> None:
    """Mark every descriptor above 2 close-on-exec, so that none reaches a command, as Popen's
    close_fds would close them in each child. Python opens its own that way; this is for those
    the worker inherited when it started."""
    for name in os.listdir("/proc/self/fd"):
        # One of them was listdir's own, closed by now.
        with contextlib.suppress(OSError):
            if int(name) > 2:
                os.set_inheritable(int(name), False)


def _pipe() -> tuple[int, int]:
    """A pipe whose ends are not 0, 1 or 2 (taken when the worker runs with one of those
    closed), so that placing an end there in the child is never a no-op that leaves it
    close-on-exec. Both ends are close-on-exec, so no other command inherits them."""
    ends = []
    for fd in os.pipe():
        if fd <= 2:
            moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
            os.close(fd)
            fd = moved
        ends.append(fd)
    return ends[0], ends[1]
