"""Status lines for people: a progress bar and the counts behind it."""

from __future__ import annotations

from .broker import DeadItem, Status
from .message import payload_text
from .report import TaskRecord, durations

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
    copies = (f", {plural(status.copies, 'copy', 'copies')} of done tasks still queued (a lost "
              "broker node handed them back)") if status.copies else ""
    return (f"[{bar}] {percent:3d}% {settled}/{total} settled: done {status.done}, "
            f"dead {status.dead}, pending {status.pending}{delayed}, leased {status.leased}, "
            f"retries {status.retried}{copies}")


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
        lines.append(f"  {item.id}  attempts={item.attempts}  task: {payload_text(item.payload)}"
                     f"  error: {item.error}")
    return "\n".join(lines)


def _seconds(value: float) -> str:
    if value < 60:
        return f"{value:.2f} s" if value < 10 else f"{value:.0f} s"
    if value < 3600:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def pace(status: Status, rate: float | None) -> str | None:
    """Throughput and, while tasks remain, the time left at that pace. ``rate`` is settled
    tasks per second (None: not known yet)."""
    if not rate or not status.leased:
        # No task held: no worker is running one (the Job may have ended), so no pace.
        return None
    line = f"throughput {rate:.2f} tasks/s"
    left = (status.total or 0) - status.done - status.dead
    if status.seeded and left > 0:
        line += f", about {_seconds(left / rate)} left"
    return line


def overall_rate(status: Status, now: float) -> float | None:
    """Settled tasks per second since seeding completed."""
    settled = status.done + status.dead
    if status.seeded_at is None or settled == 0 or now <= status.seeded_at:
        return None
    return settled / (now - status.seeded_at)


def summary_table(records: list[TaskRecord], settled: int) -> str | None:
    """Per outcome: tasks, runs and the run time of their last run (p50, p95), from the
    records; says so when they are a sample of the ``settled`` tasks."""
    if not records:
        return None
    rows = [f"  {'outcome':<8}{'tasks':>8}{'runs':>8}{'p50':>10}{'p95':>10}"]
    for outcome in ("done", "dead"):
        group = [r for r in records if r.outcome == outcome]
        times = durations(group)
        if not group:
            continue
        p50, p95 = (_seconds(times.p50), _seconds(times.p95)) if times else ("-", "-")
        rows.append(f"  {outcome:<8}{len(group):>8}{sum(r.attempts for r in group):>8}"
                    f"{p50:>10}{p95:>10}")
    head = "per task (the report; `workqueue report` has every task):"
    if len(records) < settled:
        head = (f"per task, from a sample of {len(records)} of the {settled} settled "
                "(`workqueue report` has every task):")
    return "\n".join([head, *rows])
