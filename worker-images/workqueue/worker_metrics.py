"""One worker's own metrics, for a PodMonitor: what this process did, which the queue's metrics
(exporter.py) cannot tell apart by worker. Served only when a port is given
(`--metrics-port`, env WORKQUEUE_METRICS_PORT); counted then, at a lock and an add per event,
and not at all otherwise (Uncounted).

  workqueue_worker_tasks_total{outcome}        settles: done, retry, dead, lost (lease expired)
  workqueue_worker_task_duration_seconds       run time of each task this worker ran
  workqueue_worker_lease_renewals_total        heartbeats that renewed the leases held
  workqueue_worker_broker_outages_total        times the broker went away and came back
"""

from __future__ import annotations

import logging
from typing import Any

from .broker import Outcome
from .defaults import DURATION_BUCKETS
from .errors import ConfigError

log = logging.getLogger(__name__)


class Uncounted:
    """Stands for every metric while none is served: prometheus_client is loaded only by
    ``serve``, as it takes 75 ms of the 200 ms a worker process spends loading its modules
    (http.server, email, ssl), paid by every pod and every one-task worker."""

    def inc(self, amount: float = 1) -> None:
        """Counts nothing."""

    def observe(self, amount: float) -> None:
        """Records nothing."""


UNCOUNTED = Uncounted()
SETTLED: dict[Outcome, Any] = dict.fromkeys(Outcome, UNCOUNTED)
"""Each outcome's child counter of workqueue_worker_tasks, looked up once rather than per task."""
TASK_SECONDS = UNCOUNTED
LEASE_RENEWALS = UNCOUNTED
BROKER_OUTAGES = UNCOUNTED


def serve(port: int) -> None:
    """Count from now on, and serve this process's metrics on all addresses, ``port``, from a
    thread of its own."""
    global TASK_SECONDS, LEASE_RENEWALS, BROKER_OUTAGES  # real ones from now on (Uncounted)
    from prometheus_client import Counter, Histogram, start_http_server

    tasks = Counter("workqueue_worker_tasks", "Tasks this worker settled, by outcome",
                    ["outcome"])
    SETTLED.update({outcome: tasks.labels(outcome.value) for outcome in Outcome})
    TASK_SECONDS = Histogram("workqueue_worker_task_duration_seconds",
                             "Run time of each task this worker ran", buckets=DURATION_BUCKETS)
    LEASE_RENEWALS = Counter("workqueue_worker_lease_renewals",
                             "Heartbeats that renewed the leases this worker held")
    BROKER_OUTAGES = Counter("workqueue_worker_broker_outages",
                             "Times the broker went away and came back while this process ran")
    try:
        start_http_server(port)
    except OSError as exc:
        raise ConfigError(f"cannot serve worker metrics on port {port}: "
                          f"{exc.strerror or exc}; pick another --metrics-port "
                          "(env WORKQUEUE_METRICS_PORT)") from exc
    log.info("serving this worker's metrics on port %d, /metrics", port)
