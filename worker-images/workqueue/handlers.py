"""What runs one item: the user's command (like amqp-consume) or a Python function."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from .brokers import PASSWORD_ENV
from .command_io import CommandPipes, LineTail
from .errors import ConfigError, TaskFailed
from .message import Item
from .spawn import Command, close_on_exec_above_stdio

log = logging.getLogger(__name__)

PLACEHOLDER = "{}"
STDERR_TAIL_LINES = 5
"""Lines of a failed command's stderr kept as the item's error."""
RESULT_MAX_CHARS = 256
"""Longest line kept of a command's output: each error line, and the result (the last
non-blank stdout line, with worker.captureResult)."""
KILL_AFTER_SECONDS = 5.0
"""After asking a cancelled command to stop (SIGTERM), wait this long before SIGKILL."""
MAX_ARG_BYTES = 128 * 1024 - 1
"""Longest single argument or environment string Linux passes to a program (MAX_ARG_STRLEN,
32 pages, with the terminating NUL). A larger payload reaches the command on stdin only."""
STDERR_DRAIN_SECONDS = 1.0
"""After the command exits, how long its stderr may still be read (a process it left behind
may hold the pipe; that process group is killed first)."""


class Handler(Protocol):
    """Runs one item; raises TaskFailed (or any exception) to fail it. Returns the item's
    result for the report when asked to capture one, else None."""

    success_code: int | None
    """The exit code a run that succeeded reports: 0 for a command, None for a function."""

    def run(self, item: Item) -> str | None: ...

    def cancel(self) -> None: ...


class CommandHandler:
    """Runs ``argv`` once per item. The payload reaches it three ways: on stdin (with a final
    newline, so `read` gets the line), in $WORKQUEUE_PAYLOAD (with $WORKQUEUE_ITEM_ID and
    $WORKQUEUE_ATTEMPT), and in place of any ``{}`` in the arguments. Payloads above 128 KiB or
    holding a NUL character, which Linux will not pass in an argument or variable, arrive on
    stdin only: the variable is unset and ``{}`` fails the item. Exit 0 means done; anything
    else fails the item.

    The command runs in a process group of its own: cancelling it signals the whole group, and
    processes it leaves behind are killed when it exits, so neither can hold the worker up."""

    success_code = 0

    def __init__(self, argv: Sequence[str], timeout_seconds: float = 0,
                 capture_result: bool = False) -> None:
        """``timeout_seconds`` above 0 stops a run that takes longer (its whole group, as
        a cancel does) and fails the attempt. ``capture_result`` keeps the last line of the
        command's stdout (still copied to ours) as the item's result."""
        if not argv:
            raise ConfigError("no command given: put the command to run per task after `--`")
        executable = shutil.which(argv[0])
        if executable is None:
            raise ConfigError(
                f"command not found: {argv[0]!r}; install it in the image or give its full path"
            )
        # Resolved once, and the environment encoded once: per task, both cost about as much
        # as the rest of starting the command.
        self.executable = executable
        # The user's program needs the task, not the queue's credentials.
        self._env = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()
                     if k not in PASSWORD_ENV}
        close_on_exec_above_stdio()
        self.argv = list(argv)
        self.timeout_seconds = timeout_seconds
        self.capture_result = capture_result
        self._proc: Command | None = None
        self._lock = threading.Lock()

    def run(self, item: Item) -> str | None:
        data = item.payload.encode()
        env = {**self._env, b"WORKQUEUE_ITEM_ID": item.id.encode(),
               b"WORKQUEUE_ATTEMPT": str(item.attempt).encode()}
        why_not = _why_not_an_argument(data)
        if why_not is None:
            env[b"WORKQUEUE_PAYLOAD"] = data
            argv = [arg.replace(PLACEHOLDER, item.payload) for arg in self.argv]
        elif any(PLACEHOLDER in arg for arg in self.argv):
            raise TaskFailed(f"the task {why_not}, so it cannot take the place of `{{}}` in an "
                             "argument: read it from stdin instead")
        else:
            argv = self.argv
            log.info("item %s: the task %s, so it is passed on stdin only ($WORKQUEUE_PAYLOAD "
                     "is unset)", item.id, why_not)
        with self._lock:
            self._proc = Command(self.executable, argv, env, self.capture_result)
        proc = self._proc
        tail = LineTail(sys.stderr.buffer, STDERR_TAIL_LINES, RESULT_MAX_CHARS)
        outputs = {proc.stderr: tail}
        result = None
        if self.capture_result:
            result = LineTail(sys.stdout.buffer, 1, RESULT_MAX_CHARS)
            outputs[proc.stdout] = result
        pipes = CommandPipes(proc, data if data.endswith(b"\n") else data + b"\n",
                             outputs)  # type: ignore[arg-type]
        deadline = time.monotonic() + self.timeout_seconds if self.timeout_seconds else None
        timed_out = not pipes.until_exit(deadline)
        if timed_out:
            # Stopped as a cancel stops it, its pipes still served while it winds down.
            _signal_group(proc, signal.SIGTERM)
            if not pipes.until_exit(time.monotonic() + KILL_AFTER_SECONDS):
                _signal_group(proc, signal.SIGKILL)
                pipes.until_exit(None)
        code = proc.returncode
        _signal_group(proc, signal.SIGKILL)
        pipes.drain(STDERR_DRAIN_SECONDS)
        if timed_out:
            raise TaskFailed(f"timed out after {self.timeout_seconds:g}s "
                             "(worker.taskTimeoutSeconds, --task-timeout)", proc.returncode)
        if code != 0:
            reason = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
            detail = " | ".join(line for line in tail.lines if line)
            raise TaskFailed(f"{reason}: {detail}" if detail else reason, code)
        if result is None or not result.lines:
            return None
        return result.lines[-1]

    def cancel(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None:
            self._stop(proc)

    @staticmethod
    def _stop(proc: Command) -> None:
        """SIGTERM to the command's group, SIGKILL if it is still there KILL_AFTER_SECONDS on."""
        if proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(KILL_AFTER_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)


def _why_not_an_argument(data: bytes) -> str | None:
    """Why Linux cannot pass this payload as an argument or variable, or None if it can."""
    if len(data) > MAX_ARG_BYTES - len("WORKQUEUE_PAYLOAD="):
        return f"is {len(data)} bytes (Linux allows {MAX_ARG_BYTES} in one argument)"
    if b"\0" in data:
        return "holds a NUL character"
    return None


def _signal_group(proc: Command, signum: int) -> None:
    """Signal the command's whole process group (its pid is the group's id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


def import_handler(spec: str) -> Callable[[Item], object]:
    """The function named ``module:function`` (e.g. ``myjob.tasks:handle``)."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"handler {spec!r} is not MODULE:FUNCTION, e.g. myjob.tasks:handle")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for handler {spec!r}: {exc}; install "
                          "it in the image or set PYTHONPATH") from None
    func = getattr(module, name, None)
    if not callable(func):
        raise ConfigError(f"{module_name!r} has no function {name!r} (handler {spec!r})")
    return func


class FunctionHandler:
    """Calls ``func(item)`` in-process; an exception fails the item with its message. With
    ``capture_result``, what it returns (as text) is the item's result."""

    success_code = None

    def __init__(self, func: Callable[[Item], object], capture_result: bool = False) -> None:
        self.func = func
        self.capture_result = capture_result

    def run(self, item: Item) -> str | None:
        value = self.func(item)
        if not self.capture_result or value is None:
            return None
        return str(value)[:RESULT_MAX_CHARS]

    def cancel(self) -> None:
        """A Python call cannot be interrupted safely; the grace period lets it finish."""
