"""A RabbitMQ broker given as several nodes (one URL each, as the chart gives a cluster's):
a node that cannot be reached is passed over, and queues declared for another replica count
are one clear line, not a 406 traceback."""

from __future__ import annotations

import pytest

from conftest import unique_queue
from workqueue.brokers.rabbitmq import RabbitMQBroker, connection
from workqueue.errors import ConfigError
from workqueue.local import free_port


def test_a_node_that_cannot_be_reached_is_passed_over(rabbitmq_server, monkeypatch):
    # Given two nodes, the first of which nothing listens on, and a link that starts there
    monkeypatch.setattr(connection.random, "randrange", lambda _n: 0)
    down = f"amqp://{rabbitmq_server.user}@127.0.0.1:{free_port()}/%2F"
    broker = RabbitMQBroker([down, rabbitmq_server.url], unique_queue(),
                            rabbitmq_server.password, connect_timeout=10, replicas=1)
    try:
        # Then it connects to the second, at once, and works there
        assert broker.link.node.port == rabbitmq_server.port
        assert broker.status().pending == 0
        # And a dropped connection comes back on the other node first, then this one again
        rabbitmq_server.close_connections()
        assert broker.status().pending == 0
        assert broker.link.node.port == rabbitmq_server.port
    finally:
        broker.purge()
        broker.close()


def test_a_queue_declared_for_other_replicas_is_one_clear_line(rabbitmq_server):
    # Given a queue first declared on one node
    queue = unique_queue()
    first = RabbitMQBroker(rabbitmq_server.url, queue, rabbitmq_server.password,
                           connect_timeout=10)
    try:
        # When a process opens it as replicated to three nodes
        with pytest.raises(ConfigError) as raised:
            RabbitMQBroker(rabbitmq_server.url, queue, rabbitmq_server.password,
                           connect_timeout=10, replicas=3)
        # Then it is refused with the fix, and the queue is unharmed
        assert "declared with other settings than 3 broker replica(s)" in str(raised.value)
        assert "purge it and seed again" in str(raised.value)
        assert first.status().pending == 0
    finally:
        first.purge()
        first.close()
