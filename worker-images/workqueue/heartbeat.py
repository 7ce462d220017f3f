"""Running one item in its own thread while this thread keeps its lease alive."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .errors import TaskFailed

TICK_SECONDS = 0.2
"""How often the waiting thread looks at the task and at the stop request."""


@dataclass(frozen=True)
class RunResult:
    """How a run ended: ``error`` is None on success; ``cancelled`` if stopped for shutdown."""

    error: str | None = None
    cancelled: bool = False


class _TaskThread(threading.Thread):
    def __init__(self, task: Callable[[], None]) -> None:
        super().__init__(daemon=True, name="workqueue-task")
        self.task = task
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.task()
        except TaskFailed as exc:
            self.error = str(exc) or "failed"
        except Exception as exc:  # any error of the user code fails the item
            self.error = f"{type(exc).__name__}: {exc}"


def run_with_heartbeat(task: Callable[[], None], beat: Callable[[], None], interval: float,
                       stop_deadline: Callable[[], float | None],
                       cancel: Callable[[], None]) -> RunResult:
    """Run ``task`` in a thread, calling ``beat`` every ``interval`` seconds until it ends.

    ``stop_deadline`` returns the monotonic time by which a shutdown needs the task gone (or
    None); past it, ``cancel`` is called and the run counts as cancelled, not failed.
    """
    thread = _TaskThread(task)
    thread.start()
    next_beat = time.monotonic() + interval
    cancelled = False
    while thread.is_alive():
        thread.join(TICK_SECONDS)
        now = time.monotonic()
        if now >= next_beat and thread.is_alive():
            beat()
            next_beat = now + interval
        deadline = stop_deadline()
        if not cancelled and deadline is not None and now >= deadline and thread.is_alive():
            cancelled = True
            cancel()
    if cancelled:
        return RunResult(cancelled=True)
    return RunResult(error=thread.error)
