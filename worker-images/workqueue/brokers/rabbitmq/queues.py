"""How each queue of a work queue is declared, on one node or replicated across a cluster.

On one node, the queues of tasks are quorum queues and the rest classic ones, as they were
first deployed: RabbitMQ refuses a declaration whose arguments differ from the queue's
(406 PRECONDITION_FAILED), so these never change for a one-node broker.

On a cluster (``replicas`` above 1), every queue is a quorum queue on ``replicas`` nodes. A
classic queue lives on one node, and while that node is down every call on it fails ("home
node ... is down"): the run would wait for it. A quorum queue keeps working while a majority of
its nodes is up (https://www.rabbitmq.com/docs/quorum-queues).
"""

from __future__ import annotations

from collections.abc import Iterator

from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

from .channels import side_channel
from .connection import NOT_FOUND
from .messages import SAFETY_DELIVERY_LIMIT

TASK_QUEUES = ("tasks", "isolated")
"""Items waiting to run: the server dead-letters one that comes back too often."""
WAITING_ROOMS = {"suspects": "isolated", "delayed": "tasks"}
"""Queues whose messages wait out their TTL, then move on to the queue named."""
UNLIMITED_DELIVERIES = 2**31 - 1
"""The delivery limit of a queue of records on a cluster: their readers take a message and give
it back (a peek), as often as `status` runs, and RabbitMQ 4.0 drops a quorum queue's message
after 20 returns unless told otherwise. 3.10 and 4.0 both take this value; 3.10 refuses -1."""


def queue_arguments(role: str, names: dict[str, str], replicas: int) -> dict[str, object]:
    """The arguments of the queue of ``role`` (a key of ``names``, or "current": the family's
    pointer to its current queue)."""
    quorum = {"x-queue-type": "quorum"}
    if replicas > 1:
        quorum["x-quorum-initial-group-size"] = replicas
    if role in TASK_QUEUES:
        return {**quorum, "x-delivery-limit": SAFETY_DELIVERY_LIMIT,
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": names["dead"]}
    if role in WAITING_ROOMS:
        # Quorum queues dead-letter at least once (RabbitMQ 3.10+), exactly as a crash-safe
        # publish would, only with reject-publish overflow.
        return {**quorum, "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": names[WAITING_ROOMS[role]],
                "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    if replicas > 1:
        return {**quorum, "x-delivery-limit": UNLIMITED_DELIVERIES}
    if role == "report":
        # Version 2 keeps a classic queue's messages on disk, not in memory (the default from
        # RabbitMQ 4.0; 3.10 and later take the argument): a million records cost disk only.
        return {"x-queue-version": 2}
    return {}


def declarations(names: dict[str, str], replicas: int) -> Iterator[tuple[str, dict[str, object]]]:
    """Each queue of one work queue, as (name, arguments), in the order they are declared."""
    for role, name in names.items():
        yield name, queue_arguments(role, names, replicas)


def exists(channel: BlockingChannel, name: str) -> bool:
    """Whether queue ``name`` exists, asked on a channel of its own (a 404 closes the channel
    it is answered on)."""
    try:
        with side_channel(channel) as probe:
            probe.queue_declare(name, passive=True)
    except ChannelClosedByBroker as exc:
        if exc.reply_code == NOT_FOUND:
            return False
        raise
    return True
