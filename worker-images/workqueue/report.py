"""The per-task report: one record per settled task, written by the worker that settled it in
the same atomic step as the settle, kept by the broker, exported by `workqueue report`.

On the broker a record is compact JSON with one-letter keys, so that a million of them fit the
chart's default Redis: o outcome (done, dead, or pending: put back by retry-dead and not settled
again yet), a runs (every retry-dead round included),
s seconds of the last run, x its exit code, w the worker that ran it, t when it settled (Unix
seconds), e the last error (dead only), r the result (worker.captureResult).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .taskfile import TaskIndex

FIELDS = ("id", "outcome", "attempts", "seconds", "exit_code", "worker", "finished", "error",
          "result", "payload")
"""Columns of `workqueue report`, in order."""


@dataclass(frozen=True)
class TaskRun:
    """How one run of an item went."""

    error: str | None
    """Why it failed; None when it succeeded."""
    seconds: float
    exit_code: int | None = None
    """The command's exit code (negative: killed by that signal); None for a function."""
    result: str | None = None


@dataclass(frozen=True)
class TaskRecord:
    """How one task ended."""

    id: str
    outcome: str
    attempts: int
    seconds: float | None = None
    exit_code: int | None = None
    worker: str = ""
    finished: float | None = None
    error: str | None = None
    result: str | None = None
    payload: str | None = None
    """Filled in on export where the broker still holds it (dead tasks)."""

    def encode(self) -> str:
        """The broker's form (the id is stored beside it, not in it)."""
        data: dict[str, object] = {"o": self.outcome, "a": self.attempts}
        for key, value in (("s", None if self.seconds is None else round(self.seconds, 3)),
                           ("x", self.exit_code), ("w", self.worker or None),
                           ("t", None if self.finished is None else round(self.finished, 3)),
                           ("e", self.error), ("r", self.result)):
            if value is not None:
                data[key] = value
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def decode(cls, task_id: str, text: str) -> TaskRecord:
        data = json.loads(text)
        return cls(task_id, data["o"], int(data["a"]), data.get("s"), data.get("x"),
                   data.get("w", ""), data.get("t"), data.get("e"), data.get("r"))


def settled(task_id: str, outcome: str, attempts: int, run: TaskRun, worker: str) -> TaskRecord:
    """The record of a task a worker just settled after ``run``."""
    return TaskRecord(task_id, outcome, attempts, run.seconds, run.exit_code, worker,
                      time.time(), run.error, run.result)


def with_payloads(records: Iterable[TaskRecord], tasks: TaskIndex) -> Iterator[TaskRecord]:
    """``records``, each with its task's payload from the seeded list (a task's id is its
    position in it)."""
    for record in records:
        if record.payload is None and record.id.isdigit():
            record = replace(record, payload=tasks.payload(int(record.id)))
        yield record


def iso_time(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC, to the millisecond."""
    if seconds is None:
        return None
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def exit_text(record: TaskRecord) -> str | int | None:
    """The exit code as people read it: a number, "timed out", or "killed by signal N"."""
    code = record.exit_code
    if code is None or code >= 0:
        return code
    if (record.error or "").startswith("timed out"):
        return "timed out"
    return f"killed by signal {-code}"


def _row(record: TaskRecord) -> dict[str, object]:
    row = {name: getattr(record, name) for name in FIELDS}
    row["finished"] = iso_time(record.finished)
    return row


def write_jsonl(records: Iterable[TaskRecord]) -> Iterator[str]:
    """One JSON object per line, every field named; exit codes stay numbers (negative: the
    signal that killed the command), times are ISO 8601."""
    for record in records:
        yield json.dumps(_row(record), ensure_ascii=False) + "\n"


def write_csv(records: Iterable[TaskRecord]) -> Iterator[str]:
    """A header, then one row per task; empty cells for missing values, and exit codes as
    people read them."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(FIELDS)
    for record in records:
        row = _row(record) | {"exit_code": exit_text(record)}
        writer.writerow(["" if row[name] is None else row[name] for name in FIELDS])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    yield buffer.getvalue()


@dataclass(frozen=True)
class Durations:
    """Run times of settled tasks."""

    count: int
    p50: float
    p95: float


def durations(records: Iterable[TaskRecord]) -> Durations | None:
    """p50 and p95 of the records' last-run seconds (nearest rank), or None without any."""
    seconds = sorted(r.seconds for r in records if r.seconds is not None)
    if not seconds:
        return None

    def rank(fraction: float) -> float:
        return seconds[max(0, math.ceil(len(seconds) * fraction) - 1)]

    return Durations(len(seconds), rank(0.50), rank(0.95))
