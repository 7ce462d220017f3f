"""Running a leased batch in a thread of its own, so that the main thread stays free to renew
leases, record results and answer SIGTERM while the user's code runs.

One thread per batch, not per item: starting a thread or handing work to one costs about as
much as a whole no-op item, so short items would spend most of their time on the hand-off.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .broker import Delivery
from .errors import TaskFailed
from .handlers import Handler


@dataclass(frozen=True)
class Finished:
    """One item's run: ``error`` is None when it succeeded."""

    delivery: Delivery
    error: str | None


def run_one(handler: Handler, delivery: Delivery) -> str | None:
    """Run one item; its error message, or None on success."""
    try:
        handler.run(delivery.item)
    except TaskFailed as exc:
        return str(exc) or "failed"
    except Exception as exc:  # any error of the user code fails the item
        return f"{type(exc).__name__}: {exc}"
    return None


class BatchThread(threading.Thread):
    """Runs ``deliveries`` in order and appends each result to ``finished``.

    It starts no new item once ``stop`` is set. After ``cancel()`` the running item's result is
    dropped: the item was stopped for shutdown, not failed.
    """

    def __init__(self, handler: Handler, deliveries: Sequence[Delivery],
                 stop: threading.Event) -> None:
        super().__init__(daemon=True, name="workqueue-batch")
        self.handler = handler
        self.deliveries = deliveries
        self.stop = stop
        self.finished: deque[Finished] = deque()
        self.cancelled = False

    def run(self) -> None:
        for delivery in self.deliveries:
            if self.stop.is_set():
                return
            error = run_one(self.handler, delivery)
            if self.cancelled:
                return
            self.finished.append(Finished(delivery, error))

    def cancel(self) -> None:
        """Stop the running item (a command gets SIGTERM, then SIGKILL) and drop its result."""
        self.cancelled = True
        self.handler.cancel()
