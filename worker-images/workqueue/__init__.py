"""workqueue: reliable Redis and RabbitMQ work queues for Kubernetes Jobs.

Python API for workers that import the library instead of running a command per item::

    import sys

    from workqueue import run_worker

    def handle(item):          # item.id, item.payload, item.attempt
        process(item.payload)  # raise to fail the item (it is retried, then dead-lettered)

    sys.exit(run_worker(handle))   # settings from WORKQUEUE_* as in the chart's pods
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable

from . import stopping
from .broker import Broker, Consumer, DeadItem, Delivery, Outcome, Status
from .brokers import connect
from .errors import TaskFailed, WorkqueueError
from .handlers import FunctionHandler
from .message import Item
from .runner import Runner, WorkerConfig
from .seeding import seed

__all__ = [
    "Broker", "Consumer", "DeadItem", "Delivery", "Item", "Outcome", "Runner", "Status",
    "TaskFailed", "WorkerConfig", "WorkqueueError", "connect", "run_worker", "seed",
]


def run_worker(func: Callable[[Item], object], broker: Broker | None = None,
               config: WorkerConfig | None = None) -> int:
    """Consume the queue with ``func`` until drained; returns the exit code to use, e.g.
    ``sys.exit(run_worker(handle))``: 3 when tasks were dead-lettered, 143 after SIGTERM.

    Without ``broker`` and ``config``, both come from the WORKQUEUE_* variables the chart sets
    (WORKQUEUE_BROKER_URL, WORKQUEUE_BROKER_PASSWORD(_FILE), WORKQUEUE_QUEUE, WORKQUEUE_MODE,
    WORKQUEUE_MAX_ATTEMPTS and the rest of `workqueue work --help`), checked the same way.
    SIGTERM stops it gracefully when called from the main thread.
    """
    own = broker is None
    # Before connecting: stopped while its broker is not up yet, it returns at once.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, lambda *_: stopping.ask())
    if broker is None or config is None:
        from .cli import EnvSettings

        settings = EnvSettings()
        config = config or settings.config()
        try:
            broker = broker or settings.broker()
        except stopping.Stopped:
            return config.stop_code
    runner = Runner(broker, FunctionHandler(func), config)
    # Outside the main thread signal() raises ValueError; the caller then handles shutdown.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
    try:
        return runner.run()
    finally:
        if own:
            broker.close()
