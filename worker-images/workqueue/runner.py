"""The consume loop of one worker: lease, run, settle, until the queue is drained."""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import stopping, worker_metrics
from .backoff import retry_delay
from .batching import BatchSizer
from .broker import Broker, Consumer, Delivery, Fetch, Outcome
from .defaults import (
    BATCH_SECONDS,
    BATCH_SIZE,
    GRACE_SECONDS,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    POLL_SECONDS,
    RETRY_DELAY_MAX_SECONDS,
    RETRY_DELAY_SECONDS,
    SEED_TIMEOUT_SECONDS,
    WAIT_LOG_SECONDS,
)
from .errors import (
    EXIT_DEAD,
    EXIT_OK,
    EXIT_STOPPED,
    ConnectionLost,
    SeedRefused,
    SeedTimeout,
    seed_refused_message,
)
from .handlers import Handler
from .message import task_text
from .progress import plural
from .report import settled
from .supervisor import Supervisor, run_one

log = logging.getLogger(__name__)

MODES = ("fine", "coarse")
STOP_CHECK_SECONDS = 0.1
"""While idle, how often a worker looks whether it was asked to stop."""
ACK_FLUSH_SECONDS = 1.0
"""Longest a finished item waits to be recorded while its batch goes on."""


@dataclass(frozen=True)
class WorkerConfig:
    """How a worker consumes. ``coarse`` settles exactly one item, then exits."""

    mode: str = "fine"
    batch_size: int = BATCH_SIZE
    """The most items leased at once in fine mode."""
    batch_seconds: float = BATCH_SECONDS
    """Lease about this many seconds of work at once, up to ``batch_size`` (batching.py);
    0: always ``batch_size``."""
    lease_seconds: float = LEASE_SECONDS
    max_attempts: int = MAX_ATTEMPTS
    retry_delay_seconds: float = RETRY_DELAY_SECONDS
    retry_delay_max_seconds: float = RETRY_DELAY_MAX_SECONDS
    grace_seconds: float = GRACE_SECONDS
    fail_on_dead: bool = True
    poll_seconds: float = POLL_SECONDS
    run_id: str | None = None
    """The run this worker serves; a queue seeded for another run is refused (OtherRun)."""
    seed_timeout_seconds: float = SEED_TIMEOUT_SECONDS
    wait_log_seconds: float = WAIT_LOG_SECONDS
    retry_round: int = 0
    """The retry-dead round this worker serves: it may not call the queue drained before the
    seeder has put that round's dead items back."""
    job_index: int | None = None
    """Fine mode, in the chart's Indexed worker Job: this pod's index (JOB_COMPLETION_INDEX).
    Index 0 ends the Job (its successPolicy) once the queue is drained. Any other index is one
    worker pod's life: stopped, it exits 0, so that the Job controller replaces it at once (a
    failed pod, ignored or not, lengthens the controller's backoff before the next pod), and
    once the queue is drained it waits for index 0 to end the Job. None: a plain worker."""

    @property
    def replaceable(self) -> bool:
        """Whether this worker is one of the Indexed Job's replaceable lives (index above 0)."""
        return self.mode == "fine" and bool(self.job_index)

    @property
    def stop_code(self) -> int:
        """The exit code of a worker stopped before the end, its leases given back (or, stopped
        before its broker answered, holding none): 0 for a replaceable life, else 143."""
        return EXIT_OK if self.replaceable else EXIT_STOPPED


@dataclass
class Tally:
    """What this worker did."""

    done: int = 0
    retried: int = 0
    dead: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        attr = {Outcome.DONE: "done", Outcome.RETRY: "retried", Outcome.DEAD: "dead",
                Outcome.LOST: "lost"}[outcome]
        setattr(self, attr, getattr(self, attr) + 1)

    @property
    def settled(self) -> int:
        return self.done + self.dead


