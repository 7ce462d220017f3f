"""Turns between readers that take a queue's messages to merge or pick from them: while one
holds some, another would not see them."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence

import pika.exceptions as amqp
from pika.adapters.blocking_connection import BlockingChannel

from .channels import closing
from .messages import persistent

LOCK_WAIT_SECONDS = 30.0
"""Longest a reader waits for another's turn (which lasts milliseconds)."""


def locked_channel(channel: BlockingChannel, lock: str) -> BlockingChannel:
    """A channel of its own that holds ``lock``, an exclusive queue: one reader at a time. A
    reader that dies lets go with its connection; one that is done deletes the queue."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        side = channel.connection.channel()
        try:
            side.queue_declare(lock, exclusive=True, auto_delete=True)
            return side
        except amqp.ChannelClosedByBroker:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextlib.contextmanager
def turn(channel: BlockingChannel, lock: str) -> Iterator[BlockingChannel]:
    """A channel of its own, in confirm mode, that holds ``lock`` for the block."""
    with closing(locked_channel(channel, lock)) as side:
        side.confirm_delivery()
        yield side
        side.queue_delete(lock)


def swap_read(side: BlockingChannel, queue: str, last: int, bodies: Sequence[str | bytes]) -> None:
    """Publish ``bodies`` in place of every message read up to delivery tag ``last``, then, once
    the broker has confirmed them, settle those. What is kept is swapped for a copy rather than
    handed back on close: the broker requeues a closed channel's messages a moment later, and
    the next reader would miss them meanwhile. A reader that dies between the two leaves both:
    receipts still count each task once, and a pardon kept twice can excuse one more return of
    its task (one run uncharged, at worst). A transaction would not do: on a
    cluster, RabbitMQ commits one whose publish into a quorum queue that has just lost its
    leader it dropped, and the messages read would be gone."""
    for body in bodies:
        side.basic_publish("", queue, body, persistent())
    side.basic_ack(last, multiple=True)
