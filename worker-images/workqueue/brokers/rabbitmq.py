"""RabbitMQ broker.

Queues, all durable, named ``wq.<queue>.<role>``:
  tasks    quorum queue of items (persistent messages); consumers use prefetch and manual ack
  done     receipts {"done": n}, one per batch of items done, merged as they are counted
  dead     dead-lettered items with their last error
  retries  one receipt per retry          seed     one message: the seeding cursor
  seeded   one message once seeding is complete: {total, fingerprint}
  refused  one message while the seeder's last attempt was refused: its reason
  delayed  quorum queue of failed items waiting out their retry delay: each has a TTL, and the
           server moves it to `tasks` when that runs out (at-least-once dead-lettering)
  report   records of settled items, [[id, record], ...] per message: one message per settle,
           published in its transaction, and merged into chunks as the report is read

Settling items publishes their receipt and acks the deliveries in one AMQP transaction, so each
item is counted exactly once, as done or dead. That makes "drained" exact: done + dead == total.
A retry republishes the item with its attempt count in a header; a worker that dies mid-item drops
its connection and the server redelivers (x-delivery-count counts those runs), so there is no
lease to reap.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions as amqp
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from ..broker import (
    Broker,
    Consumer,
    DeadItem,
    Delivery,
    Fetch,
    Outcome,
    SeedState,
    Status,
    record_text,
)
from ..defaults import CONNECT_TIMEOUT_SECONDS, OUTAGE_SECONDS
from ..errors import (
    BrokerAuthError,
    BrokerFull,
    ConfigError,
    ConnectionLost,
    OtherRun,
    StateLost,
    WorkqueueError,
    lost_state_message,
    other_run_message,
)
from ..message import Item, MalformedItem, decode, encode, item_id
from ..report import TaskRecord
from .outage import retry_until

log = logging.getLogger(__name__)
T = TypeVar("T")

PERSISTENT = pika.DeliveryMode.Persistent
ATTEMPT_HEADER = "x-wq-attempt"
ERROR_HEADER = "x-wq-error"
SAFETY_DELIVERY_LIMIT = 1000
"""Server-side cap on redeliveries, above any maxAttempts; RabbitMQ 4 drops at 20 by default."""
_RECOVERABLE = (amqp.AMQPConnectionError, amqp.AMQPChannelError, amqp.StreamLostError,
                amqp.ConnectionWrongStateError, amqp.ChannelWrongStateError)
REPORT_CHUNK = 1000
"""Records per report message once merged."""
STOP_FILL_SECONDS = 0.25
"""At shutdown, how long the subscription may wait for deliveries already on their way."""
NOT_FOUND = 404
"""AMQP reply code for a queue that does not exist: ours were declared, so they were deleted
(or the broker restarted without its data)."""


class RabbitMQBroker(Broker):
    """A queue made of the RabbitMQ queues the module docstring lists."""

    def __init__(self, url: str, queue: str, password: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
                 outage_seconds: float = OUTAGE_SECONDS, heartbeat_seconds: int = 30) -> None:
        self.queue = queue
        self.names = _queue_names(queue)
        self.params = _parameters(url, password, heartbeat_seconds, connect_timeout)
        self.server = f"rabbitmq at {self.params.host}:{self.params.port}"
        self.outage_seconds = outage_seconds
        self.connection = self.open_connection(connect_timeout)
        self.channel = self.connection.channel()
        self._seed_channel: BlockingChannel | None = None
        self._declare(self.channel)

    def open_connection(self, timeout: float) -> pika.BlockingConnection:
        """A new connection, retried for up to ``timeout`` seconds."""
        def attempt() -> pika.BlockingConnection:
            try:
                return pika.BlockingConnection(self.params)
            except (amqp.ProbableAuthenticationError, amqp.AuthenticationError) as exc:
                raise BrokerAuthError(
                    f"{self.server} refused user {self.params.credentials.username!r}: check "
                    "WORKQUEUE_BROKER_PASSWORD(_FILE) (in the chart, the broker Secret)"
                ) from exc
            except amqp.ProbableAccessDeniedError as exc:
                raise BrokerAuthError(
                    f"{self.server} denied access to vhost {self.params.virtual_host!r}: grant "
                    "the user permissions there or fix the vhost in the URL"
                ) from exc
            except (AMQPConnectorStackTimeout, amqp.IncompatibleProtocolError) as exc:
                raise ConfigError(
                    f"{self.server} accepted the connection but did not answer as RabbitMQ "
                    f"within {self.params.stack_timeout:.0f}s: check the port (RabbitMQ "
                    "listens on 5672) and the scheme (amqps:// only for a TLS listener)"
                ) from exc

        return retry_until(attempt, timeout, self.server, transient=(amqp.AMQPConnectionError,))

    def check_not_lost(self, exc: BaseException) -> None:
        """Raise StateLost if ``exc`` says one of our queues no longer exists."""
        if isinstance(exc, amqp.ChannelClosedByBroker) and exc.reply_code == NOT_FOUND:
            raise StateLost(lost_state_message(self.queue, self.server)) from exc

    def _declare(self, channel: BlockingChannel) -> None:
        channel.queue_declare(self.names["tasks"], durable=True, arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": SAFETY_DELIVERY_LIMIT,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.names["dead"],
        })
        # An expired retry moves to `tasks` exactly as a crash-safe publish would: quorum
        # queues dead-letter at least once (RabbitMQ 3.10+) only with reject-publish overflow.
        channel.queue_declare(self.names["delayed"], durable=True, arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.names["tasks"],
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        })
        # Version 2 keeps a classic queue's messages on disk, not in memory (the default from
        # RabbitMQ 4.0; 3.10 and later take the argument): a million records cost disk only.
        channel.queue_declare(self.names["report"], durable=True,
                              arguments={"x-queue-version": 2})
        for role, name in self.names.items():
            if role not in ("tasks", "delayed", "report"):
                channel.queue_declare(name, durable=True)

    def publish_records(self, channel: BlockingChannel, pairs: list[list[str]]) -> None:
        """Part of the caller's transaction: records as [id, record] pairs."""
        channel.basic_publish("", self.names["report"], json.dumps(pairs, ensure_ascii=False),
                              pika.BasicProperties(delivery_mode=PERSISTENT))

    def _on_channel(self, action: Callable[[BlockingChannel], T]) -> T:
        """Run a queue-wide call, reopening the connection once if it was dropped: it sits idle
        while the workers run, and the server closes it when heartbeats go unanswered."""
        try:
            return action(self.channel)
        except _RECOVERABLE as exc:
            self.check_not_lost(exc)
            log.info("reconnecting to %s (%s)", self.server, exc)
            with contextlib.suppress(Exception):
                self.connection.close()
            self.connection = self.open_connection(self.outage_seconds)
            self.channel = self.connection.channel()
            self._seed_channel = None
        try:
            return action(self.channel)
        except amqp.ChannelClosedByBroker as exc:
            self.check_not_lost(exc)
            raise

    def count(self, role: str) -> int:
        """Ready messages in one of the queues."""
        return self._on_channel(lambda channel: channel.queue_declare(
            self.names[role], passive=True).method.message_count)

    def peek(self, role: str) -> dict | None:
        """The first message of a queue, left in place."""
        def action(channel: BlockingChannel) -> dict | None:
            method, _props, body = channel.basic_get(self.names[role])
            if method is None:
                return None
            channel.basic_nack(method.delivery_tag, requeue=True)
            return json.loads(body)

        return self._on_channel(action)

    def seed_state(self) -> SeedState:
        raw = self.peek("seed") or {}
        return SeedState(
            cursor=int(raw.get("cursor", 0)), fingerprint=raw.get("fingerprint"),
            total=raw.get("total"), complete=bool(raw.get("complete")), run=raw.get("run"),
        )

    def _seeding_channel(self) -> BlockingChannel:
        if self._seed_channel is None:
            channel = self.connection.channel()
            try:
                # Held for the seeder's lifetime: a second seeder fails here instead of racing.
                channel.queue_declare(f"wq.{self.queue}.seed-lock", exclusive=True)
            except amqp.ChannelClosedByBroker as exc:
                raise WorkqueueError(
                    f"another seeder is writing queue {self.queue!r}; run one seeder at a time"
                ) from exc
            channel.tx_select()
            self._seed_channel = channel
        return self._seed_channel

    def seed_batch(self, state: SeedState, payloads: Sequence[str]) -> SeedState:
        channel = self._seeding_channel()
        try:
            for offset, payload in enumerate(payloads):
                channel.basic_publish("", self.names["tasks"],
                                      encode(item_id(state.cursor + offset), payload),
                                      pika.BasicProperties(delivery_mode=PERSISTENT))
            return self._commit_seed_state(
                state, SeedState(state.cursor + len(payloads), state.fingerprint, state.total,
                                 run=state.run))
        except amqp.ConnectionBlockedTimeout as exc:
            # The server blocks publishers while a memory or disk alarm is on.
            raise BrokerFull(
                f"{self.server} stopped taking tasks for "
                f"{self.params.blocked_connection_timeout:.0f}s (a memory or disk alarm): raise "
                "broker.rabbitmq.resources.limits.memory or broker.persistence.size, or seed "
                "fewer or smaller tasks") from exc

    def mark_seeded(self, state: SeedState) -> SeedState:
        return self._commit_seed_state(
            state, SeedState(state.cursor, state.fingerprint, state.total, complete=True,
                             run=state.run))

    def _commit_seed_state(self, old: SeedState, new: SeedState) -> SeedState:
        """Swap the cursor message for ``new`` in the same transaction as the batch."""
        channel = self._seeding_channel()
        method, _props, body = channel.basic_get(self.names["seed"])
        held = json.loads(body) if method else {}
        if int(held.get("cursor", 0)) != old.cursor:
            channel.tx_rollback()
            raise WorkqueueError(f"the seed cursor of queue {self.queue!r} moved under us; run "
                                 "one seeder at a time")
        channel.basic_publish("", self.names["seed"], json.dumps({
            "cursor": new.cursor, "fingerprint": new.fingerprint, "total": new.total,
            "complete": new.complete, "run": new.run}),
            pika.BasicProperties(delivery_mode=PERSISTENT))
        if method is not None:
            channel.basic_ack(method.delivery_tag)
        if new.complete:
            channel.basic_publish("", self.names["seeded"], json.dumps({
                "total": new.total, "fingerprint": new.fingerprint, "run": new.run,
                "at": round(time.time(), 3)}),
                pika.BasicProperties(delivery_mode=PERSISTENT))
        channel.tx_commit()
        return new

    def consumer(self, worker_id: str, prefetch: int, lease_seconds: float,
                 max_attempts: int, run_id: str | None = None) -> Consumer:
        return _RabbitConsumer(self, worker_id, prefetch, max_attempts, run_id)

    def done_count(self) -> int:
        """Items done: the sum of the receipts, merged into one as they are read so that the
        next count is one read. A count made while another reader holds some receipts comes
        out low, never high, so nobody calls the queue drained early."""
        def action(_main: BlockingChannel) -> int:
            # A channel of its own: closing it hands back whatever it took and did not merge.
            channel = self.connection.channel()
            try:
                channel.tx_select()
                total, read, last = 0, 0, 0
                while True:
                    method, _props, body = channel.basic_get(self.names["done"])
                    if method is None:
                        break
                    total += _receipt_count(body)
                    read, last = read + 1, method.delivery_tag
                if read > 1:
                    channel.basic_publish("", self.names["done"], _receipt(total),
                                          pika.BasicProperties(delivery_mode=PERSISTENT))
                    channel.basic_ack(last, multiple=True)
                    channel.tx_commit()
            finally:
                channel.close()
            return total

        return self._on_channel(action)

    def status(self) -> Status:
        marker = self.peek("seeded")
        cursor = marker or self.peek("seed")
        delayed = self.count("delayed")
        pending, done, dead = self.count("tasks") + delayed, self.done_count(), self.count("dead")
        total = marker["total"] if marker else None
        leased = max(total - pending - done - dead, 0) if total is not None else 0
        return Status(seeded=marker is not None, total=total, pending=pending, leased=leased,
                      done=done, dead=dead, retried=self.count("retries"), delayed=delayed,
                      run=cursor.get("run") if cursor else None,
                      seeded_at=marker.get("at") if marker else None,
                      exists=cursor is not None or pending + done + dead > 0)

    def dead_items(self, limit: int) -> list[DeadItem]:
        def action(_main: BlockingChannel) -> list[DeadItem]:
            # A channel of its own: closing it hands every message it took back to the queue.
            channel = self.connection.channel()
            found = []
            try:
                while len(found) < limit:
                    method, props, body = channel.basic_get(self.names["dead"])
                    if method is None:
                        break
                    found.append(_dead_item(props, body))
            finally:
                channel.close()
            return found

        return self._on_channel(action)

    def records(self) -> Iterator[TaskRecord]:
        """Every record, read once; the messages are merged into chunks of REPORT_CHUNK records
        as they go by, so the next read takes fewer. A task settled more than once (in several
        retry-dead rounds) is reported by its latest record, with the runs of all of them."""
        latest: dict[str, TaskRecord] = {}
        for record in self._read_report():
            before = latest.get(record.id)
            if before is not None:
                newer, older = ((record, before) if (record.finished or 0) >= (before.finished or 0)
                                else (before, record))
                record = replace(newer, attempts=newer.attempts + older.attempts)
            latest[record.id] = record
        return iter(latest.values())

    def _read_report(self) -> list[TaskRecord]:
        def action(_main: BlockingChannel) -> list[TaskRecord]:
            channel = self.connection.channel()
            found: list[list[str]] = []
            chunk: list[list[str]] = []
            last = 0

            def merge() -> None:
                """Swap the messages read since the last merge for one, in one transaction."""
                self.publish_records(channel, chunk)
                channel.basic_ack(last, multiple=True)
                channel.tx_commit()
                chunk.clear()

            try:
                channel.tx_select()
                waiting = channel.queue_declare(self.names["report"], passive=True)
                for _ in range(waiting.method.message_count):
                    method, _props, body = channel.basic_get(self.names["report"])
                    if method is None:
                        break
                    pairs = json.loads(body)
                    found.extend(pairs)
                    chunk.extend(pairs)
                    last = method.delivery_tag
                    if len(chunk) >= REPORT_CHUNK:
                        merge()
                if chunk:
                    merge()
            finally:
                channel.close()
            return [TaskRecord.decode(task_id, text) for task_id, text in found]

        return self._on_channel(action)

    def record_sample(self, size: int) -> list[TaskRecord]:
        def action(_main: BlockingChannel) -> list[TaskRecord]:
            # A channel of its own: closing it hands every message it took back to the queue.
            channel = self.connection.channel()
            found: list[TaskRecord] = []
            try:
                while len(found) < size:
                    method, _props, body = channel.basic_get(self.names["report"])
                    if method is None:
                        break
                    found.extend(TaskRecord.decode(task_id, text)
                                 for task_id, text in json.loads(body))
            finally:
                channel.close()
            return found[:size]

        return self._on_channel(action)

    def purge(self) -> None:
        def action(channel: BlockingChannel) -> None:
            for name in self.names.values():
                channel.queue_delete(name)

        self._on_channel(action)

    def retry_dead(self, round_number: int = 0) -> int | None:
        # One transaction on the seeding channel: the items go back, the dead letters go,
        # and the cursor records the round, together.
        channel = self._seeding_channel()
        method, _props, body = channel.basic_get(self.names["seed"])
        cursor = json.loads(body) if method else {}
        if round_number and int(cursor.get("retry_round", 0)) >= round_number:
            if method is not None:
                channel.basic_nack(method.delivery_tag, requeue=True)
            channel.tx_commit()
            return None
        moved = 0
        while True:
            dead, props, raw = channel.basic_get(self.names["dead"])
            if dead is None:
                break
            item = _dead_item(props, raw)
            channel.basic_publish("", self.names["tasks"], encode(item.id, item.payload),
                                  pika.BasicProperties(delivery_mode=PERSISTENT))
            channel.basic_ack(dead.delivery_tag)
            moved += 1
        if round_number and method is not None:
            channel.basic_publish("", self.names["seed"],
                                  json.dumps({**cursor, "retry_round": round_number}),
                                  pika.BasicProperties(delivery_mode=PERSISTENT))
            channel.basic_ack(method.delivery_tag)
        elif method is not None:
            channel.basic_nack(method.delivery_tag, requeue=True)
        channel.tx_commit()
        return moved

    def retry_round(self) -> int:
        return int((self.peek("seed") or {}).get("retry_round", 0))

    def set_seed_refusal(self, reason: str | None) -> None:
        def action(channel: BlockingChannel) -> None:
            channel.queue_purge(self.names["refused"])
            if reason:
                channel.basic_publish("", self.names["refused"], json.dumps({"reason": reason}),
                                      pika.BasicProperties(delivery_mode=PERSISTENT))

        self._on_channel(action)

    def seed_refusal(self) -> str | None:
        return (self.peek("refused") or {}).get("reason")

    def replace_previous(self, family: str) -> str | None:
        pointer = f"wq.{family}.current"
        self.channel.queue_declare(pointer, durable=True)
        channel = self._seeding_channel()
        method, _props, body = channel.basic_get(pointer)
        previous = body.decode() if method else None
        if previous == self.queue:
            channel.basic_nack(method.delivery_tag, requeue=True)
            channel.tx_commit()
            return None
        if previous:
            # Deleting the queues cancels the previous run's consumers: its workers stop with
            # "lost its state" rather than settle anything into this run.
            for name in _queue_names(previous).values():
                self.channel.queue_delete(name)
        channel.basic_publish("", pointer, self.queue.encode(),
                              pika.BasicProperties(delivery_mode=PERSISTENT))
        if method is not None:
            channel.basic_ack(method.delivery_tag)
        channel.tx_commit()
        return previous

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def _queue_names(queue: str) -> dict[str, str]:
    return {role: f"wq.{queue}.{role}"
            for role in ("tasks", "done", "dead", "retries", "seed", "seeded", "refused",
                         "delayed", "report")}


