"""`workqueue exporter`: a queue's state as Prometheus metrics, read from the broker at each
scrape. The figures come from the queue, not from any worker's memory, so they survive worker
restarts and stay readable after the Job has finished.

Names follow the Prometheus conventions (base units, `_total` on counters):

  workqueue_tasks{state}                  tasks now: pending, retry_wait, leased, done, dead
  workqueue_seeded_tasks                  tasks in the run (0 until the seeder has finished)
  workqueue_seeded, workqueue_drained     1 or 0
  workqueue_tasks_done_total              tasks done: rate() of it is the throughput
  workqueue_tasks_dead_total              tasks dead-lettered (retry-dead lowers it, which
                                          rate() reads as a counter reset)
  workqueue_task_retries_total            failed runs that were retried
  workqueue_task_runs_total               runs charged to settled tasks (from the report)
  workqueue_task_duration_seconds{outcome}  histogram of settled tasks' last run (the report)
  workqueue_run_info{queue,run}           1, naming the run
  workqueue_broker_up                     1 if the scrape reached the broker, else 0

The report is read whole, so it is read at most once per ``report_every`` seconds (a million
records take seconds); the counts are read at every scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector, CollectorRegistry

from . import stopping
from .broker import Broker
from .defaults import DURATION_BUCKETS
from .errors import ConfigError, broker_errors
from .report import TaskRecord

log = logging.getLogger(__name__)

OUTCOMES = ("done", "dead")


@dataclass(frozen=True)
class ReportFigures:
    """What the metrics take from the per-task report."""

    runs: int
    durations: dict[str, list[float]]

    @classmethod
    def of(cls, records: Iterable[TaskRecord]) -> ReportFigures:
        runs = 0
        durations: dict[str, list[float]] = {outcome: [] for outcome in OUTCOMES}
        for record in records:
            if record.outcome not in durations:
                continue
            runs += record.attempts
            if record.seconds is not None:
                durations[record.outcome].append(record.seconds)
        return cls(runs, durations)


def histogram_buckets(values: list[float]) -> list[tuple[str, float]]:
    """Cumulative counts per upper bound, ending with +Inf, as Prometheus histograms are."""
    ordered = sorted(values)
    buckets, seen = [], 0
    for bound in DURATION_BUCKETS:
        while seen < len(ordered) and ordered[seen] <= bound:
            seen += 1
        buckets.append((repr(bound), float(seen)))
    buckets.append(("+Inf", float(len(ordered))))
    return buckets


class QueueCollector(Collector):
    """Collects one queue's metrics at each scrape, from a broker opened by ``connect`` at the
    first scrape that reaches it: an exporter that starts before its broker serves
    `workqueue_broker_up 0` meanwhile, rather than exiting."""

    def __init__(self, connect: Callable[[], Broker], queue: str, report_every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.connect, self.queue = connect, queue
        self.report_every, self.clock = report_every, clock
        self.broker: Broker | None = None
        self.figures: ReportFigures | None = None
        self.figures_at = 0.0
        self.was_up = True
        # Scrapes come on threads of their own; a broker connection serves one at a time.
        self.lock = threading.Lock()

    def _report(self, broker: Broker) -> ReportFigures:
        now = self.clock()
        if self.figures is None or now - self.figures_at >= self.report_every:
            self.figures = ReportFigures.of(broker.records())
            self.figures_at = now
        return self.figures

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.lock:
            return iter(list(self._collect()))

    def _collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("workqueue_broker_up",
                               "1 if this scrape reached the queue's broker, else 0")
        try:
            self.broker = self.broker or self.connect()
            status = self.broker.status()
            figures = self._report(self.broker)
        except broker_errors() as exc:
            if self.was_up:
                log.warning("cannot read queue %r for metrics: %s", self.queue, exc)
            self.was_up = False
            up.add_metric([], 0)
            yield up
            return
        if not self.was_up:
            log.warning("queue %r is readable again", self.queue)
        self.was_up = True
        up.add_metric([], 1)
        yield up
        tasks = GaugeMetricFamily("workqueue_tasks", "Tasks in each state now",
                                  labels=["state"])
        for state, value in (("pending", status.pending - status.delayed),
                             ("retry_wait", status.delayed), ("leased", status.leased),
                             ("done", status.done), ("dead", status.dead)):
            tasks.add_metric([state], value)
        yield tasks
        yield GaugeMetricFamily("workqueue_seeded_tasks",
                                "Tasks in the run, once the seeder has finished (else 0)",
                                value=status.total or 0)
        yield GaugeMetricFamily("workqueue_seeded", "1 once the seeder has finished",
                                value=int(status.seeded))
        yield GaugeMetricFamily("workqueue_drained", "1 once every task is done or dead",
                                value=int(status.drained))
        yield CounterMetricFamily("workqueue_tasks_done", "Tasks done", value=status.done)
        yield CounterMetricFamily("workqueue_tasks_dead", "Tasks dead-lettered",
                                  value=status.dead)
        yield CounterMetricFamily("workqueue_task_retries", "Failed runs that were retried",
                                  value=status.retried)
        yield CounterMetricFamily("workqueue_task_runs", "Runs charged to settled tasks",
                                  value=figures.runs)
        duration = HistogramMetricFamily(
            "workqueue_task_duration_seconds", "Run time of each settled task's last run",
            labels=["outcome"])
        for outcome, values in figures.durations.items():
            duration.add_metric([outcome], histogram_buckets(values), sum_value=sum(values))
        yield duration
        yield InfoMetricFamily("workqueue_run", "The queue and the run it serves",
                               value={"queue": self.queue, "run": status.run or ""})


def serve(connect: Callable[[], Broker], queue: str, address: str, port: int,
          report_every: float) -> int:
    """Serve the metrics of ``queue`` on http://ADDRESS:PORT/metrics until SIGTERM or Ctrl-C."""
    registry = CollectorRegistry()
    collector = QueueCollector(connect, queue, report_every)
    registry.register(collector)
    try:
        server, _thread = start_http_server(port, addr=address, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {address}:{port}: {exc.strerror or exc}; "
                          "pick another --port (env WORKQUEUE_METRICS_PORT)") from exc
    log.info("serving the metrics of queue %r on http://%s:%d/metrics", queue, address, port)
    try:
        while True:
            stopping.sleep(3600, "serving metrics")
    except stopping.Stopped:
        log.info("stopped serving metrics")
        return 0
    finally:
        server.shutdown()
        if collector.broker is not None:
            collector.broker.close()
