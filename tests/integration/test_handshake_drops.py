"""A RabbitMQ node that is stopping or booting drops connections mid-handshake, and pika names
the drop after the stage it was at: a "probable authentication error" while logging in, an
"incompatible protocol" at the start. Taken at its word, a pod started beside a restarting
broker failed its Job with exit 2, bad settings (the pod churn test, RabbitMQ 3.10). Here a
real socket peer drops the handshake at each stage, as such a node does; a real server's
explicit refusal (403 ACCESS_REFUSED) stays a settings error at once (test_resilience.py).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pika
import pytest
from pika import frame, spec

from workqueue.brokers.rabbitmq import RabbitMQBroker, connection
from workqueue.brokers.rabbitmq.connection import login_refused
from workqueue.errors import BrokerAuthError, BrokerUnavailable, ConfigError


class DroppingNode:
    """Accepts AMQP connections on loopback and drops each one at ``stage``: "start" (on the
    protocol header) or "login" (after sending Connection.Start, on the client's Start-Ok)."""

    def __init__(self, stage: str) -> None:
        self.stage, self.connections = stage, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                peer, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with peer:
                peer.settimeout(5)
                peer.recv(8)  # b"AMQP\x00\x00\x09\x01"
                if self.stage == "login":
                    start = spec.Connection.Start(server_properties={"product": "RabbitMQ"},
                                                  mechanisms="PLAIN", locales="en_US")
                    peer.sendall(frame.Method(0, start).marshal())
                    peer.recv(4096)  # Start-Ok: the credentials, then the drop

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(params=["start", "login"])
def dropping_node(request) -> Iterator[DroppingNode]:
    node = DroppingNode(request.param)
    yield node
    node.close()


def test_a_node_that_drops_the_handshake_is_waited_for_as_an_outage(dropping_node):
    # Given a node that drops every handshake, and a connect timeout inside the grace period
    url = f"amqp://wq@127.0.0.1:{dropping_node.port}/%2F"
    # When a worker connects, Then it retries as for a broker that is down (exit 5 once the
    # timeout is over), never calling it bad settings (exit 2)
    with pytest.raises(BrokerUnavailable):
        RabbitMQBroker(url, "q", "secret", connect_timeout=2)
    assert dropping_node.connections >= 2


def test_a_handshake_dropped_past_the_grace_is_a_settings_error(dropping_node, monkeypatch):
    # Given a grace period shorter than the connect timeout
    monkeypatch.setattr(connection, "HANDSHAKE_GRACE_SECONDS", 1.0)
    url = f"amqp://wq@127.0.0.1:{dropping_node.port}/%2F"
    # Then a node that never completes a handshake is, in the end, a settings error
    with pytest.raises((BrokerAuthError, ConfigError)):
        RabbitMQBroker(url, "q", "secret", connect_timeout=30)
    assert dropping_node.connections >= 2


def test_only_the_servers_own_refusal_is_a_refused_login():
    # pika wraps the repr of what ended the handshake (pika/connection.py _on_stream_terminated)
    refused = pika.exceptions.ConnectionClosedByBroker(
        403, "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN")
    dropped = pika.exceptions.StreamLostError("Transport indicated EOF")
    forced = pika.exceptions.ConnectionClosedByBroker(
        320, "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'")
    probable = pika.exceptions.ProbableAuthenticationError
    assert login_refused(probable(repr(refused)))
    assert not login_refused(probable(repr(dropped)))
    assert not login_refused(probable(repr(forced)))
    assert login_refused(pika.exceptions.AuthenticationError("PLAIN"))
