"""What RabbitMQ keeps of settled items: "done" receipts, counted by merging them, and the
per-task report, merged into chunks as it is read.

Each reader takes the messages on a channel of its own: closing it hands back whatever it took
and did not merge, so a reader that dies loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace

from pika.adapters.blocking_connection import BlockingChannel

from ...report import TaskRecord
from .channels import side_channel
from .locks import swap_read, turn
from .messages import covered, merge_ranges, persistent, receipt_of, receipt_parts

REPORT_CHUNK = 1000
"""Records per report message once merged."""


def publish_records(channel: BlockingChannel, queue: str, pairs: list[list[str]]) -> None:
    """Part of the caller's settle or transaction: records as [id, record] pairs."""
    channel.basic_publish("", queue, json.dumps(pairs, ensure_ascii=False), persistent())


def done_count(channel: BlockingChannel, queue: str, lock: str) -> int:
    """Items done: those the receipts name, each once however often it was settled, merged
    into one receipt as they are read so that the next count is one read. Counts take turns
    (``lock``): while one reader holds some receipts, another would count them out, and a
    worker would end its log with a count too low."""
    with turn(channel, lock) as side:
        ranges: list[list[int]] = []
        anonymous, last = 0, 0
        while True:
            method, _props, body = side.basic_get(queue)
            if method is None:
                break
            named, count = receipt_parts(body)
            ranges.extend(named)
            anonymous += count
            last = method.delivery_tag
        ranges = merge_ranges(ranges)
        if last:
            swap_read(side, queue, last, [receipt_of(ranges, anonymous)])
    return covered(ranges) + anonymous


def read_report(channel: BlockingChannel, queue: str) -> list[TaskRecord]:
    """Every record, read once, merging the messages read into chunks of REPORT_CHUNK."""
    found: list[list[str]] = []
    chunk: list[list[str]] = []
    last = 0

    def merge() -> None:
        """Swap the messages read since the last merge for one (locks.swap_read)."""
        swap_read(side, queue, last, [json.dumps(chunk, ensure_ascii=False)])
        chunk.clear()

    with side_channel(channel) as side:
        side.confirm_delivery()
        waiting = side.queue_declare(queue, passive=True)
        for _ in range(waiting.method.message_count):
            method, _props, body = side.basic_get(queue)
            if method is None:
                break
            pairs = json.loads(body)
            found.extend(pairs)
            chunk.extend(pairs)
            last = method.delivery_tag
            if len(chunk) >= REPORT_CHUNK:
                merge()
        if chunk:
            merge()
    return [TaskRecord.decode(task_id, text) for task_id, text in found]


def sample(channel: BlockingChannel, queue: str, size: int) -> list[TaskRecord]:
    """Up to ``size`` records from the front of the report, left in place."""
    found: list[TaskRecord] = []
    with side_channel(channel) as side:
        while len(found) < size:
            method, _props, body = side.basic_get(queue)
            if method is None:
                break
            found.extend(TaskRecord.decode(task_id, text) for task_id, text in json.loads(body))
    return found[:size]


def latest_per_task(records: list[TaskRecord]) -> Iterator[TaskRecord]:
    """One record per task: a task settled more than once (in several retry-dead rounds) is
    reported by its latest record, with the runs of all of them. A record met twice (a merge
    whose reader died after publishing the chunk, before settling what it read) counts once."""
    latest: dict[str, TaskRecord] = {}
    seen: set[TaskRecord] = set()
    for record in records:
        if record in seen:
            continue
        seen.add(record)
        before = latest.get(record.id)
        if before is not None:
            newer, older = ((record, before) if (record.finished or 0) >= (before.finished or 0)
                            else (before, record))
            record = replace(newer, attempts=newer.attempts + older.attempts)
        latest[record.id] = record
    return iter(latest.values())
