"""The queue-wide calls on RabbitMQ: seeding, counts, dead letters, the report, purge."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence

import pika.exceptions as amqp
from pika.adapters.blocking_connection import BlockingChannel
from pika.spec import Basic

from ...broker import Broker, Consumer, DeadItem, SeedState, Status
from ...defaults import CONNECT_TIMEOUT_SECONDS, OUTAGE_SECONDS
from ...errors import BrokerFull, ConfigError, WorkqueueError
from ...message import encode, item_id
from ...report import TaskRecord
from . import pardons, records
from .channels import side_channel
from .connection import Link, describe, node_parameters
from .messages import (
    WAITING_ROLES,
    dead_item,
    persistent,
    queue_names,
)
from .queues import declarations, exists, queue_arguments

log = logging.getLogger(__name__)

PRECONDITION_FAILED = 406
"""AMQP reply code for a declaration whose arguments differ from the existing queue's."""
INTERNAL_ERROR = 541
"""AMQP reply code for a failure inside the broker; it closes the connection."""
CURSOR_WAIT_SECONDS = 10.0
"""Longest the seeder waits for a reader to hand the cursor back (it holds it milliseconds)."""


class RabbitMQBroker(Broker):
    """A queue made of the RabbitMQ queues the package docstring lists."""

    def __init__(self, url: str | Sequence[str], queue: str, password: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
                 outage_seconds: float = OUTAGE_SECONDS, heartbeat_seconds: int = 30,
                 replicas: int | None = None) -> None:
        """``url``: the broker's, or one per node of a cluster; ``replicas``: the nodes each
        queue is replicated to (queues.py), by default one per URL."""
        urls = [url] if isinstance(url, str) else list(url)
        self.queue = queue
        self.names = queue_names(queue)
        self.nodes = node_parameters(urls, password, heartbeat_seconds, connect_timeout)
        self.params = self.nodes[0]
        self.replicas = replicas or len(urls)
        self.server = describe(self.nodes)
        self.outage_seconds = outage_seconds
        self._seed_channel: BlockingChannel | None = None
        self._failed_on: str | None = None
        self._started_half: list[str] = []
        self.link = Link(self.nodes, self.server, queue, outage_seconds,
                         on_open=self._forget_seed_channel)
        self.link.connect(connect_timeout)
        # Declared once, not on every reconnect: a broker that comes back without its data
        # must show as queues gone (StateLost), not as new empty ones.
        self.link.call(self._declare)
        for name in self._started_half:
            log.error("%s failed while creating queue %r (541 INTERNAL_ERROR): if `rabbitmqctl "
                      "list_queues name leader` shows it without a leader, it refuses what is "
                      "sent to it (retries, crash suspects) and this run cannot finish. Restart "
                      "the broker; its log says why (a supervisor of dead-letter workers that "
                      "gave up, rabbitmq-server#16652, does this)", self.server, name)

    def _forget_seed_channel(self, _channel: BlockingChannel) -> None:
        self._seed_channel = None

    def _declare(self, channel: BlockingChannel) -> None:
        """Declare every queue. A queue that exists after a 541 on its own declaration was
        created and not started: a quorum queue left so has no leader and refuses what is
        published to it (a retry, a suspect), so workers end with exit 5 once their outage
        tolerance is spent, their tasks still queued. Reproduced on RabbitMQ 3.10 and 4.0 with
        their supervisor of dead-letter workers stopped, as rabbitmq-server#16652 leaves it;
        only a log line, though, as another pod may have declared it meanwhile."""
        if self._failed_on is not None and exists(channel, self._failed_on):
            self._started_half.append(self._failed_on)
        self._failed_on = None
        name = None
        try:
            for name, arguments in declarations(self.names, self.replicas):
                channel.queue_declare(name, durable=True, arguments=arguments)
        except amqp.ConnectionClosedByBroker as exc:
            if exc.reply_code == INTERNAL_ERROR:
                self._failed_on = name
            raise
        except amqp.ChannelClosedByBroker as exc:
            if exc.reply_code != PRECONDITION_FAILED:
                raise
            raise ConfigError(
                f"queue {self.queue!r} on {self.server} was declared with other settings "
                f"than {self.replicas} broker replica(s) ({exc.reply_text}): run it with the "
                "replicas it was started with, or purge it and seed again") from exc

    def count(self, role: str) -> int:
        """Ready messages in one of the queues."""
        return self.link.call(lambda channel: channel.queue_declare(
            self.names[role], passive=True).method.message_count)

    def peek(self, role: str) -> dict | None:
        """The first message of a queue, left in place."""
        def action(channel: BlockingChannel) -> dict | None:
            method, _props, body = channel.basic_get(self.names[role])
            if method is None:
                return None
            channel.basic_nack(method.delivery_tag, requeue=True)
            return json.loads(body)

        return self.link.call(action)

    def seed_state(self) -> SeedState:
        raw = self.peek("seed") or {}
        return SeedState(
            cursor=int(raw.get("cursor", 0)), fingerprint=raw.get("fingerprint"),
            total=raw.get("total"), complete=bool(raw.get("complete")), run=raw.get("run"),
        )

    def _seeding_channel(self, channel: BlockingChannel) -> BlockingChannel:
        """The seeder's transactional channel on the current connection."""
        if self._seed_channel is None:
            seeding = channel.connection.channel()
            try:
                # Held for the seeder's lifetime: a second seeder fails here instead of racing.
                seeding.queue_declare(f"wq.{self.queue}.seed-lock", exclusive=True)
            except amqp.ChannelClosedByBroker as exc:
                raise WorkqueueError(
                    f"another seeder is writing queue {self.queue!r}; run one seeder at a time"
                ) from exc
            seeding.tx_select()
            self._seed_channel = seeding
        return self._seed_channel

    def seed_batch(self, state: SeedState, payloads: Sequence[str]) -> SeedState:
        new = SeedState(state.cursor + len(payloads), state.fingerprint, state.total,
                        run=state.run)

        def action(channel: BlockingChannel) -> SeedState:
            seeding = self._seeding_channel(channel)
            for offset, payload in enumerate(payloads):
                seeding.basic_publish("", self.names["tasks"],
                                      encode(item_id(state.cursor + offset), payload),
                                      persistent())
            return self._commit_seed_state(seeding, state, new)

        try:
            return self.link.call(action)
        except amqp.ConnectionBlockedTimeout as exc:
            # The server blocks publishers while a memory or disk alarm is on.
            raise BrokerFull(
                f"{self.server} stopped taking tasks for "
                f"{self.params.blocked_connection_timeout:.0f}s (a memory or disk alarm): raise "
                "broker.rabbitmq.resources.limits.memory or broker.persistence.size, or seed "
                "fewer or smaller tasks") from exc

    def mark_seeded(self, state: SeedState) -> SeedState:
        new = SeedState(state.cursor, state.fingerprint, state.total, complete=True,
                        run=state.run)
        return self.link.call(lambda channel: self._commit_seed_state(
            self._seeding_channel(channel), state, new))

    def _commit_seed_state(self, channel: BlockingChannel, old: SeedState,
                           new: SeedState) -> SeedState:
        """Swap the cursor message for ``new`` in the same transaction as the batch. Run again
        after a dropped connection, it finds ``new`` already there if the first commit landed,
        and keeps that instead of seeding the batch twice."""
        method, body = self._take_cursor(channel, expected=old.cursor > 0)
        held = json.loads(body) if method else {}
        if (held.get("cursor", 0), bool(held.get("complete"))) == (new.cursor, new.complete):
            # Drop this attempt's publishes, and hand the cursor back for the next batch.
            channel.tx_rollback()
            channel.basic_nack(method.delivery_tag, requeue=True)
            channel.tx_commit()
            return new
        if int(held.get("cursor", 0)) != old.cursor:
            channel.tx_rollback()
            raise WorkqueueError(f"the seed cursor of queue {self.queue!r} moved under us; run "
                                 "one seeder at a time")
        channel.basic_publish("", self.names["seed"], json.dumps({
            "cursor": new.cursor, "fingerprint": new.fingerprint, "total": new.total,
            "complete": new.complete, "run": new.run}), persistent())
        if method is not None:
            channel.basic_ack(method.delivery_tag)
        if new.complete:
            channel.basic_publish("", self.names["seeded"], json.dumps({
                "total": new.total, "fingerprint": new.fingerprint, "run": new.run,
                "at": round(time.time(), 3)}), persistent())
        channel.tx_commit()
        return new

    def _take_cursor(self, channel: BlockingChannel,
                     expected: bool) -> tuple[Basic.GetOk | None, bytes]:
        """Take the cursor message. A reader (`status`, the exporter) peeks it by taking it and
        handing it back, so while ``expected`` it may be away for a moment: it is waited for,
        rather than taken for a cursor another seeder moved."""
        deadline = time.monotonic() + CURSOR_WAIT_SECONDS
        while True:
            method, _props, body = channel.basic_get(self.names["seed"])
            if method is not None or not expected or time.monotonic() > deadline:
                return method, body
            time.sleep(0.02)

    def consumer(self, worker_id: str, prefetch: int, lease_seconds: float,
                 max_attempts: int, run_id: str | None = None) -> Consumer:
        from .consumer import RabbitConsumer

        return RabbitConsumer(self, worker_id, prefetch, lease_seconds, max_attempts, run_id)

    def done_count(self) -> int:
        return self.link.call(lambda channel: records.done_count(
            channel, self.names["done"], f"wq.{self.queue}.count-lock"))

    def redeem_pardons(self, item_id: str, token: str, most: int) -> int:
        """Take up to ``most`` pardons of copy ``token`` of ``item_id`` (pardons.py)."""
        return self.link.call(lambda channel: pardons.redeem(
            channel, self.names["pardons"], f"wq.{self.queue}.pardon-lock", item_id, token,
            most))

    def _waiting_by_role(self) -> dict[str, int]:
        return {role: self.count(role) for role in WAITING_ROLES}

    def waiting(self) -> int:
        return sum(self._waiting_by_role().values())

    def status(self) -> Status:
        marker = self.peek("seeded")
        cursor = marker or self.peek("seed")
        waiting = self._waiting_by_role()
        delayed, pending = waiting["delayed"], sum(waiting.values())
        done, dead = self.done_count(), self.count("dead")
        total = marker["total"] if marker else None
        # The receipts name each task done once: with all of them done, whatever still waits
        # is a copy of a task already done, not work left.
        copies = pending if total is not None and done == total else 0
        if copies:
            pending = delayed = 0
        leased = max(total - pending - done - dead, 0) if total is not None else 0
        return Status(seeded=marker is not None, total=total, pending=pending, leased=leased,
                      done=done, dead=dead, retried=self.count("retries"), delayed=delayed,
                      run=cursor.get("run") if cursor else None,
                      seeded_at=marker.get("at") if marker else None,
                      exists=cursor is not None or pending + copies + done + dead > 0,
                      copies=copies)

    def dead_items(self, limit: int) -> list[DeadItem]:
        def action(channel: BlockingChannel) -> list[DeadItem]:
            # A channel of its own: closing it hands every message it took back to the queue.
            found = []
            with side_channel(channel) as side:
                while len(found) < limit:
                    method, props, body = side.basic_get(self.names["dead"])
                    if method is None:
                        break
                    found.append(dead_item(props, body))
            return found

        return self.link.call(action)

    def records(self) -> Iterator[TaskRecord]:
        """Every record, read once; the messages are merged into chunks as they go by, so the
        next read takes fewer."""
        return records.latest_per_task(self.link.call(
            lambda channel: records.read_report(channel, self.names["report"])))

    def record_sample(self, size: int) -> list[TaskRecord]:
        return list(records.latest_per_task(self.link.call(
            lambda channel: records.sample(channel, self.names["report"], size))))

    def publish_records(self, channel: BlockingChannel, pairs: list[list[str]]) -> None:
        """Part of the caller's settle or transaction: records as [id, record] pairs."""
        records.publish_records(channel, self.names["report"], pairs)

    def purge(self) -> None:
        def action(channel: BlockingChannel) -> None:
            for name in self.names.values():
                channel.queue_delete(name)

        self.link.call(action)

    def retry_dead(self, round_number: int = 0) -> int | None:
        # One transaction on the seeding channel: the items go back, the dead letters go,
        # and the cursor records the round, together.
        def action(main: BlockingChannel) -> int | None:
            channel = self._seeding_channel(main)
            method, _props, body = channel.basic_get(self.names["seed"])
            cursor = json.loads(body) if method else {}
            if round_number and int(cursor.get("retry_round", 0)) >= round_number:
                if method is not None:
                    channel.basic_nack(method.delivery_tag, requeue=True)
                channel.tx_commit()
                return None
            moved: list[list[str]] = []
            while True:
                dead, props, raw = channel.basic_get(self.names["dead"])
                if dead is None:
                    break
                item = dead_item(props, raw)
                channel.basic_publish("", self.names["tasks"], encode(item.id, item.payload),
                                      persistent())
                channel.basic_ack(dead.delivery_tag)
                # Its record says "pending" until it settles again; the runs add up on merge.
                moved.append([item.id, TaskRecord(item.id, "pending", 0,
                                                  finished=time.time()).encode()])
            if moved:
                self.publish_records(channel, moved)
            if round_number and method is not None:
                channel.basic_publish("", self.names["seed"],
                                      json.dumps({**cursor, "retry_round": round_number}),
                                      persistent())
                channel.basic_ack(method.delivery_tag)
            elif method is not None:
                channel.basic_nack(method.delivery_tag, requeue=True)
            channel.tx_commit()
            return len(moved)

        return self.link.call(action)

    def retry_round(self) -> int:
        return int((self.peek("seed") or {}).get("retry_round", 0))

    def set_seed_refusal(self, reason: str | None) -> None:
        def action(channel: BlockingChannel) -> None:
            channel.queue_purge(self.names["refused"])
            if reason:
                channel.basic_publish("", self.names["refused"], json.dumps({"reason": reason}),
                                      persistent())

        self.link.call(action)

    def seed_refusal(self) -> str | None:
        return (self.peek("refused") or {}).get("reason")

    def replace_previous(self, family: str) -> str | None:
        pointer = f"wq.{family}.current"

        def action(main: BlockingChannel) -> str | None:
            main.queue_declare(pointer, durable=True,
                               arguments=queue_arguments("current", self.names, self.replicas))
            channel = self._seeding_channel(main)
            method, _props, body = channel.basic_get(pointer)
            previous = body.decode() if method else None
            if previous == self.queue:
                channel.basic_nack(method.delivery_tag, requeue=True)
                channel.tx_commit()
                return None
            if previous:
                # Deleting the queues cancels the previous run's consumers: its workers stop
                # with "lost its state" rather than settle anything into this run.
                for name in queue_names(previous).values():
                    main.queue_delete(name)
            channel.basic_publish("", pointer, self.queue.encode(), persistent())
            if method is not None:
                channel.basic_ack(method.delivery_tag)
            channel.tx_commit()
            return previous

        return self.link.call(action)

    def close(self) -> None:
        self.link.close()
