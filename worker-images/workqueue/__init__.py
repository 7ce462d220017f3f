"""workqueue: reliable Redis and RabbitMQ work queues for Kubernetes Jobs.

Python API for workers that import the library instead of running a command per item::

    from workqueue import connect, run_worker

    def handle(item):          # item.id, item.payload, item.attempt
        process(item.payload)  # raise to fail the item (it is retried, then dead-lettered)

    run_worker(handle)         # broker and settings from WORKQUEUE_* as in the chart's pods
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable

from .broker import Broker, Consumer, DeadItem, Delivery, Outcome, Status
from .brokers import connect, password_from_env
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
    """Consume the queue with ``func`` until drained; returns the exit code to use.

    Without ``broker``, connects from WORKQUEUE_BROKER_URL, WORKQUEUE_BROKER_PASSWORD (or
    WORKQUEUE_BROKER_PASSWORD_FILE) and WORKQUEUE_QUEUE. SIGTERM stops it gracefully when
    called from the main thread.
    """
    own = broker is None
    if broker is None:
        broker = connect(os.environ["WORKQUEUE_BROKER_URL"],
                         os.environ.get("WORKQUEUE_QUEUE", "tasks"),
                         password_from_env())
    runner = Runner(broker, FunctionHandler(func), config or WorkerConfig())
    # Outside the main thread signal() raises ValueError; the caller then handles shutdown.
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
    try:
        return runner.run()
    finally:
        if own:
            broker.close()
