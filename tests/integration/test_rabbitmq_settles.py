"""A settle publishes first and acks only once the broker has confirmed each publish
(brokers/rabbitmq/consumer.py), because a transaction does not protect a publish into a quorum
queue without a leader: RabbitMQ drops the publish and commits the ack. In confirm mode it nacks
the publish instead.

A dead-letter supervisor that gave up leaves such queues behind (rabbitmq-server#16652): each
waiting room declared afterwards is created and not started (RabbitNode.stop_dead_lettering).
The nodes are real, one of their own per version, since that fault lasts until a restart.
"""

from __future__ import annotations

import os
import subprocess
import time

import pika.exceptions as amqp
import pytest

from conftest import VERSIONS, WORKQUEUE, unique_queue, write_tasks
from servers import RabbitNode
from workqueue import seed
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.brokers.rabbitmq.broker import INTERNAL_ERROR
from workqueue.brokers.rabbitmq.messages import persistent
from workqueue.errors import EXIT_BROKER_UNREACHABLE, ConnectionLost

pytestmark = pytest.mark.slow


def ready(broker: RabbitMQBroker, role: str, expected: int, seconds: float = 10.0) -> int:
    """The ready count of ``role`` once it is ``expected``, or the last one seen: a dropped
    connection's deliveries are requeued a moment after it closes."""
    deadline = time.monotonic() + seconds
    while (count := broker.count(role)) != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def publish_in_a_transaction(broker: RabbitMQBroker, role: str) -> None:
    """Publish one message to ``role`` in a transaction, as settles did before."""
    side = broker.link.connection.channel()
    side.tx_select()
    side.basic_publish("", broker.names[role], b"probe", persistent())
    try:
        side.tx_commit()
    except amqp.ConnectionClosedByBroker as exc:
        assert exc.reply_code == INTERNAL_ERROR, exc
        return
    side.close()


@pytest.mark.parametrize("version", ["rabbitmq-3.10", "rabbitmq-4.0"])
def test_a_retry_the_broker_cannot_store_is_not_acked(version, tmp_path):
    node = RabbitNode(root=VERSIONS[version]).start()
    try:
        # Given a queue whose `delayed` room has no leader (declared after the fault)
        node.stop_dead_lettering()
        broker = RabbitMQBroker(node.url, unique_queue(), node.password, outage_seconds=30)
        # (where a transaction loses its publish: the commit succeeds, or the connection closes
        # with 541, both seen on 3.10 and 4.0; the message never arrives)
        publish_in_a_transaction(broker, "delayed")
        assert ready(broker, "delayed", 1, seconds=2) == 0
        # And one task, leased
        write_tasks(tmp_path / "t.txt", 1)
        seed(broker, str(tmp_path / "t.txt"))
        consumer = broker.consumer("w", 1, 60, 3)
        delivery = consumer.fetch(1).deliveries[0]
        # When its run fails and it is to wait out a retry delay in `delayed`
        with pytest.raises(ConnectionLost, match="refused to store a message"):
            consumer.fail(delivery, "exit 1", 3, retry_delay=5)
        consumer.close()
        # Then it was not acked: it is back in `tasks` to run again, and no retry is counted
        assert ready(broker, "tasks", 1) == 1
        assert broker.count("retries") == 0
        # And a worker whose every retry is refused so ends within its outage tolerance, with
        # the broker's refusal, instead of waiting for ever (exit 5: the broker unreachable)
        env = {**os.environ, "WORKQUEUE_BROKER_URL": node.url,
               "WORKQUEUE_BROKER_PASSWORD": node.password, "WORKQUEUE_QUEUE": broker.queue,
               "WORKQUEUE_OUTAGE_SECONDS": "3", "WORKQUEUE_RETRY_DELAY": "5"}
        worker = subprocess.run([*WORKQUEUE, "work", "--", "sh", "-c", "exit 1"],
                                capture_output=True, text=True, timeout=120, env=env)
        assert worker.returncode == EXIT_BROKER_UNREACHABLE, worker.stderr
        assert "refused to store a message" in worker.stderr
        assert "restart the broker" in worker.stderr.splitlines()[-1]
        # And the task is still there, to run once the broker is restarted
        assert ready(broker, "tasks", 1) + broker.count("isolated") == 1
        broker.close()
    finally:
        node.cleanup()
