"""A task command's pipes, served from the worker's own thread: its stdin fed, its stdout and
stderr copied to ours as they come, their last lines kept.

One thread serves all three with a selector, instead of a reader thread per pipe: starting and
joining a thread per task cost about a tenth of a whole run of a no-op command. All three must
be served together, or a command that writes a pipe full before it reads its stdin would wait
on us while we wait on it.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections import deque
from typing import BinaryIO

from .spawn import Command

POLL_SECONDS = 0.05
"""How often the command's exit is checked while its pipes stay open: a process it left
behind can hold them open after it exits."""
CHUNK_BYTES = 65536
PARTIAL_LINE_BYTES = 65536
"""Longest unfinished line held; only a line's first characters are ever kept."""


class LineTail:
    """Copies one output of the command to ours and keeps its last ``keep`` non-blank lines,
    each cut to ``max_chars``."""

    def __init__(self, copy_to: BinaryIO, keep: int, max_chars: int) -> None:
        self.copy_to = copy_to
        self.max_chars = max_chars
        self.lines: deque[str] = deque(maxlen=keep)
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        self.copy_to.write(chunk)
        self.copy_to.flush()
        *complete, partial = (self._partial + chunk).split(b"\n")
        for raw in complete:
            self._keep(raw)
        self._partial = partial[:PARTIAL_LINE_BYTES]

    def end(self) -> None:
        """The output was closed: its last line counts even without a newline."""
        self._keep(self._partial)
        self._partial = b""

    def _keep(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").strip()
        if line:
            self.lines.append(line[:self.max_chars])


class CommandPipes:
    """Serves ``proc``'s pipes: writes ``data`` to its stdin (then closes it) and feeds what
    it prints to ``outputs`` (pipe: tail)."""

    def __init__(self, proc: Command, data: bytes,
                 outputs: dict[BinaryIO, LineTail]) -> None:
        self.proc = proc
        self.data = memoryview(data)
        self.outputs = outputs
        self.selector = selectors.DefaultSelector()
        os.set_blocking(proc.stdin.fileno(), False)
        self.selector.register(proc.stdin, selectors.EVENT_WRITE)
        for pipe in outputs:
            self.selector.register(pipe, selectors.EVENT_READ)

    def until_exit(self, deadline: float | None) -> bool:
        """Serve the pipes until the command exits (True) or ``deadline`` (monotonic) passes
        (False)."""
        while True:
            if self.proc.poll() is not None:
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if not self.selector.get_map():
                # Every pipe closed: nothing left to serve but the wait.
                try:
                    self.proc.wait(left)
                except subprocess.TimeoutExpired:
                    return False
                return True
            self._serve(POLL_SECONDS if left is None else min(POLL_SECONDS, left))

    def drain(self, seconds: float) -> None:
        """Read what is left in the outputs, for up to ``seconds``; then close every pipe."""
        deadline = time.monotonic() + seconds
        while self.selector.get_map() and time.monotonic() < deadline:
            self._serve(max(0.0, deadline - time.monotonic()))
        for key in list(self.selector.get_map().values()):
            self._close(key.fileobj)  # type: ignore[arg-type]
        self.selector.close()

    def _serve(self, timeout: float) -> None:
        for key, _events in self.selector.select(timeout):
            pipe: BinaryIO = key.fileobj  # type: ignore[assignment]
            if pipe is self.proc.stdin:
                self._write(pipe)
                continue
            chunk = os.read(pipe.fileno(), CHUNK_BYTES)
            if chunk:
                self.outputs[pipe].feed(chunk)
            else:
                self._close(pipe)

    def _write(self, stdin: BinaryIO) -> None:
        try:
            written = os.write(stdin.fileno(), self.data[:CHUNK_BYTES])
        except BlockingIOError:
            return
        except BrokenPipeError:
            # The command does not read stdin; it is told the payload the other ways too.
            written = len(self.data)
        self.data = self.data[written:]
        if not self.data:
            self._close(stdin)

    def _close(self, pipe: BinaryIO) -> None:
        self.selector.unregister(pipe)
        if pipe in self.outputs:
            self.outputs[pipe].end()
        pipe.close()
