"""Turns between readers that take a queue's messages to merge or pick from them: while one
holds some, another would not see them."""

from __future__ import annotations

import time

import pika.exceptions as amqp
from pika.adapters.blocking_connection import BlockingChannel

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