def _dead_item(props: pika.BasicProperties, body: bytes) -> DeadItem:
    """A dead letter, whether we wrote it or the server's delivery limit did."""
    data = json.loads(body)
    if "error" in data:
        return DeadItem(data["id"], data["payload"], data["attempts"], data["error"])
    headers = props.headers or {}
    return DeadItem(data["id"], data["payload"], _attempt(headers),
                    "redelivery limit reached: its workers kept dying while running it")


def _receipt(count: int) -> str:
    return json.dumps({"done": count})


def _receipt_count(body: bytes) -> int:
    return int(json.loads(body)["done"])


def _attempt(headers: dict) -> int:
    """Runs of an item so far, this one included."""
    return int(headers.get(ATTEMPT_HEADER, 1)) + int(headers.get("x-delivery-count", 0))


def _parameters(url: str, password: str | None, heartbeat: int,
                connect_timeout: float) -> pika.URLParameters:
    parts = urlsplit(url)
    user = unquote(parts.username or "guest")
    secret = password or unquote(parts.password or "")
    # pika cannot parse a user without a password, so credentials are set apart from the URL.
    host = parts.netloc.rpartition("@")[2]
    params = pika.URLParameters(parts._replace(netloc=host).geturl())
    params.credentials = pika.PlainCredentials(user, secret)
    params.heartbeat = heartbeat
    params.connection_attempts = 1
    params.socket_timeout = 5
    # The whole connect (TCP, TLS, AMQP handshake); a server that is not RabbitMQ never answers.
    params.stack_timeout = min(15.0, connect_timeout)
    params.blocked_connection_timeout = 60
    return params


