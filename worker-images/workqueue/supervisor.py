"""The thread that watches the item a worker is running: it renews the leases the worker holds
and, once a shutdown's grace period is over, stops the item.

Items run in the worker's main thread and this thread only wakes a few times a second, so a
short item costs no thread hand-off: starting or waking a thread costs about as much as a whole
no-op item. The worker holds ``lock`` around every call to the broker and this thread holds it
to renew leases, so the broker connection is never used by two threads at once (pika's is not
thread-safe) and a renewal never names an item that was just settled.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from . import worker_metrics
from .broker import Consumer, Delivery
from .errors import TaskFailed
from .handlers import Handler
from .message import Item
from .report import TaskRun

log = logging.getLogger(__name__)

TICK_SECONDS = 0.2
"""How often the supervisor looks at the running item."""


def run_one(handler: Handler, item: Item) -> TaskRun:
    """Run one item and time it."""
    started = time.monotonic()
    try:
        result = handler.run(item)
    except TaskFailed as exc:
        return TaskRun(str(exc) or "failed", time.monotonic() - started, exc.exit_code)
    except Exception as exc:  # any error of the user code fails the item
        return TaskRun(f"{type(exc).__name__}: {exc}", time.monotonic() - started)
    return TaskRun(None, time.monotonic() - started, handler.success_code, result)


class Supervisor(threading.Thread):
    """Renews ``held()`` every ``consumer.keep_alive_seconds`` while an item runs, and cancels
    the item once ``stop_deadline()`` (a monotonic time, or None) has passed."""

    def __init__(self, consumer: Consumer, handler: Handler,
                 stop_deadline: Callable[[], float | None]) -> None:
        super().__init__(daemon=True, name="workqueue-supervisor")
        self.consumer = consumer
        self.handler = handler
        self.stop_deadline = stop_deadline
        self.lock = threading.Lock()
        self.running = False
        self.cancelled = False
        self.held: Callable[[], Sequence[Delivery]] = tuple
        self.next_beat = time.monotonic() + consumer.keep_alive_seconds
        self._finished = threading.Event()

    def leased(self) -> None:
        """Leases were just granted or renewed: the next renewal is a full interval away."""
        self.next_beat = time.monotonic() + self.consumer.keep_alive_seconds

    def run(self) -> None:
        while not self._finished.wait(TICK_SECONDS):
            if not self.running:
                continue
            now = time.monotonic()
            if now >= self.next_beat:
                with self.lock:
                    if self.running:
                        self._renew()
                self.leased()
            deadline = self.stop_deadline()
            if not self.cancelled and deadline is not None and now >= deadline and self.running:
                self.cancelled = True
                self.handler.cancel()

    def _renew(self) -> None:
        try:
            self.consumer.keep_alive(self.held())
            worker_metrics.LEASE_RENEWALS.inc()
        except Exception as exc:  # this thread must outlive a failed renewal; the next may work
            log.warning("could not renew leases (%s); will try again in %gs", exc,
                        self.consumer.keep_alive_seconds)

    def finish(self) -> None:
        """Stop watching; returns once the thread has ended."""
        self._finished.set()
        self.join()
