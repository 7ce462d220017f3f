"""The queue interface the seeder and the workers use; brokers/ holds the Redis and RabbitMQ ones.

A Broker owns the connection settings and the queue-wide operations (seed, status). A Consumer
belongs to one worker: it leases items, keeps their leases alive, and settles each one exactly once
with ack (done), fail (retry or dead-letter) or release (given back unstarted).
"""

from __future__ import annotations

import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from .message import Item
from .report import TaskRecord


@dataclass(frozen=True)
class SeedState:
    """How far seeding got: ``cursor`` tasks written, ``complete`` once the marker is set."""

    cursor: int = 0
    fingerprint: str | None = None
    total: int | None = None
    complete: bool = False
    run: str | None = None
    """The run the queue was seeded for (the chart's run id), if the seeder was given one."""


@dataclass(frozen=True)
class Status:
    """Queue-wide counts. ``leased`` items are held by live (or not yet reaped) workers."""

    seeded: bool
    total: int | None
    pending: int
    leased: int
    done: int
    dead: int
    retried: int = 0
    delayed: int = 0
    """Of the ``pending`` items, those waiting out a retry delay (worker.retryDelaySeconds)."""
    run: str | None = None
    exists: bool = True
    """False when the broker holds no state at all for this queue: never seeded, or lost."""
    seeded_at: float | None = None
    """When seeding completed (Unix seconds): the start of the run's clock, for throughput."""
    copies: int = 0
    """Messages still queued once every task is done, so not pending: on a RabbitMQ cluster,
    what a lost node's consumers held comes back when that node returns, after the workers ran
    those tasks from the copies they published again."""

    @property
    def drained(self) -> bool:
        """True once seeding is complete and every item is done or dead."""
        return self.seeded and self.total is not None and self.pending == 0 and self.leased == 0


@dataclass(frozen=True)
class DeadItem:
    """A dead-lettered item with the reason it failed last."""

    id: str
    payload: str
    attempts: int
    error: str


class Outcome(StrEnum):
    """What settling an item did."""

    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"
    LOST = "lost"
    """The lease had expired and the item went to someone else; our result was discarded."""


@dataclass
class Delivery:
    """An item leased to this worker, with the broker's handle for settling it."""

    item: Item
    handle: Any = field(default=None, compare=False)
    record: TaskRecord | None = field(default=None, compare=False)
    """How it went, set by the worker before it settles the item: the broker keeps it for the
    report in the same step as the settle (a failure's record only if it dead-letters)."""


def record_text(delivery: Delivery, outcome: str) -> str:
    """The broker's form of ``delivery``'s record; a bare one (outcome, runs, time) for a
    delivery settled without one, as callers of the Python API may. The time is needed: a
    task's records are merged newest first (a retry-dead round's "pending" one is timed)."""
    record = delivery.record or TaskRecord(delivery.item.id, outcome, delivery.item.attempt,
                                           finished=time.time())
    return record.encode()


@dataclass(frozen=True)
class Fetch:
    """The answer to Consumer.fetch: items, or none with ``drained`` telling whether to stop
    and ``seeded`` whether the seeder has finished (workers wait for it only so long)."""

    deliveries: Sequence[Delivery] = ()
    drained: bool = False
    seeded: bool = True


