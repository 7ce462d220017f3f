"""Connections to RabbitMQ that are opened again when they drop.

A broker pod that restarts resets every connection, sometimes twice in a row (it accepts one
while it boots, then closes it); `rabbitmqctl close_all_connections` and a lost node do the same.
Every use of a connection goes through Link.call, which rides that out for up to the outage
tolerance, logging when the broker goes and when it is back, and never lets an error of a dead
connection escape as something else (a broken close once turned a clean stop into exit 5).
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import pika
import pika.exceptions as amqp
from pika.adapters.blocking_connection import BlockingChannel
from pika.adapters.utils.connection_workflow import AMQPConnectorStackTimeout

from ...errors import (
    BrokerAuthError,
    ConfigError,
    ConnectionLost,
    StateLost,
    lost_state_message,
)
from ..outage import Outage, retry_until, unreachable_fix

log = logging.getLogger(__name__)
T = TypeVar("T")

LINK_ERRORS = (amqp.AMQPConnectionError, amqp.ChannelWrongStateError)
"""What a dropped connection raises: the connection's own errors, and a channel's once its
connection is gone."""
NOT_FOUND = 404
"""AMQP reply code for a queue that does not exist: ours were declared, so they were deleted
(or the broker restarted without its data). RabbitMQ also answers it for a queue that exists
but cannot answer now (``queue_unavailable``)."""
UNAVAILABLE_QUEUE_TEXTS = ("may be stopping or being demoted", "is down or inaccessible",
                           "stopped by supervisor", "failed to restart", "due to timeout",
                           "timed out")
"""RabbitMQ's 404 texts for a queue whose process or Raft leader is restarting, on a node that
is down, or too slow to answer (rabbit_amqqueue:priv_absent/4). A RabbitMQ 4.0 node answered
"its leader ... may be stopping or being demoted" for a quorum queue while it recovered from a
restart (a full test run): that queue still holds its tasks, and calling the run's state lost
(exit 6, "turn on broker.persistence") would have failed the Job for nothing."""


class PublishRefused(ConnectionLost):
    """The broker nacked a publish: one of our quorum queues has no leader. On one node a
    restart ends it; on a cluster, a majority of the queue's nodes coming back."""

    fix = ("if it lasts, restart the broker: `rabbitmqctl list_queues name leader` shows the "
           "queue without a leader, and the broker's log why")


