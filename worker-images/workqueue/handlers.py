"""What runs one item: the user's command (like amqp-consume) or a Python function."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from .brokers import PASSWORD_ENV
from .errors import ConfigError, TaskFailed
from .message import Item

PLACEHOLDER = "{}"
STDERR_TAIL_LINES = 5
"""Lines of a failed command's stderr kept as the item's error."""
KILL_AFTER_SECONDS = 5.0
"""After asking a cancelled command to stop (SIGTERM), wait this long before SIGKILL."""


class Handler(Protocol):
    """Runs one item; raises TaskFailed (or any exception) to fail it."""

    def run(self, item: Item) -> None: ...

    def cancel(self) -> None: ...


class CommandHandler:
    """Runs ``argv`` once per item. The payload reaches it three ways: on stdin, in
    $WORKQUEUE_PAYLOAD (with $WORKQUEUE_ITEM_ID and $WORKQUEUE_ATTEMPT), and in place of any
    ``{}`` in the arguments. Exit 0 means done; anything else fails the item."""

    def __init__(self, argv: Sequence[str]) -> None:
        if not argv:
            raise ConfigError("no command given: put the command to run per task after `--`")
        if shutil.which(argv[0]) is None:
            raise ConfigError(
                f"command not found: {argv[0]!r}; install it in the image or give its full path"
            )
        self.argv = list(argv)
        # The user's program needs the task, not the queue's credentials.
        self._env = {k: v for k, v in os.environ.items() if k not in PASSWORD_ENV}
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def run(self, item: Item) -> None:
        argv = [arg.replace(PLACEHOLDER, item.payload) for arg in self.argv]
        env = {**self._env, "WORKQUEUE_PAYLOAD": item.payload, "WORKQUEUE_ITEM_ID": item.id,
               "WORKQUEUE_ATTEMPT": str(item.attempt)}
        with self._lock:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                          env=env)
        tail = _StderrTail(self._proc)
        tail.start()
        try:
            self._proc.stdin.write(item.payload.encode())  # type: ignore[union-attr]
            self._proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass  # the command does not read stdin; it is told the payload the other ways too
        code = self._proc.wait()
        tail.join()
        if code != 0:
            reason = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
            detail = " | ".join(line for line in tail.lines if line)
            raise TaskFailed(f"{reason}: {detail}" if detail else reason)

    def cancel(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(KILL_AFTER_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()


class _StderrTail(threading.Thread):
    """Copies the command's stderr to ours and keeps its last lines for the error report."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.lines: deque[str] = deque(maxlen=STDERR_TAIL_LINES)

    def run(self) -> None:
        for raw in self.proc.stderr:  # type: ignore[union-attr]
            sys.stderr.buffer.write(raw)
            sys.stderr.flush()
            self.lines.append(raw.decode("utf-8", "replace").strip()[:200])


class FunctionHandler:
    """Calls ``func(item)`` in-process; an exception fails the item with its message."""

    def __init__(self, func: Callable[[Item], object]) -> None:
        self.func = func

    def run(self, item: Item) -> None:
        self.func(item)

    def cancel(self) -> None:
        """A Python call cannot be interrupted safely; the grace period lets it finish."""