class Consumer(ABC):
    """One worker's view of the queue."""

    keep_alive_seconds: float
    """Longest gap allowed between two ``keep_alive`` calls while items run."""

    @abstractmethod
    def fetch(self, count: int) -> Fetch:
        """Lease up to ``count`` items without blocking for long. Raises StateLost if the
        queue's state vanished since this consumer saw it, and OtherRun if the queue was
        seeded for a run other than the consumer's ``run_id``."""

    @abstractmethod
    def ack(self, delivery: Delivery) -> Outcome:
        """Record the item as done (DONE), unless our lease was lost (LOST)."""

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        """``ack`` for several items, in one round trip where the broker allows it."""
        return [self.ack(delivery) for delivery in deliveries]

    def ack_and_fetch(self, done: Sequence[Delivery],
                      count: int) -> tuple[list[Outcome], Fetch]:
        """``ack_many(done)``, then ``fetch(count)``: one round trip where the broker allows it,
        so that a worker leasing one item at a time pays one round trip per item."""
        return self.ack_many(done), self.fetch(count)

    @abstractmethod
    def fail(self, delivery: Delivery, error: str, max_attempts: int,
             retry_delay: float = 0.0) -> Outcome:
        """Retry the item (RETRY) or dead-letter it after ``max_attempts`` runs (DEAD). A retry
        is not leased again before ``retry_delay`` seconds have passed, and waits on the broker,
        not in this worker: other items go on meanwhile, and a worker that dies loses nothing."""

    @abstractmethod
    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give back items that were never started, without counting an attempt (at the
        latest when the consumer closes)."""

    @abstractmethod
    def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        """Renew the leases of items being worked on, every ``keep_alive_seconds``. Called from
        the worker's supervisor thread, never at the same time as another call."""

    @abstractmethod
    def stop(self) -> None:
        """Take no more items: called before the last settle at shutdown. Items already
        leased stay this consumer's to settle or give back."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection; unsettled items return to the queue."""


class Broker(ABC):
    """A queue named ``queue`` on one server."""

    queue: str
    server: str
    """The server, as people should read it in messages (e.g. "redis at host:6379")."""

    @abstractmethod
    def seed_state(self) -> SeedState:
        """Where seeding stands."""

    @abstractmethod
    def seed_batch(self, state: SeedState, payloads: Sequence[str]) -> SeedState:
        """Append payloads with ids from ``state.cursor`` on, atomically with the new cursor."""

    @abstractmethod
    def mark_seeded(self, state: SeedState) -> SeedState:
        """Set the seeded marker; workers may only call the queue drained after this."""

    @abstractmethod
    def consumer(self, worker_id: str, prefetch: int, lease_seconds: float,
                 max_attempts: int, run_id: str | None = None) -> Consumer:
        """A consumer for one worker, serving run ``run_id`` (None: whatever run was seeded)."""

    @abstractmethod
    def status(self) -> Status:
        """Queue-wide counts."""

    @abstractmethod
    def waiting(self) -> int:
        """Items queued or waiting out a retry delay (``status().pending``), without the
        counts that cost more: while any wait, the queue is not drained."""

    @abstractmethod
    def dead_items(self, limit: int) -> list[DeadItem]:
        """Up to ``limit`` dead-lettered items, oldest first."""

    @abstractmethod
    def records(self) -> Iterator[TaskRecord]:
        """One record per settled task (the latest, after retry-dead rounds)."""

    def report(self) -> Iterator[TaskRecord]:
        """The records, each dead task's with its payload (its dead letter still holds it)."""
        payloads = {item.id: item.payload for item in self.dead_items(sys.maxsize)}
        for record in self.records():
            if record.outcome == "dead" and record.id in payloads:
                record = replace(record, payload=payloads[record.id])
            yield record

    @abstractmethod
    def record_sample(self, size: int) -> list[TaskRecord]:
        """Up to ``size`` records, cheaply, for the run-time percentiles `status` shows."""

    @abstractmethod
    def purge(self) -> None:
        """Delete every key or queue of this queue name."""

    @abstractmethod
    def retry_dead(self, round_number: int = 0) -> int | None:
        """Put every dead-lettered item back in the queue with fresh attempts; safe while
        workers run. A ``round_number`` above 0 is applied once: if it (or a later one)
        already was, nothing moves and this returns None. Returns how many went back."""

    @abstractmethod
    def retry_round(self) -> int:
        """The last retry round applied (0: none)."""

    @abstractmethod
    def set_seed_refusal(self, reason: str | None) -> None:
        """Record why the seeder could not seed this queue (None: clear it), so that workers
        and `status` stop waiting and say why, instead of timing out."""

    @abstractmethod
    def seed_refusal(self) -> str | None:
        """The seeder's recorded reason for not seeding, if any."""

    @abstractmethod
    def replace_previous(self, family: str) -> str | None:
        """Record this queue as the current one of ``family`` (a release's queues, one per
        run), first deleting the queue that was current before, if it was another. Returns
        the name of the queue replaced, if any."""

    @abstractmethod
    def close(self) -> None:
        """Close connections."""
