"""Status lines for people: a progress bar and the counts behind it."""

from __future__ import annotations

import json

from .broker import DeadItem, Status

BAR_WIDTH = 30


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """"1 task", "2 tasks": counts as people write them (``nouns`` where "s" will not do)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def status_line(status: Status) -> str:
    """One line: bar, percent settled, and each count."""
    total = status.total
    settled = status.done + status.dead
    if not status.seeded:
        head = "seeding" if total else "waiting for the seeder"
        return f"{head}: {status.pending} pending, {status.leased} leased, {status.done} done"
    delayed = f" ({status.delayed} waiting to retry)" if status.delayed else ""
    filled = BAR_WIDTH * settled // total if total else BAR_WIDTH
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    percent = 100 * settled // total if total else 100
    return (f"[{bar}] {percent:3d}% {settled}/{total} settled: done {status.done}, "
            f"dead {status.dead}, pending {status.pending}{delayed}, leased {status.leased}, "
            f"retries {status.retried}")


def verdict(status: Status, hint: bool = True) -> str:
    """The final answer a person wants: finished or not, and whether anything failed.
    ``hint`` adds the command that lists dead items (not once the broker is gone)."""
    if not status.drained:
        if not status.seeded:
            return "not finished: seeding has not completed"
        left = status.pending + status.leased
        return f"not finished: {left} of {plural(status.total or 0, 'task')} not settled yet"
    if status.dead:
        listed = "; `workqueue status --dead 20` lists them" if hint else ""
        return (f"finished with failures: {status.done} done, {status.dead} dead-lettered "
                f"(of {status.total}){listed}")
    return f"finished: all {plural(status.done, 'task')} done"


def dead_report(items: list[DeadItem]) -> str:
    """One line per dead item: id, attempts, the payload as the task list had it (JSON-quoted
    only if it holds control characters; shortened) and the last error."""
    lines = []
    for item in items:
        payload = item.payload if item.payload.isprintable() else json.dumps(
            item.payload, ensure_ascii=False)
        payload = payload if len(payload) <= 60 else payload[:57] + "..."
        lines.append(f"  {item.id}  attempts={item.attempts}  task: {payload}  "
                     f"error: {item.error}")
    return "\n".join(lines)