def new_worker_id() -> str:
    """Unique per process: the pod name (hostname) plus pid plus a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Runner:
    """Consumes ``broker``'s queue with ``handler`` until drained (fine) or one item (coarse)."""

    def __init__(self, broker: Broker, handler: Handler, config: WorkerConfig,
                 worker_id: str | None = None) -> None:
        self.broker = broker
        self.handler = handler
        self.config = config
        self.worker_id = worker_id or new_worker_id()
        self.tally = Tally()
        self._stopping = False
        self._stop_deadline: float | None = None

    def request_stop(self) -> None:
        """Stop taking work; the running item gets ``grace_seconds`` to finish.

        Signal-safe because it takes no lock: a SIGTERM handler runs in the main thread, and
        setting a threading.Event there could wait forever on the Event's lock if the signal
        came while that thread held it (in Event.wait)."""
        if not self._stopping:
            self._stop_deadline = time.monotonic() + self.config.grace_seconds
            self._stopping = True
            # Every wait of the process (a broker that is away, say) ends too.
            stopping.ask()

    def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less once a stop is requested."""
        end = time.monotonic() + seconds
        while not self._stopping and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, STOP_CHECK_SECONDS))

    def run(self) -> int:
        """Work until done; returns the process exit code."""
        config = self.config
        coarse = config.mode == "coarse"
        batch = 1 if coarse else config.batch_size
        sizer = BatchSizer(batch, 0 if coarse else config.batch_seconds)
        consumer = self.broker.consumer(self.worker_id, batch, config.lease_seconds,
                                        config.max_attempts, config.run_id)
        log.info("worker %s: %s mode on queue %r (batch %s, lease %gs, max attempts %d)",
                 self.worker_id, config.mode, self.broker.queue,
                 _batch_text(batch, sizer.seconds), config.lease_seconds, config.max_attempts)
        supervisor = Supervisor(consumer, self.handler, lambda: self._stop_deadline)
        supervisor.start()
        waiting = _Waiting(config, self.broker)
        done: list[Delivery] = []
        if stopping.asked():
            self.request_stop()
        try:
            while not self._stopping:
                with supervisor.lock:
                    fetched = self._ack_and_fetch(consumer, done, sizer.next())
                    supervisor.leased()
                done = []
                if fetched.drained and not self._round_pending():
                    code = self._finish("queue drained")
                    if code == EXIT_OK and config.replaceable:
                        return self._wait_for_index_0()
                    return code
                if not fetched.deliveries:
                    # Drained before the seeder has applied this worker's retry round is
                    # waiting for the seeder too.
                    waiting.idle(fetched.seeded and not fetched.drained)
                    self._pause(config.poll_seconds)
                    continue
                waiting.busy()
                started = time.monotonic()
                done = self._work(consumer, supervisor, fetched.deliveries)
                sizer.observe(len(fetched.deliveries), time.monotonic() - started)
                if config.mode == "coarse":
                    with supervisor.lock:
                        self._ack(consumer, done)
                    done = []
                    if self.tally.settled:
                        return self._finish("settled its one item (coarse mode)")
            log.info("worker %s: stopped by SIGTERM; %s", self.worker_id, self._summary())
            return self.config.stop_code
        except stopping.Stopped as exc:
            log.warning("worker %s: %s; %s", self.worker_id, exc, self._summary())
            return self.config.stop_code
        finally:
            supervisor.finish()
            self._wind_down(consumer, done)

    def _wind_down(self, consumer: Consumer, done: list[Delivery]) -> None:
        """Record what finished and give back the rest; with a stop asked for while the broker
        is away, leave them to come back on their own rather than wait."""
        try:
            # Stop the deliveries before the last settle: an ack would open room for one more.
            consumer.stop()
            self._ack(consumer, done)
            consumer.close()
        except stopping.Stopped:
            unrecorded = (f"{plural(len(done), 'finished task')} not recorded (they run again); "
                          if done else "")
            log.warning("the broker is away: %sthe tasks this worker held go back to the queue "
                        "once their leases expire", unrecorded)

    def _round_pending(self) -> bool:
        """Whether the seeder has yet to apply this worker's retry round."""
        wanted = self.config.retry_round
        return bool(wanted) and self.broker.retry_round() < wanted

    def _ack_and_fetch(self, consumer: Consumer, done: list[Delivery], count: int) -> Fetch:
        """Record the last batch's successes and lease the next batch, together."""
        if not done:
            return consumer.fetch(count)
        try:
            outcomes, fetched = consumer.ack_and_fetch(done, count)
        except ConnectionLost as exc:
            self._not_recorded(len(done), exc)
            return Fetch()
        self._record_all(done, outcomes)
        return fetched

    def _work(self, consumer: Consumer, supervisor: Supervisor,
              deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Run one batch; returns its successes not yet recorded (the next fetch records them).

        Successes are recorded together, once per batch or per second of work for slow items:
        a crash re-runs at most those, which leases allow anyway. Failures are recorded as they
        come, and items not run (stop, cancel) go back to the queue unchanged.
        """
        done: list[Delivery] = []
        first_done = 0.0
        index = 0
        supervisor.held = lambda: [*done, *deliveries[index:]]
        while index < len(deliveries) and not self._stopping:
            delivery = deliveries[index]
            supervisor.running = True
            run = run_one(self.handler, delivery.item)
            supervisor.running = False
            worker_metrics.TASK_SECONDS.observe(run.seconds)
            if supervisor.cancelled:
                log.info("item %s stopped for shutdown; returning it to the queue",
                         delivery.item.id)
                break
            index += 1
            delivery.record = settled(delivery.item.id, "dead" if run.error else "done",
                                      delivery.item.attempt, run, self.worker_id)
            with supervisor.lock:
                if run.error is not None:
                    self._fail(consumer, delivery, run.error)
                    continue
                if not done:
                    first_done = time.monotonic()
                done.append(delivery)
                # Once stopping, successes wait for the consumer to stop (see run()).
                if (time.monotonic() - first_done >= ACK_FLUSH_SECONDS
                        and not self._stopping):
                    self._ack(consumer, done)
                    done = []
        if index < len(deliveries):
            with supervisor.lock:
                consumer.release(deliveries[index:])
        return done

    def _ack(self, consumer: Consumer, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        try:
            outcomes = consumer.ack_many(deliveries)
        except ConnectionLost as exc:
            self._not_recorded(len(deliveries), exc)
            return
        self._record_all(deliveries, outcomes)

    def _record_all(self, deliveries: Sequence[Delivery], outcomes: Sequence[Outcome]) -> None:
        for delivery, outcome in zip(deliveries, outcomes, strict=True):
            self._record(delivery, outcome, None)

    @staticmethod
    def _not_recorded(count: int, why: ConnectionLost) -> None:
        log.warning("%s not recorded (%s); those tasks will run again",
                    plural(count, "result"), why)

    def _fail(self, consumer: Consumer, delivery: Delivery, error: str) -> None:
        config = self.config
        delay = retry_delay(delivery.item.attempt, config.retry_delay_seconds,
                            config.retry_delay_max_seconds)
        try:
            outcome = consumer.fail(delivery, error, config.max_attempts, delay)
        except ConnectionLost as exc:
            log.warning("task %s: result not recorded (%s); it will run again",
                        task_text(delivery.item), exc)
            return
        self._record(delivery, outcome, error)

    def _record(self, delivery: Delivery, outcome: Outcome, error: str | None) -> None:
        item = delivery.item
        self.tally.add(outcome)
        worker_metrics.SETTLED[outcome].inc()
        if outcome is Outcome.RETRY:
            log.warning("task %s failed (attempt %d of %d): %s; will retry", task_text(item),
                        item.attempt, self.config.max_attempts, error)
        elif outcome is Outcome.DEAD:
            log.error("task %s dead-lettered after %d attempts: %s", task_text(item),
                      item.attempt, error)
        elif outcome is Outcome.LOST:
            log.warning("task %s: its lease had expired, so it went back to the queue and this "
                        "result was discarded: no heartbeat reached the broker for leaseSeconds "
                        "(the broker was away that long, or this worker was stalled)",
                        task_text(item))

    def _summary(self) -> str:
        t = self.tally
        return f"done {t.done}, retried {t.retried}, dead {t.dead}, lost leases {t.lost}"

    def _wait_for_index_0(self) -> int:
        """A replaceable worker of a drained queue waits until the Job controller stops it,
        once index 0 has ended the Job. Exiting now would start the next index's pod, which
        would find the queue drained and exit too, pod after pod."""
        while not self._stopping:
            log.info("worker %s: the queue is drained; waiting for the worker at index 0 to end "
                     "the Job", self.worker_id)
            self._pause(self.config.wait_log_seconds)
        return EXIT_OK

    def _finish(self, why: str) -> int:
        if self.config.mode == "coarse" and (waiting := self.broker.waiting()):
            # Tasks still wait, so this pod has no verdict to give; and a coarse run has a pod
            # per task, each of which would pay for RabbitMQ's done count (a turn and a write)
            # more than for its own settle.
            log.info("worker %s: %s. This worker: %s. Queue: %d waiting", self.worker_id, why,
                     self._summary(), waiting)
            return EXIT_OK
        status = self.broker.status()
        log.info("worker %s: %s. This worker: %s. Queue: %d done, %d dead of %s", self.worker_id,
                 why, self._summary(), status.done, status.dead, status.total)
        if status.drained and status.dead and self.config.fail_on_dead:
            # INFO: every worker says it, and `run-local` prints the verdict once itself.
            log.info("%s dead-lettered; see `workqueue status --dead`. Exiting %d (set "
                     "onDead=succeed to exit 0).", plural(status.dead, "item was", "items were"),
                     EXIT_DEAD)
            return EXIT_DEAD
        return EXIT_OK


def _batch_text(limit: int, seconds: float) -> str:
    if seconds <= 0 or limit == 1:
        return f"{limit}"
    return f"up to {limit}, about {seconds:g}s of work"


REFUSAL_CHECK_SECONDS = 5.0
"""How often an idle worker, before seeding completes, looks for the seeder's refusal."""


class _Waiting:
    """A worker with nothing to lease: it says what it waits for every ``wait_log_seconds``,
    gives up at once if the seeder recorded that it cannot seed, and otherwise once seeding
    has not completed ``seed_timeout_seconds`` after it started."""

    def __init__(self, config: WorkerConfig, broker: Broker) -> None:
        self.config = config
        self.broker = broker
        self.started = time.monotonic()
        self.since: float | None = None
        self.next_log = 0.0
        self.next_refusal_check = 0.0

    def idle(self, seeded: bool) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since, self.next_log = now, now
        if not seeded and now >= self.next_refusal_check:
            self.next_refusal_check = now + REFUSAL_CHECK_SECONDS
            refusal = self.broker.seed_refusal()
            if refusal:
                raise SeedRefused(seed_refused_message(self.broker.queue, refusal))
        if not seeded and now - self.started >= self.config.seed_timeout_seconds:
            raise SeedTimeout(
                f"seeding did not complete within {self.config.seed_timeout_seconds:.0f}s "
                "(worker.seedTimeoutSeconds): see the seeder Job's pods and logs. If the seeder "
                "had finished, the broker lost its data: turn on broker.persistence")
        if now >= self.next_log:
            if seeded:
                log.info("nothing to lease for %.0fs: the remaining items are held by other "
                         "workers (their leases come back if those workers died) or wait out "
                         "a retry delay", now - self.since)
            else:
                left = self.config.seed_timeout_seconds - (now - self.started)
                log.info("waiting for the seeder to finish (%.0fs so far; giving up in %.0fs)",
                         now - self.since, left)
            self.next_log = now + self.config.wait_log_seconds

    def busy(self) -> None:
        self.since = None
