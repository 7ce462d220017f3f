"""Pardons: a worker's word that a task it held alone came back because its connection dropped
(a broker restart, a network fault), not because it died. The server cannot tell the two
apart: both return the message with x-delivery-count raised. The worker, alive, says so once
it reconnects; a task that came back waits one lease (`suspects`) for that word before its
return is charged as a run its worker died in.

A pardon names one published copy of the task (its token), so it cannot excuse a later copy.
"""

from __future__ import annotations

import json
import time

from pika.adapters.blocking_connection import BlockingChannel

from .locks import swap_read, turn
from .messages import persistent

KEEP_SECONDS = 3600.0
"""A pardon nobody redeemed in this long came too late (its task was charged meanwhile); it is
dropped at the next redeem."""


def publish(channel: BlockingChannel, queue: str, held: list[tuple[str, str]]) -> None:
    """Part of the caller's settle or transaction: one pardon per (item id, token) ``held``."""
    for item_id, token in held:
        channel.basic_publish("", queue, json.dumps({"id": item_id, "token": token,
                                                     "at": time.time()}), persistent())


def redeem(channel: BlockingChannel, queue: str, lock: str, item_id: str, token: str,
           most: int) -> int:
    """Take up to ``most`` pardons of copy ``token`` of ``item_id``; how many there were.
    Redeems take turns (``lock``), and what one reads and keeps is swapped for copies."""
    with turn(channel, lock) as side:
        waiting = side.queue_declare(queue, passive=True).method.message_count
        found, kept, last = 0, [], 0
        now = time.time()
        for _ in range(waiting):
            method, _props, body = side.basic_get(queue)
            if method is None:
                break
            last = method.delivery_tag
            pardon = json.loads(body)
            if (pardon["id"], pardon["token"]) == (item_id, token) and found < most:
                found += 1
            elif now - float(pardon["at"]) < KEEP_SECONDS:
                kept.append(body)
        if last:
            swap_read(side, queue, last, kept)
    return found
