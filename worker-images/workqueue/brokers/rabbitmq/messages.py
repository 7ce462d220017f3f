"""The RabbitMQ broker's queue names and message formats."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence

import pika

from ...broker import DeadItem

PERSISTENT = pika.DeliveryMode.Persistent
ATTEMPT_HEADER = "x-wq-attempt"
ERROR_HEADER = "x-wq-error"
TOKEN_HEADER = "x-wq-token"
"""Names one published copy of an item (the seeder's copies have none): its returns all carry
it, so a worker can vouch for the one it held."""
SUSPECT_HEADER = "x-wq-suspect"
"""On a copy waiting in `suspects`: "<token>:<returns>", the copy that came back and how often."""
SAFETY_DELIVERY_LIMIT = 1000
"""Server-side cap on redeliveries, above any maxAttempts; RabbitMQ 4 drops at 20 by default."""
ROLES = ("tasks", "done", "dead", "retries", "seed", "seeded", "refused", "delayed", "report",
         "isolated", "suspects", "pardons")
"""The queues of one work queue (the package docstring says what each holds)."""
WAITING_ROLES = ("tasks", "isolated", "suspects", "delayed")
"""The queues of tasks waiting to run: pending in `status`, empty once drained."""


def queue_names(queue: str) -> dict[str, str]:
    """Each role's queue name for work queue ``queue``."""
    return {role: f"wq.{queue}.{role}" for role in ROLES}


def persistent(**properties: object) -> pika.BasicProperties:
    """Properties of a message that survives a broker restart."""
    return pika.BasicProperties(delivery_mode=PERSISTENT, **properties)


def dead_item(props: pika.BasicProperties, body: bytes) -> DeadItem:
    """A dead letter, whether we wrote it or the server's delivery limit did."""
    data = json.loads(body)
    if "error" in data:
        return DeadItem(data["id"], data["payload"], data["attempts"], data["error"])
    headers = props.headers or {}
    return DeadItem(data["id"], data["payload"], attempt(headers) - 1 + returns(headers),
                    "redelivery limit reached: its workers kept dying while running it")


def receipt(ids: Sequence[str]) -> str:
    """The message that records items ``ids`` done. It names them, as ranges of their
    indexes, so that counts are of items, not of settles: AMQP transactions are not atomic
    across queues, and a commit cut short by a lost node (or a broker crash) can keep a receipt
    and lose the acks, so those items run again and are settled twice."""
    return receipt_of(id_ranges(int(item) for item in ids), 0)


def receipt_of(ranges: list[list[int]], anonymous: int) -> str:
    """A receipt for ``ranges`` of item indexes ([start, end) each, sorted and apart) and
    ``anonymous`` items done that the receipts of version 0.2 counted without naming."""
    body: dict[str, object] = {"ids": ranges}
    if anonymous:
        body["done"] = anonymous
    return json.dumps(body, separators=(",", ":"))


def receipt_parts(body: bytes) -> tuple[list[list[int]], int]:
    """A receipt's ranges of item indexes, and its anonymous count ({"done": n}, as 0.2
    wrote them: still counted after an upgrade in the middle of a run)."""
    data = json.loads(body)
    return [list(pair) for pair in data.get("ids", [])], int(data.get("done", 0))


def id_ranges(indexes: Iterable[int]) -> list[list[int]]:
    """Sorted, merged [start, end) ranges covering ``indexes``."""
    return merge_ranges([index, index + 1] for index in indexes)


def merge_ranges(ranges: Iterable[Sequence[int]]) -> list[list[int]]:
    """The union of [start, end) ``ranges``, sorted, with touching or overlapping ones joined."""
    merged: list[list[int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return merged


def covered(ranges: Iterable[Sequence[int]]) -> int:
    """How many indexes ``ranges`` (apart from each other) cover."""
    return sum(end - start for start, end in ranges)


def attempt(headers: dict) -> int:
    """The attempt this run of an item is: its charged runs plus one."""
    return int(headers.get(ATTEMPT_HEADER, 1))


def returns(headers: dict) -> int:
    """How often the server took the message back from a consumer that did not settle it
    (its connection closed, or a reject) since it was published."""
    return int(headers.get("x-delivery-count", 0))


def token(headers: dict) -> str:
    """The copy an item's message is ("" for the seeder's)."""
    return str(headers.get(TOKEN_HEADER, ""))


def fresh_token() -> str:
    return uuid.uuid4().hex[:16]
