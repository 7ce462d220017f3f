"""How the RabbitMQ queues are declared: unchanged on one node, where RabbitMQ refuses a
declaration whose arguments differ from the existing queue's (406), and all replicated quorum
queues on a cluster, where a classic queue stops with its one node."""

from __future__ import annotations

import pytest

from workqueue.brokers.rabbitmq.messages import ROLES, SAFETY_DELIVERY_LIMIT, queue_names
from workqueue.brokers.rabbitmq.queues import UNLIMITED_DELIVERIES, queue_arguments

NAMES = queue_names("q")
ONE_NODE = {
    # As the queues were first deployed (brokers/rabbitmq/__init__.py lists them)
    "tasks": {"x-queue-type": "quorum", "x-delivery-limit": SAFETY_DELIVERY_LIMIT,
              "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "wq.q.dead"},
    "isolated": {"x-queue-type": "quorum", "x-delivery-limit": SAFETY_DELIVERY_LIMIT,
                 "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "wq.q.dead"},
    "suspects": {"x-queue-type": "quorum", "x-dead-letter-exchange": "",
                 "x-dead-letter-routing-key": "wq.q.isolated",
                 "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"},
    "delayed": {"x-queue-type": "quorum", "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": "wq.q.tasks",
                "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"},
    "report": {"x-queue-version": 2},
}


@pytest.mark.parametrize("role", [*ROLES, "current"])
def test_one_node_declares_every_queue_as_it_was_first_deployed(role):
    assert queue_arguments(role, NAMES, 1) == ONE_NODE.get(role, {})


@pytest.mark.parametrize("role", [*ROLES, "current"])
def test_a_cluster_replicates_every_queue_to_the_replicas(role):
    arguments = queue_arguments(role, NAMES, 3)
    assert arguments["x-queue-type"] == "quorum"
    assert arguments["x-quorum-initial-group-size"] == 3
    assert "x-queue-version" not in arguments
    # Each queue keeps what it does on one node: its dead-lettering and delivery limit
    one_node = ONE_NODE.get(role)
    if one_node and one_node.get("x-queue-type") == "quorum":
        assert arguments == {**one_node, "x-quorum-initial-group-size": 3}
    else:
        # A record read and given back at each `status` is never dropped for it
        assert arguments["x-delivery-limit"] == UNLIMITED_DELIVERIES