def queue_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` is a 404 for a queue that exists but cannot answer now: an outage to
    ride out, not lost state (a queue that is gone is "NOT_FOUND - no queue ...")."""
    return (isinstance(exc, amqp.ChannelClosedByBroker) and exc.reply_code == NOT_FOUND
            and any(text in exc.reply_text for text in UNAVAILABLE_QUEUE_TEXTS))


def parameters(url: str, password: str | None, heartbeat: int,
               connect_timeout: float) -> pika.URLParameters:
    """Connection parameters for ``url``, with the password given apart from it."""
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


def node_parameters(urls: Sequence[str], password: str | None, heartbeat: int,
                    connect_timeout: float) -> list[pika.URLParameters]:
    """Connection parameters for each node of a cluster (or the one broker)."""
    return [parameters(url, password, heartbeat, connect_timeout) for url in urls]


def describe(nodes: Sequence[pika.URLParameters]) -> str:
    """How logs and errors name the broker: its address, or every node's."""
    return "rabbitmq at " + ",".join(f"{node.host}:{node.port}" for node in nodes)


def is_link_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the connection dropped (a memory alarm's blocked publisher is
    not: a new connection would be blocked too)."""
    return isinstance(exc, LINK_ERRORS) and not isinstance(exc, amqp.ConnectionBlockedTimeout)


HANDSHAKE_GRACE_SECONDS = 30.0
"""How long a node that cuts or denies the handshake is taken for one that is booting or
stopping, not for wrong settings. A booting node takes connections before it has recovered its
vhosts and denies them meanwhile; a stopping one drops them, and pika then guesses an
authentication or protocol error from the stage it was at. A pod started beside a restarting
broker must wait for it, not fail its Job with exit 2 (seen in the pod churn test)."""


def login_refused(exc: BaseException) -> bool:
    """Whether the server itself refused the login (403 ACCESS_REFUSED, or no common
    mechanism), rather than dropping the connection while the client was logging in."""
    if isinstance(exc, amqp.ProbableAuthenticationError):
        return "ACCESS_REFUSED" in str(exc)
    return isinstance(exc, amqp.AuthenticationError)


def unavailable_text(exc: amqp.ChannelClosedByBroker) -> str:
    """The server's words for an unavailable queue, short enough for a log line: without the
    process ids and Raft names ({...}, <...>) that make them twice as long."""
    text = re.sub(r"\s*(\{[^}]*\}|<[^>]*>)", "", exc.reply_text)
    return text.replace("failed to perform operation on ", "")


class Link:
    """One connection and channel to ``server``, opened on first use and again after a drop.

    ``nodes`` may be several nodes of one cluster: a connection opens to one of them, each link
    starting at a random one so that clients spread, and the next node is tried when one cannot
    be reached or a connection drops. A cluster's queues are all replicated (queue_arguments in
    messages.py), so any node serves every call, and a lost node costs a reconnect.

    ``on_open`` prepares each new channel (a transaction, callbacks); ``on_lost`` hears of a
    drop before anything is done about it, so that a consumer can say what it held."""

    def __init__(self, nodes: Sequence[pika.URLParameters], server: str, queue: str,
                 outage_seconds: float,
                 on_open: Callable[[BlockingChannel], None] | None = None,
                 on_lost: Callable[[BaseException], None] | None = None) -> None:
        self.nodes, self.server, self.queue = list(nodes), server, queue
        self.params = self.nodes[0]
        self.node_index = random.randrange(len(self.nodes))
        self.outage_seconds = outage_seconds
        self.on_open, self.on_lost = on_open, on_lost
        self.connection: pika.BlockingConnection | None = None
        self.channel: BlockingChannel | None = None
        self.refused_since: float | None = None

    def connect(self, timeout: float) -> None:
        """Open the first connection, waiting up to ``timeout`` seconds for the broker (pods
        often start before it is ready)."""
        retry_until(self._open, timeout, self.server, transient=(amqp.AMQPConnectionError,))

    @property
    def node(self) -> pika.URLParameters:
        """The node the next connection tries first."""
        return self.nodes[self.node_index]

    def next_node(self) -> None:
        self.node_index = (self.node_index + 1) % len(self.nodes)

    def _open(self) -> None:
        """Connect to the first node that answers, from ``node`` on. A node that cannot be
        reached, or does not answer within the connect timeout, is passed over while another
        remains; when none answers, the last one's error says why (a timeout is taken for a
        server that is not RabbitMQ only when every node timed out)."""
        errors: list[Exception] = []
        for _ in self.nodes:
            try:
                self._open_node(self.node)
                return
            except (AMQPConnectorStackTimeout, amqp.AMQPConnectionError) as exc:
                errors.append(exc)
            self.next_node()
        if all(isinstance(exc, AMQPConnectorStackTimeout) for exc in errors):
            raise self._not_rabbitmq() from errors[-1]
        raise next(exc for exc in reversed(errors) if isinstance(exc, amqp.AMQPConnectionError))

    def _open_node(self, params: pika.URLParameters) -> None:
        try:
            connection = pika.BlockingConnection(params)
        except (amqp.ProbableAuthenticationError, amqp.AuthenticationError) as exc:
            if not login_refused(exc):
                self._wait_out(exc, "dropped the connection while logging in")
            raise BrokerAuthError(
                f"{self.server} refused user {self.params.credentials.username!r}: check "
                "WORKQUEUE_BROKER_PASSWORD(_FILE) (in the chart, the broker Secret)"
            ) from exc
        except amqp.ProbableAccessDeniedError as exc:
            self._wait_out(exc, f"vhost {self.params.virtual_host!r} not open yet")
            raise BrokerAuthError(
                f"{self.server} denied access to vhost {self.params.virtual_host!r}: grant "
                "the user permissions there or fix the vhost in the URL"
            ) from exc
        except amqp.IncompatibleProtocolError as exc:
            self._wait_out(exc, "dropped the connection at its start")
            raise self._not_rabbitmq() from exc
        try:
            channel = connection.channel()
            if self.on_open is not None:
                self.on_open(channel)
        except BaseException:
            with contextlib.suppress(Exception):
                connection.close()
            raise
        self.connection, self.channel = connection, channel
        self.refused_since = None

    def _wait_out(self, exc: BaseException, what: str) -> None:
        """A refused or cut handshake is retried as an outage (AMQPConnectionError) until it
        has lasted HANDSHAKE_GRACE_SECONDS; then the caller says what settings to fix."""
        now = time.monotonic()
        self.refused_since = self.refused_since or now
        if now - self.refused_since < HANDSHAKE_GRACE_SECONDS:
            raise amqp.AMQPConnectionError(f"{self.server} {what}") from exc

    def _not_rabbitmq(self) -> ConfigError:
        return ConfigError(
            f"{self.server} accepted the connection but did not answer as RabbitMQ within "
            f"{self.params.stack_timeout:.0f}s: check the port (RabbitMQ listens on 5672) and "
            "the scheme (amqps:// only for a TLS listener)")

    def call(self, action: Callable[[BlockingChannel], T], retry: bool = True) -> T:
        """``action(channel)``. A dropped connection is opened again, for up to the outage
        tolerance, and the action run again on the new one; with ``retry`` False (a settle,
        whose delivery tags die with the connection) it raises ConnectionLost instead.
        A queue that no longer exists raises StateLost."""
        outage: Outage | None = None
        while True:
            try:
                if self.channel is None:
                    if not retry:
                        raise ConnectionLost(f"connection to {self.server} dropped")
                    self._open()
                result = action(self.channel)  # type: ignore[arg-type]
            except amqp.ChannelClosedByBroker as exc:
                if not queue_unavailable(exc):
                    self.check_not_lost(exc)
                    # The broker closed the channel over this call (a real error): the next
                    # call gets a fresh one.
                    self.drop()
                    raise
                # A queue that cannot answer now: the channel, and the delivery tags on it,
                # are gone as with a dropped connection, and the call is tried again as then.
                failure: BaseException = ConnectionLost(unavailable_text(exc))
                failure.__cause__ = exc
            except amqp.NackError as exc:
                # The broker would not store a publish (a quorum queue without a leader): the
                # settle that made it sent no ack, and its deliveries go back to their queue
                # with this connection, as on a drop; the call is tried again as then.
                failure = PublishRefused(f"{self.server} refused to store a message (a queue "
                                         "without a leader)")
                failure.__cause__ = exc
            except Exception as exc:
                # A settle inside ``action`` (a fetch moving a task that came back) raises
                # ConnectionLost when the connection drops under it; the whole action is then
                # run again on a new one, as for a drop anywhere else in it.
                if not (is_link_error(exc) or (retry and isinstance(exc, ConnectionLost))):
                    raise
                failure = exc
            else:
                if outage is not None:
                    outage.ended()
                return result
            if self.channel is not None:
                self.lost(failure)
            if not retry:
                if isinstance(failure, ConnectionLost):
                    raise failure  # what the broker said, for the log and the final error
                raise ConnectionLost(f"connection to {self.server} dropped") from failure
            if outage is None:
                outage = Outage(self.server, self.outage_seconds, unreachable_fix(self.server))
            outage.wait(failure)

    def lost(self, exc: BaseException) -> None:
        """The connection dropped: say so (on_lost) and let it go. The next connection starts
        at the next node: the one that dropped it may be gone."""
        if self.on_lost is not None:
            self.on_lost(exc)
        self.drop()
        self.next_node()

    def check_not_lost(self, exc: BaseException) -> None:
        """Raise StateLost if ``exc`` says one of our queues no longer exists."""
        if isinstance(exc, amqp.ChannelClosedByBroker) and exc.reply_code == NOT_FOUND:
            raise StateLost(lost_state_message(self.queue, self.server)) from exc

    def drop(self) -> None:
        """Close the connection, whatever state it is in; the next call opens a new one."""
        connection, self.connection, self.channel = self.connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(Exception):
                connection.close()

    close = drop
