"""Items on the wire: an id (so equal payloads stay distinct) and a text payload."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .errors import WorkqueueError


class MalformedItem(WorkqueueError):
    """An item on the queue that is not one of ours."""


@dataclass(frozen=True)
class Item:
    """One task: ``id`` is unique in its queue, ``attempt`` counts from 1."""

    id: str
    payload: str
    attempt: int = 1


PAYLOAD_TEXT_CHARS = 60
"""Longest payload a log line or a table shows; longer ones are cut with "..."."""


def payload_text(payload: str) -> str:
    """A payload as people should read it in a line of text: as the task list had it (JSON-
    quoted only if it holds control characters), cut to PAYLOAD_TEXT_CHARS."""
    text = payload if payload.isprintable() else json.dumps(payload, ensure_ascii=False)
    return text if len(text) <= PAYLOAD_TEXT_CHARS else text[:PAYLOAD_TEXT_CHARS - 3] + "..."


def task_text(item: Item) -> str:
    """How logs name a task: its id and its payload."""
    return f"{item.id} ({payload_text(item.payload)})"


ITEM_ID_FORMAT = "%08d"
"""A task's id from its 0-based index, as a printf format: Redis's seeding script formats ids
with it too (Lua's string.format)."""


def item_id(index: int) -> str:
    """The id of the task at 0-based ``index`` of the task list; stable across re-seeding."""
    return ITEM_ID_FORMAT % index


def encode(item_id_: str, payload: str) -> bytes:
    """Serialise an item body for the broker."""
    return json.dumps({"id": item_id_, "payload": payload}, ensure_ascii=False).encode()


def decode(body: bytes | str) -> tuple[str, str]:
    """Parse an item body into (id, payload), or raise MalformedItem."""
    try:
        data = json.loads(body)
        return str(data["id"]), str(data["payload"])
    except (ValueError, TypeError, KeyError) as exc:
        preview = (body[:60] if isinstance(body, str) else body[:60].decode("utf-8", "replace"))
        raise MalformedItem(
            f"malformed item on the queue ({preview!r}): it was not written by `workqueue seed`"
        ) from exc
