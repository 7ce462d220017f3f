"""One worker's view of a RabbitMQ queue: a subscription with prefetch (basic.get at batch 1)
on a channel in confirm mode.

Each settle publishes first (a receipt, a record, a retry, a move to another queue) and acks
only once the broker has confirmed every publish: a worker or broker that dies in between
leaves a copy (the task runs again; receipts count each task once), never a loss. A
transaction does not give that: AMQP transactions are not atomic across queues, and RabbitMQ
commits one whose publish into a quorum queue without a leader was dropped (reproduced on 3.10
and 4.0: tests/integration/test_rabbitmq_settles.py), where a confirm is a nack."""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pika
import pika.exceptions as amqp
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from ...broker import Consumer, Delivery, Fetch, Outcome, record_text
from ...errors import ConnectionLost, OtherRun, other_run_message
from ...message import Item, MalformedItem, decode, encode, task_text
from ...report import TaskRecord
from . import pardons
from .broker import RabbitMQBroker
from .connection import Link, is_link_error
from .messages import (
    ATTEMPT_HEADER,
    ERROR_HEADER,
    SUSPECT_HEADER,
    TOKEN_HEADER,
    attempt,
    fresh_token,
    persistent,
    receipt,
    returns,
    token,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

STOP_FILL_SECONDS = 0.25
"""At shutdown, how long the subscription may wait for deliveries already on their way."""
ISOLATED_CHECK_SECONDS = 1.0
"""How often a worker looks for tasks to run alone while there are none."""
VOUCH_CONNECT_SECONDS = 3.0
"""Longest a heartbeat waits to reach the broker on a connection of its own to vouch for the
tasks its worker held when its connection dropped: the next heartbeat tries again."""


@dataclass(frozen=True)
class Handle:
    """How a delivery is settled: its tag, on the connection (counted from 1) it came on."""

    connection: int
    tag: int


class RabbitConsumer(Consumer):
    """Consumes with prefetch on a channel in confirm mode; a dropped connection is opened
    again (connection.Link), and what it held goes back to the queue.

    Items given back (``release``) stay with this consumer until ``close``, which cancels the
    subscription first and only then republishes them. Republished while subscribed, they would
    come straight back into our prefetch window, and the cancel would hand those back to the
    server, which counts each such return as a crashed run (x-delivery-count).
    """

    def __init__(self, broker: RabbitMQBroker, worker_id: str, prefetch: int,
                 lease_seconds: float, max_attempts: int, run_id: str | None) -> None:
        self.broker = broker
        self.worker = worker_id
        self.prefetch = prefetch
        self.stopped = False
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.run_id = run_id
        # pika sends AMQP heartbeats only while we hand it the connection; the server drops a
        # connection silent for two heartbeat periods. A dropped one must be vouched for within
        # a lease (pardons.py), so beats come at least three times a lease.
        self.keep_alive_seconds = min(broker.params.heartbeat, lease_seconds) / 3
        self.total: int | None = None
        self.buffer: deque[tuple[int, pika.BasicProperties, bytes]] = deque()
        self.returned: deque[Delivery] = deque()
        self.unacked: set[int] = set()
        self.in_window: set[int] = set()
        """Delivery tags the current subscription brought (some may be settled since)."""
        self.isolated: set[int] = set()
        """Delivery tags taken from the `isolated` queue (each run alone)."""
        self.fetched_alone: set[int] = set()
        """Delivery tags taken from `tasks` by basic.get, one at a time: each runs alone."""
        self.alone: dict[int, tuple[str, str]] = {}
        """Unsettled deliveries held alone: tag -> (item id, token), to vouch for if the
        connection drops (pardons.py)."""
        self.owed: list[tuple[str, str]] = []
        """Pardons not yet published: what was held alone on connections that dropped."""
        self.next_isolated_check = 0.0
        self.tag: str | None = None
        self.window = 0
        """The prefetch of our subscription (0: none yet): the batch size last asked for."""
        self.cancelled_by_server = False
        self.connections = 0
        """Connections opened so far: a delivery's handle names the one it came on."""
        self.orphans: list[tuple[pika.BasicProperties, bytes]] = []
        """Unstarted deliveries held on a connection lost on a cluster, to publish again."""
        self.link = Link(broker.nodes, broker.server, broker.queue, broker.outage_seconds,
                         on_open=self._on_open, on_lost=self._on_lost)
        self.link.connect(broker.outage_seconds)

    def _on_open(self, channel: BlockingChannel) -> None:
        """A new connection: nothing held, no subscription yet."""
        self.connections += 1
        channel.confirm_delivery()
        self.buffer.clear()
        self.returned.clear()
        self.unacked.clear()
        self.in_window.clear()
        self.isolated.clear()
        self.fetched_alone.clear()
        self.alone.clear()
        self.next_isolated_check = 0.0
        self.tag = None
        self.window = 0
        self.cancelled_by_server = False
        # Deleting a queue cancels its consumers: the next fetch then finds out why.
        channel.add_on_cancel_callback(self._on_cancel)
        if self.owed:
            self._pay_owed(channel)
        if self.orphans:
            self._publish_orphans(channel)

    def _on_lost(self, _exc: BaseException) -> None:
        """What a dropped connection costs: the server puts back what it held. On a cluster
        the connection's node may be gone, and RabbitMQ 4.0.5 then kept deliveries checked out
        to its consumers until that node came back (a 3-node test: 32 tasks, and a run that
        waited on them): so what we held and had not started goes back as copies too. A task
        then may run twice; receipts name their tasks, so it counts once."""
        held = len(self.unacked) + len(self.returned)
        if held:
            log.warning("the %d task(s) leased on the lost connection go back to the queue and "
                        "run again", held)
        self.owed.extend(self.alone.values())
        self.alone.clear()
        if self.broker.replicas > 1:
            self.orphans.extend((props, body) for _tag, props, body in self.buffer)
            self.orphans.extend((persistent(headers={ATTEMPT_HEADER: d.item.attempt}),
                                 encode(d.item.id, d.item.payload)) for d in self.returned)

    def _publish_orphans(self, channel: BlockingChannel) -> None:
        """Publish again, with their attempt unchanged, the unstarted tasks held on a lost
        connection of a cluster (_on_lost)."""
        for props, body in self.orphans:
            headers = {key: value for key, value in (props.headers or {}).items()
                       if key != "x-delivery-count"}
            headers[TOKEN_HEADER] = fresh_token()
            channel.basic_publish("", self.broker.names["tasks"], body,
                                  persistent(headers=headers))
        log.info("published again the %d unstarted task(s) held on the lost connection",
                 len(self.orphans))
        self.orphans.clear()

    def _subscribe(self, window: int) -> None:
        """Consume with a prefetch of ``window``, replacing the subscription we have.

        A subscription's prefetch is fixed when it starts (RabbitMQ applies basic.qos only to
        consumers started after it), so a new batch size needs a new subscription. Replacing
        it must not hand a delivery back: pika rejects what arrives for a cancelled consumer,
        and RabbitMQ 4 counts each rejection as a run (x-delivery-count). So the old one is
        cancelled only while its window is full: every delivery it may get is already here
        (in ``unacked``), and the server sends it nothing more before an ack; none is sent
        between this check and the cancel. A queue that is gone raises StateLost
        (Link.call)."""
        channel = self.link.channel
        if self.tag is not None:
            if not self._window_full():
                return
            channel.basic_cancel(self.tag)
            self.tag = None
        channel.basic_qos(prefetch_count=window)
        self.in_window.clear()
        self.tag = channel.basic_consume(self.broker.names["tasks"], self._on_message)
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

    def _settle(self, action: Callable[[], T]) -> T:
        """Run one settle (publishes, then acks); a dropped connection raises ConnectionLost,
        since the deliveries it names went back to the queue with it. On a cluster, where they may
        instead stay with a lost node until it returns (_on_lost), the settle is redone on a
        new connection without its acks: its receipts, records, retries and dead letters are
        published, and a delivery that comes back later runs again and counts once."""
        try:
            return self._settle_once(action)
        except ConnectionLost as exc:
            if self.broker.replicas == 1:
                raise
            log.info("recording on another node what was settled on the lost connection (%s)",
                     exc)
            # On the new connection the deliveries' handles are stale: their acks are left out.
            return self.link.call(lambda _channel: action())

    def _settle_once(self, action: Callable[[], T]) -> T:
        try:
            return self.link.call(lambda _channel: action(), retry=False)
        except amqp.ChannelClosedByBroker as exc:
            # Seen when our queue was deleted under us: the ack of a delivery it held is an
            # "unknown delivery tag" (406). The next fetch, on a new connection, finds the
            # queue gone (StateLost) or carries on.
            raise ConnectionLost(f"{self.broker.server} closed the channel: {exc}") from exc

    def _tag(self, handle: Handle) -> int | None:
        """The delivery tag of ``handle`` on the current connection; None if it came on an
        earlier one, with which the server took it back (a tag names another delivery on each
        connection: acking it there would settle a task that never ran)."""
        return handle.tag if handle.connection == self.connections else None

    def _ack(self, handle: Handle) -> None:
        tag = self._tag(handle)
        if tag is not None:
            self.link.channel.basic_ack(tag)
            self._forget({tag})

    def _forget(self, tags: set[int]) -> None:
        """Settled deliveries: no longer held, alone or otherwise."""
        self.unacked -= tags
        self.isolated -= tags
        self.fetched_alone -= tags
        for tag in tags:
            self.alone.pop(tag, None)

    def fetch(self, count: int) -> Fetch:
        if self.cancelled_by_server:
            # The queue was deleted (or its leader moved): a new connection finds out which.
            self.link.drop()
        return self.link.call(lambda _channel: self._fetch(count))

    def _fetch(self, count: int) -> Fetch:
        self._resize(count)
        alone = self._take_isolated()
        if alone is not None:
            return Fetch([alone])
        if self.tag is None and not self.returned:
            method, props, body = self.link.channel.basic_get(self.broker.names["tasks"])
            if method is not None:
                self.buffer.append((method.delivery_tag, props, body))
                self.unacked.add(method.delivery_tag)
                self.fetched_alone.add(method.delivery_tag)
        elif not self.buffer and not self.returned:
            self.link.connection.process_data_events(time_limit=0.2)
        taken = []
        while self.returned and len(taken) < count:
            taken.append(self.returned.popleft())
        while self.buffer and len(taken) < count:
            delivery = self._decode(self.buffer.popleft())
            if delivery is not None:
                taken.append(delivery)
        if taken:
            return Fetch(taken)
        # What this fetch just isolated (suspects in the window) may run now.
        alone = self._take_isolated()
        return Fetch([alone]) if alone is not None else self._idle()

    def _take_isolated(self) -> Delivery | None:
        """A task from the `isolated` queue, to run alone; None when it holds none (looked at
        once a second while it is empty: a round trip per fetch would cost throughput)."""
        now = time.monotonic()
        if now < self.next_isolated_check:
            return None
        channel = self.link.channel
        while True:
            method, props, body = channel.basic_get(self.broker.names["isolated"])
            if method is None:
                self.next_isolated_check = now + ISOLATED_CHECK_SECONDS
                return None
            self.unacked.add(method.delivery_tag)
            delivery = self._parse(method.delivery_tag, props, body)
            if delivery is None:
                continue
            headers = props.headers or {}
            if returns(headers):
                # Its worker died while it ran alone, or only lost its connection.
                self._suspect(delivery, headers)
                continue
            if SUSPECT_HEADER in headers and self._judge(delivery, str(headers[SUSPECT_HEADER])):
                continue
            self.isolated.add(method.delivery_tag)
            self.alone[method.delivery_tag] = (delivery.item.id, token(headers))
            return delivery

    def _parse(self, tag: int, props: pika.BasicProperties, body: bytes) -> Delivery | None:
        """The delivery, or None for a message that is not ours (it is dead-lettered)."""
        try:
            item_id_, payload = decode(body)
        except MalformedItem as exc:
            self._bury(Handle(self.connections, tag),
                       {"id": "?", "payload": body.decode("utf-8", "replace")}, str(exc), 1)
            log.error("%s; moved it to the dead letters", exc)
            return None
        return Delivery(Item(item_id_, payload, attempt(props.headers or {})),
                        Handle(self.connections, tag))

    def _decode(self, raw: tuple[int, pika.BasicProperties, bytes]) -> Delivery | None:
        """A delivery of the `tasks` queue to run, or None if it is not to run in this batch.
        One that came back from a worker that died (x-delivery-count) is charged if it was
        fetched alone (basic.get, coarse mode), and isolated otherwise: a worker with a
        prefetch window runs one task at a time, so only one of those it held had started.
        Whether our subscription is still on says nothing of where a delivery came from:
        ``close`` decodes the window's leftovers after cancelling it."""
        tag, props, body = raw
        delivery = self._parse(tag, props, body)
        headers = props.headers or {}
        if delivery is None:
            return None
        if not returns(headers):
            if tag in self.fetched_alone:
                self.alone[tag] = (delivery.item.id, token(headers))
            return delivery
        if tag in self.fetched_alone:
            self._suspect(delivery, headers)
        else:
            self._settle(lambda: self._move(delivery, "isolated", delivery.item.attempt))
        return None

    def _suspect(self, delivery: Delivery, headers: dict) -> None:
        """A task back from a worker that held it alone: dead, or only its connection dropped
        (a broker restart, a network fault). It waits a lease in `suspects` for a pardon, and
        is judged when it reaches `isolated` (``_judge``)."""
        came_back = returns(headers)
        log.info("task %s came back from a worker that held it alone; it waits %.0fs for that "
                 "worker's word that it is alive, or is charged the run", task_text(delivery.item),
                 self.lease_seconds)
        self._settle(lambda: self._move(delivery, "suspects", delivery.item.attempt,
                                        suspect=f"{token(headers)}:{came_back}"))

    def _judge(self, delivery: Delivery, suspect: str) -> bool:
        """A suspect back from its wait: charge the returns nobody vouched for (True), or let
        it run now, uncharged (False)."""
        held_as, _, came_back = suspect.rpartition(":")
        runs = int(came_back) - self.broker.redeem_pardons(delivery.item.id, held_as,
                                                           int(came_back))
        if runs:
            self._charge(delivery, runs)
            return True
        log.info("task %s came back from a lost connection, not a crash: it runs again, "
                 "uncharged", task_text(delivery.item))
        return False

    def _charge(self, delivery: Delivery, runs: int) -> None:
        """Charge ``runs`` runs its worker died in; dead-letter it once max attempts are
        charged, else queue it again to run alone."""
        item = delivery.item
        charged = item.attempt - 1 + runs
        if charged >= self.max_attempts:
            error = ("its worker died while running it (killed, OOM-killed, evicted or lost with "
                     "its node)")
            log.error("task %s dead-lettered after %d attempts: %s", task_text(item), charged,
                      error)
            self._settle(lambda: self._bury(delivery.handle, {"id": item.id,
                                                              "payload": item.payload},
                                            error, charged))
        else:
            self._settle(lambda: self._move(delivery, "isolated", charged + 1))

    def _move(self, delivery: Delivery, role: str, next_attempt: int,
              suspect: str | None = None) -> None:
        """Republish to queue ``role`` with its attempt, then ack it."""
        self._publish_item(delivery.item, next_attempt, item_error=None, role=role,
                           suspect=suspect)
        self._ack(delivery.handle)
        self.next_isolated_check = 0.0

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
        # A settle's receipt lands before its acks: a worker or broker that dies in between
        # keeps the receipt and loses the acks, so those items run again, and the count alone
        # could reach the total early (a second dead letter for one item counts twice); nothing
        # may be waiting either.
        return Fetch(drained=resolved >= self.total and self.broker.waiting() == 0)

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
        # The receipt and records are confirmed before the acks: a crash between leaves the
        # tasks to run again, counted once (records.done_count).
        def action() -> list[Outcome]:
            self.link.channel.basic_publish(
                "", self.broker.names["done"], receipt([d.item.id for d in deliveries]),
                persistent())
            self.broker.publish_records(self.link.channel, [[d.item.id, record_text(d, "done")]
                                                       for d in deliveries])
            current = [d.handle for d in deliveries if self._tag(d.handle) is not None]
            tags = {handle.tag for handle in current}
            last = max(tags, default=0)
            # Not with a task taken by basic.get beside the subscription: a delivery with a
            # lower tag may still wait to be dispatched to us, and the ack would take it too.
            if (len(current) == len(deliveries) and not tags & self.isolated
                    and {tag for tag in self.unacked if tag <= last} == tags):
                # Nothing else unsettled up to `last`: one ack covers the whole batch.
                self.link.channel.basic_ack(last, multiple=True)
                self._forget(tags)
            else:
                for handle in current:
                    self._ack(handle)
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
            self.link.channel.basic_publish("", self.broker.names["retries"], item.id,
                                       persistent())
            self._ack(delivery.handle)
            return Outcome.RETRY

        return self._settle(action)

    def _bury(self, handle: Handle, body: dict, error: str, attempts: int,
              record: str | None = None) -> None:
        """Dead-letter, with the worker's ``record`` of the last run, or one saying what this
        consumer knows (an item that is not ours, or whose workers kept dying)."""
        self.link.channel.basic_publish("", self.broker.names["dead"],
                                   json.dumps({**body, "error": error, "attempts": attempts}),
                                   persistent())
        record = record or TaskRecord(body["id"], "dead", attempts, finished=time.time(),
                                      error=error).encode()
        self.broker.publish_records(self.link.channel, [[body["id"], record]])
        self._ack(handle)

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Hold the items for ``close`` to give back (see the class docstring)."""
        self.returned.extendleft(reversed(deliveries))

    def _give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Republish unstarted items with their attempt unchanged. A plain requeue would raise
        x-delivery-count, which counts crashed runs, so released items would creep towards
        the dead letters."""
        def action() -> None:
            for delivery in deliveries:
                role = "isolated" if self._tag(delivery.handle) in self.isolated else "tasks"
                self._publish_item(delivery.item, delivery.item.attempt, item_error=None,
                                   role=role)
                self._ack(delivery.handle)

        if deliveries:
            try:
                self._settle(action)
            except ConnectionLost:
                log.info("released items return to the queue with the dropped connection")

    def _publish_item(self, item: Item, attempt: int, item_error: str | None,
                      delay: float = 0.0, role: str = "tasks", suspect: str | None = None) -> None:
        """To queue ``role`` (`tasks`), or with ``delay`` seconds above 0 to `delayed`, which
        hands it to `tasks` once its TTL (the delay) runs out; a ``suspect`` waits a lease in
        `suspects`, which hands it to `isolated`."""
        headers: dict[str, object] = {ATTEMPT_HEADER: attempt, TOKEN_HEADER: fresh_token()}
        if item_error is not None:
            headers[ERROR_HEADER] = item_error[:1000]
        milliseconds = int(delay * 1000)
        if suspect is not None:
            headers[SUSPECT_HEADER] = suspect
            milliseconds = int(self.lease_seconds * 1000)
        elif milliseconds > 0:
            role = "delayed"
        self.link.channel.basic_publish(
            "", self.broker.names[role],
            encode(item.id, item.payload),
            persistent(headers=headers,
                       expiration=str(milliseconds) if milliseconds > 0 else None))

    def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        connection = self.link.connection
        if connection is not None:
            try:
                connection.process_data_events(time_limit=0)
            except Exception as exc:
                if not is_link_error(exc):
                    raise
                # What ran on it is lost: its settle raises ConnectionLost, and the next fetch
                # opens a new connection.
                self.link.lost(exc)
        if self.owed:
            self._vouch_aside()

    def _pay_owed(self, channel: BlockingChannel) -> None:
        """Publish the pardons we owe on ``channel`` (in confirm mode), then forget them."""
        pardons.publish(channel, self.broker.names["pardons"], self.owed)
        self.owed.clear()

    def _vouch_aside(self) -> None:
        """Publish the pardons we owe now, on a connection of our own: the tasks we held
        alone wait only a lease for them, while our link stays down until the running task
        ends (a new link now would not know its delivery tags). One short try per beat."""
        params = copy.copy(self.link.node)
        params.stack_timeout = params.socket_timeout = VOUCH_CONNECT_SECONDS
        try:
            connection = pika.BlockingConnection(params)
        except (amqp.AMQPError, OSError, AMQPConnectorStackTimeout):
            # The next beat tries the next node of a cluster: this one may be gone.
            self.link.next_node()
            return
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            self._pay_owed(channel)
        except Exception as exc:
            if not is_link_error(exc):
                raise
        finally:
            with contextlib.suppress(Exception):
                connection.close()

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
        connection = self.link.connection
        if self.tag is None or connection is None:
            return
        try:
            deadline = time.monotonic() + STOP_FILL_SECONDS
            connection.process_data_events(time_limit=0)
            while not self._window_full() and time.monotonic() < deadline:
                connection.process_data_events(time_limit=0.05)
            self.link.channel.basic_cancel(self.tag)
            self.tag = None
        except Exception as exc:
            if not is_link_error(exc):
                raise
            self.link.lost(exc)

    def close(self) -> None:
        """Stop consuming, give back what was prefetched or released but never run, and
        disconnect. Never raises for a connection that is already gone."""
        try:
            self.stop()
            connection = self.link.connection
            if connection is not None:
                connection.process_data_events(time_limit=0)
                unstarted = [*self.returned,
                             *(d for raw in self.buffer if (d := self._decode(raw)) is not None)]
                self.returned.clear()
                self.buffer.clear()
                self._give_back(unstarted)
        except Exception as exc:
            if not is_link_error(exc):
                raise
            log.info("the connection was already gone; unsettled items return to the queue")
        finally:
            self.link.close()
