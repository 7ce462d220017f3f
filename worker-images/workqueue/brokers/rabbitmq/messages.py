"""The RabbitMQ broker's queue names and message formats."""

from __future__ import annotations

import json
import uuid

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


def receipt(count: int) -> str:
    """The message that records ``count`` items done."""
    return json.dumps({"done": count})


def receipt_count(body: bytes) -> int:
    return int(json.loads(body)["done"])


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
