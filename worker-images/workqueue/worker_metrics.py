"""One worker's own metrics, for a PodMonitor: what this process did, which the queue's metrics
(exporter.py) cannot tell apart by worker. Served only when a port is given
(`--metrics-port`, env WORKQUEUE_METRICS_PORT); counting costs a lock and an add per event.

  workqueue_worker_tasks_total{outcome}        settles: done, retry, dead, lost (lease expired)
  workqueue_worker_task_duration_seconds       run time of each task this worker ran
  workqueue_worker_lease_renewals_total        heartbeats that renewed the leases held
  workqueue_worker_broker_outages_total        times the broker went away and came back
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Histogram, start_http_server

from .broker import Outcome
from .defaults import DURATION_BUCKETS
from .errors import ConfigError

log = logging.getLogger(__name__)

TASKS = Counter("workqueue_worker_tasks", "Tasks this worker settled, by outcome", ["outcome"])
SETTLED = {outcome: TASKS.labels(outcome.value) for outcome in Outcome}
"""Each outcome's child counter, looked up once rather than per task."""
TASK_SECONDS = Histogram("workqueue_worker_task_duration_seconds",
                         "Run time of each task this worker ran", buckets=DURATION_BUCKETS)
LEASE_RENEWALS = Counter("workqueue_worker_lease_renewals",
                         "Heartbeats that renewed the leases this worker held")
BROKER_OUTAGES = Counter("workqueue_worker_broker_outages",
                         "Times the broker went away and came back while this process ran")


def serve(port: int) -> None:
    """Serve this process's metrics on all addresses, ``port``, from a thread of its own."""
    try:
        start_http_server(port)
    except OSError as exc:
        raise ConfigError(f"cannot serve worker metrics on port {port}: "
                          f"{exc.strerror or exc}; pick another --metrics-port "
                          "(env WORKQUEUE_METRICS_PORT)") from exc
    log.info("serving this worker's metrics on port %d, /metrics", port)
