"""A delivery tag names a delivery on one connection only: on the next, the same number is
another task. On a cluster, a worker whose connection drops mid-batch records what it settled
on a new connection (consumer._settle); the batch's later settles then run there too, and
acking their old tags would settle tasks the new connection was handed and never ran. A 3-node
test hung so after losing a node: every task had run, and workers waited for tasks counted
neither done nor waiting.

One node stands in for the cluster (the client takes the cluster's path with replicas above 1);
a second consumer stands in for RabbitMQ 4.0.5 keeping a lost node's deliveries checked out,
so that the new connection is handed other tasks.
"""

from __future__ import annotations

import os

import pytest
from held_deliveries import hold_unsettled

from cli_workers import BOUND_SECONDS, Workers
from conftest import unique_queue, write_tasks
from workqueue import seed
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.errors import EXIT_OK

pytestmark = pytest.mark.slow

TASKS = 20
BATCH = 10


def test_a_batch_settled_across_a_lost_connection_settles_nothing_else(rabbitmq_server,
                                                                        tmp_path):
    queue = unique_queue()
    broker = RabbitMQBroker(rabbitmq_server.url, queue, rabbitmq_server.password, replicas=3)
    tasks = write_tasks(tmp_path / "t.txt", TASKS)
    seed(broker, str(tmp_path / "t.txt"))
    # Given a worker running a batch whose connection drops (the batch's tasks then stay
    # checked out elsewhere, as on a lost node)
    consumer = broker.consumer("stale", BATCH, 60, 3)
    first = []
    while len(first) < BATCH:
        first.extend(consumer.fetch(BATCH - len(first)).deliveries)
    rabbitmq_server.close_connections()
    holder = hold_unsettled(broker, BATCH)
    # When a task of it fails (its retry is recorded on a new connection), and the others then
    # settle there, as that connection is handed the other tasks ...
    consumer.fail(first[0], "exit code 1", 3)
    consumer.ack_and_fetch(first[1:], BATCH)
    consumer.close()
    holder.close()
    # Then those are left to run: a worker finishes the run, and every task ran
    witness = tmp_path / "witness.txt"
    env = {"WORKQUEUE_BROKER_URL": rabbitmq_server.url,
           "WORKQUEUE_BROKER_PASSWORD": rabbitmq_server.password, "WORKQUEUE_QUEUE": queue,
           "WORKQUEUE_BROKER_REPLICAS": "3"}
    workers = Workers(env, tmp_path / "logs", 1, "sh", "-c",
                      f'echo "$WORKQUEUE_PAYLOAD" >> {witness}')
    try:
        assert workers.wait(BOUND_SECONDS) == [EXIT_OK], workers.text()
    finally:
        broker.purge()
        broker.close()
    ran = set(witness.read_text().split()) if os.path.exists(witness) else set()
    assert ran | {d.item.payload for d in first} == set(tasks)