class _RabbitConsumer(Consumer):
    """Consumes with prefetch on a transactional channel; reconnects when the link drops.

    Items given back (``release``) stay with this consumer until ``close``, which cancels the
    subscription first and only then republishes them. Republished while subscribed, they would
    come straight back into our prefetch window, and the cancel would hand those back to the
    server, which counts each such return as a crashed run (x-delivery-count).
    """

    def __init__(self, broker: RabbitMQBroker, worker_id: str, prefetch: int,
                 max_attempts: int, run_id: str | None) -> None:
        self.broker = broker
        self.worker = worker_id
        self.prefetch = prefetch
        self.window = 0
        """The prefetch of our subscription (0: none yet): the batch size last asked for."""
        self.stopped = False
        self.max_attempts = max_attempts
        self.run_id = run_id
        self.cancelled_by_server = False
        # pika sends AMQP heartbeats only while we hand it the connection; the server drops a
        # connection silent for two heartbeat periods.
        self.keep_alive_seconds = broker.params.heartbeat / 3
        self.total: int | None = None
        self.buffer: deque[tuple[int, pika.BasicProperties, bytes]] = deque()
        self.returned: deque[Delivery] = deque()
        self.unacked: set[int] = set()
        self.in_window: set[int] = set()
        """Delivery tags the current subscription brought (some may be settled since)."""
        self._open()

    def _open(self) -> None:
        self.connection = self.broker.open_connection(self.broker.outage_seconds)
        self.channel = self.connection.channel()
        self.channel.tx_select()
        self.buffer.clear()
        self.returned.clear()
        self.unacked.clear()
        self.in_window.clear()
        self.tag: str | None = None
        self.window = 0
        self.cancelled_by_server = False
        # Deleting a queue cancels its consumers: the next fetch then finds out why.
        self.channel.add_on_cancel_callback(self._on_cancel)

    def _subscribe(self, window: int) -> None:
        """Consume with a prefetch of ``window``, replacing the subscription we have.

        A subscription's prefetch is fixed when it starts (RabbitMQ applies basic.qos only to
        consumers started after it), so a new batch size needs a new subscription. Replacing
        it must not hand a delivery back: pika rejects what arrives for a cancelled consumer,
        and RabbitMQ 4 counts each rejection as a run (x-delivery-count). So the old one is
        cancelled only while its window is full: every delivery it may get is already here
        (in ``unacked``), and the server sends it nothing more before an ack, and our acks
        wait in the transaction until a commit."""
        if self.tag is not None:
            if not self._window_full():
                return
            self.channel.basic_cancel(self.tag)
            self.tag = None
        self.channel.basic_qos(prefetch_count=window)
        self.in_window.clear()
        try:
            self.tag = self.channel.basic_consume(self.broker.names["tasks"], self._on_message)
        except amqp.ChannelClosedByBroker as exc:
            self.broker.check_not_lost(exc)
            raise
        self.window = window

    def _window_full(self) -> bool:
        """Whether the subscription holds as many unsettled deliveries as its prefetch, so
        that the server sends it nothing more. Deliveries of an earlier subscription do not
        count: they do not use this one's window."""
        self.in_window &= self.unacked
        return len(self.in_window) >= self.window

    def _on_cancel(self, _method: object) -> None:
        self.cancelled_by_server = True

    def _on_message(self, _channel: object, method: object, props: pika.BasicProperties,
                    body: bytes) -> None:
        self.buffer.append((method.delivery_tag, props, body))  # type: ignore[attr-defined]
        self.unacked.add(method.delivery_tag)  # type: ignore[attr-defined]
        self.in_window.add(method.delivery_tag)  # type: ignore[attr-defined]

    def _reconnect(self, exc: BaseException) -> None:
        self.broker.check_not_lost(exc)
        log.warning("lost %s (%s); reconnecting. Items held on that connection go back to the "
                    "queue and will be redelivered.", self.broker.server, exc)
        # The connection is already broken; closing it is best effort.
        with contextlib.suppress(Exception):
            self.connection.close()
        self._open()

    def _settle(self, action: Callable[[], T]) -> T:
        """Run one transactional settle; a dropped link means the item will come back."""
        try:
            return action()
        except _RECOVERABLE as exc:
            self._reconnect(exc)
            raise ConnectionLost(f"connection to {self.broker.server} dropped") from exc

    def _ack(self, tag: int) -> None:
        self.channel.basic_ack(tag)
        self.unacked.discard(tag)

    def fetch(self, count: int) -> Fetch:
        try:
            if self.cancelled_by_server:
                self._reconnect(ConnectionLost("the server cancelled our subscription"))
            self._resize(count)
            if self.tag is None and not self.returned:
                method, props, body = self.channel.basic_get(self.broker.names["tasks"])
                if method is not None:
                    self.buffer.append((method.delivery_tag, props, body))
                    self.unacked.add(method.delivery_tag)
            elif not self.buffer and not self.returned:
                self.connection.process_data_events(time_limit=0.2)
            taken = []
            while self.returned and len(taken) < count:
                taken.append(self.returned.popleft())
            while self.buffer and len(taken) < count:
                delivery = self._decode(self.buffer.popleft())
                if delivery is not None:
                    taken.append(delivery)
            if taken:
                return Fetch(taken)
            return self._idle()
        except _RECOVERABLE as exc:
            self._reconnect(exc)
            return Fetch()

    def _decode(self, raw: tuple[int, pika.BasicProperties, bytes]) -> Delivery | None:
        tag, props, body = raw
        attempt = _attempt(props.headers or {})
        try:
            item_id_, payload = decode(body)
        except MalformedItem as exc:
            self._bury(tag, {"id": "?", "payload": body.decode("utf-8", "replace")}, str(exc), 1)
            log.error("%s; moved it to the dead letters", exc)
            return None
        if attempt > self.max_attempts:
            self._bury(tag, {"id": item_id_, "payload": payload},
                       "its worker died or disconnected during every run", attempt - 1)
            return None
        return Delivery(Item(item_id_, payload, attempt), tag)

    def _idle(self) -> Fetch:
        """Nothing to lease: drained, or waiting for the seeder, or the queue is not ours.

        The marker is read until seen once, then remembered: a read finds it missing while
        another worker's read holds it, so its absence cannot tell that the state was lost.
        Lost state shows instead as our queues gone (404) or our subscription cancelled."""
        if self.total is None:
            marker = self.broker.peek("seeded")
            if marker is None:
                return Fetch(seeded=False)
            if self.run_id and marker.get("run") not in (None, self.run_id):
                raise OtherRun(other_run_message(self.broker.queue, marker.get("run"),
                                                 self.run_id))
            self.total = marker["total"]
        resolved = self.broker.done_count() + self.broker.count("dead")
        # A transaction is not atomic across queues: a broker that crashes mid-commit can keep
        # a receipt and lose its acks, so those items run again and are counted twice. The
        # count alone could then reach the total early; nothing may be waiting either.
        return Fetch(drained=resolved >= self.total and self.broker.count("tasks") == 0
                     and self.broker.count("delayed") == 0)

    def _resize(self, count: int) -> None:
        """Subscribe with a window of ``count`` items, or move to it once that is safe. With
        prefetch 1 (coarse mode) there is no subscription: each fetch is a basic.get, since a
        pushed-ahead message would be handed back at exit, raising x-delivery-count."""
        wanted = min(count, self.prefetch)
        if self.prefetch > 1 and not self.stopped and wanted != self.window:
            self._subscribe(wanted)

    def ack(self, delivery: Delivery) -> Outcome:
        return self.ack_many([delivery])[0]

    def ack_and_fetch(self, done: Sequence[Delivery],
                      count: int) -> tuple[list[Outcome], Fetch]:
        # Before the acks: the window may be full now, so the size can change (_subscribe).
        self._settle(lambda: self._resize(count))
        return self.ack_many(done), self.fetch(count)

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        # One transaction: every receipt, record and ack land together, or none do.
        def action() -> list[Outcome]:
            self.channel.basic_publish("", self.broker.names["done"], _receipt(len(deliveries)),
                                       pika.BasicProperties(delivery_mode=PERSISTENT))
            self.broker.publish_records(self.channel, [[d.item.id, record_text(d, "done")]
                                                       for d in deliveries])
            tags = {delivery.handle for delivery in deliveries}
            last = max(tags)
            if {tag for tag in self.unacked if tag <= last} == tags:
                # Nothing else unsettled up to `last`: one ack covers the whole batch.
                self.channel.basic_ack(last, multiple=True)
                self.unacked -= tags
            else:
                for tag in tags:
                    self._ack(tag)
            self.channel.tx_commit()
            return [Outcome.DONE] * len(deliveries)

        return self._settle(action) if deliveries else []

    def fail(self, delivery: Delivery, error: str, max_attempts: int,
             retry_delay: float = 0.0) -> Outcome:
        item = delivery.item
        if item.attempt >= max_attempts:
            self._settle(lambda: self._bury(delivery.handle, {"id": item.id,
                                                              "payload": item.payload},
                                            error, item.attempt, record_text(delivery, "dead")))
            return Outcome.DEAD

        def action() -> Outcome:
            self._publish_item(item, item.attempt + 1, error, delay=retry_delay)
            self.channel.basic_publish("", self.broker.names["retries"], item.id,
                                       pika.BasicProperties(delivery_mode=PERSISTENT))
            self._ack(delivery.handle)
            self.channel.tx_commit()
            return Outcome.RETRY

        return self._settle(action)

    def _bury(self, tag: int, body: dict, error: str, attempts: int,
              record: str | None = None) -> None:
        """Dead-letter, with the worker's ``record`` of the last run, or one saying what this
        consumer knows (an item that is not ours, or whose workers kept dying)."""
        self.channel.basic_publish("", self.broker.names["dead"],
                                   json.dumps({**body, "error": error, "attempts": attempts}),
                                   pika.BasicProperties(delivery_mode=PERSISTENT))
        record = record or TaskRecord(body["id"], "dead", attempts, finished=time.time(),
                                      error=error).encode()
        self.broker.publish_records(self.channel, [[body["id"], record]])
        self._ack(tag)
        self.channel.tx_commit()

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Hold the items for ``close`` to give back (see the class docstring)."""
        self.returned.extendleft(reversed(deliveries))

    def _give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Republish unstarted items with their attempt unchanged. A plain requeue would raise
        x-delivery-count, which counts crashed runs, so released items would creep towards
        the dead letters."""
        def action() -> None:
            for delivery in deliveries:
                item = delivery.item
                self._publish_item(item, item.attempt, item_error=None)
                self._ack(delivery.handle)
            self.channel.tx_commit()

        if deliveries:
            try:
                self._settle(action)
            except ConnectionLost:
                log.info("released items return to the queue with the dropped connection")

    def _publish_item(self, item: Item, attempt: int, item_error: str | None,
                      delay: float = 0.0) -> None:
        """To `tasks`, or with ``delay`` seconds above 0 to `delayed`, which hands it to `tasks`
        once its TTL (the delay) runs out."""
        headers: dict[str, object] = {ATTEMPT_HEADER: attempt}
        if item_error is not None:
            headers[ERROR_HEADER] = item_error[:1000]
        milliseconds = int(delay * 1000)
        self.channel.basic_publish(
            "", self.broker.names["delayed" if milliseconds > 0 else "tasks"],
            encode(item.id, item.payload),
            pika.BasicProperties(delivery_mode=PERSISTENT, headers=headers,
                                 expiration=str(milliseconds) if milliseconds > 0 else None))

    def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        try:
            self.connection.process_data_events(time_limit=0)
        except _RECOVERABLE as exc:
            self._reconnect(exc)

    def stop(self) -> None:
        """End the subscription without handing a delivery back to the server.

        pika's basic_cancel rejects the deliveries still in flight, and RabbitMQ 4 counts each
        rejection as a run (x-delivery-count), so an item that never started would lose an
        attempt. So the cancel waits, briefly, for the window to fill: then every delivery the
        server may send us is in the buffer (given back by close, attempt unchanged), as in
        _subscribe. A window that stays short means the queue has nothing more to send. (A
        basic.qos cannot shrink the window: RabbitMQ applies it to later consumers only,
        https://www.rabbitmq.com/docs/consumer-prefetch.)"""
        self.stopped = True
        if self.tag is None:
            return
        try:
            deadline = time.monotonic() + STOP_FILL_SECONDS
            self.connection.process_data_events(time_limit=0)
            while not self._window_full() and time.monotonic() < deadline:
                self.connection.process_data_events(time_limit=0.05)
            self.channel.basic_cancel(self.tag)
            self.tag = None
        except _RECOVERABLE:
            log.debug("connection already closed; unsettled items return to the queue")

    def close(self) -> None:
        """Stop consuming, give back what was prefetched or released but never run, and
        disconnect."""
        try:
            if self.connection.is_open:
                self.stop()
                self.connection.process_data_events(time_limit=0)
                unstarted = [*self.returned,
                             *(d for raw in self.buffer if (d := self._decode(raw)) is not None)]
                self.returned.clear()
                self.buffer.clear()
                self._give_back(unstarted)
                self.connection.close()
        except _RECOVERABLE:
            log.debug("connection already closed; unsettled items return to the queue")
