"""Seeding: write a task list to the queue once, resumably, then set the seeded marker."""

from __future__ import annotations

import contextlib
import logging
import queue
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from .broker import Broker, SeedState
from .defaults import SEED_BATCH_MAX_CHARS, SEED_BATCH_SIZE
from .errors import BrokerFull, ConfigError, SeedConflict, TaskSourceError, other_run_message
from .progress import plural
from .taskfile import iter_tasks, resolve_format, scan_tasks

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class SeedReport:
    """What a seeding run did: ``written`` tasks now, out of ``total``."""

    total: int
    written: int
    resumed_from: int
    already_seeded: bool


def seed(broker: Broker, source: str, fmt: str = "auto", batch_size: int = SEED_BATCH_SIZE,
         expect_count: int | None = None, run_id: str | None = None,
         supersede: str | None = None) -> SeedReport:
    """Seed ``source`` into ``broker``'s queue for run ``run_id``. Safe to re-run after a crash
    or an upgrade. ``-`` reads stdin, spooled to a temporary file: seeding reads its source
    twice (to count and fingerprint it, then to write it). With ``supersede`` (the release's
    queue family), the family's previous queue is deleted once the source has been read
    without error."""
    if supersede is not None and not broker.queue.startswith(f"{supersede}."):
        raise ConfigError(f"queue {broker.queue!r} is not one of family {supersede!r}: a "
                          f"superseding queue is named {supersede}.RUN")
    if broker.seed_refusal():
        broker.set_seed_refusal(None)
    try:
        if source != "-":
            return _seed(broker, source, fmt, batch_size, expect_count, run_id, supersede)
        with tempfile.NamedTemporaryFile(prefix="workqueue-stdin-") as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool)
            spool.flush()
            try:
                return _seed(broker, spool.name, resolve_format("-", fmt), batch_size,
                             expect_count, run_id, supersede)
            except TaskSourceError as exc:
                raise TaskSourceError(str(exc).replace(spool.name, "<stdin>")) from None
    except (TaskSourceError, SeedConflict, BrokerFull) as exc:
        _record_refusal(broker, str(exc))
        raise


def _record_refusal(broker: Broker, reason: str) -> None:
    """Tell the workers why nothing will be seeded, so they fail now with the reason instead
    of after worker.seedTimeoutSeconds. Best effort: a full broker may refuse this write too."""
    try:
        broker.set_seed_refusal(reason)
    except Exception as exc:  # the seeder's own error is the one to report
        log.warning("could not tell the workers that seeding was refused (%s)", exc)


def _seed(broker: Broker, source: str, fmt: str, batch_size: int, expect_count: int | None,
          run_id: str | None, supersede: str | None) -> SeedReport:
    scan = scan_tasks(source, fmt)
    if expect_count is not None and expect_count != scan.count:
        raise TaskSourceError(
            f"{source} holds {scan.count} tasks but {expect_count} were expected: apply every "
            "tasksFrom ConfigMap (kubectl apply --server-side -f NAME-tasks.yaml), and "
            "regenerate the values and the ConfigMaps together"
        )
    if supersede is not None:
        replaced = broker.replace_previous(supersede)
        if replaced:
            log.info("this run replaces the one in queue %r, whose state is now deleted",
                     replaced)
    state = broker.seed_state()
    if run_id and state.run not in (None, run_id):
        raise SeedConflict(other_run_message(broker.queue, state.run, run_id))
    if state.fingerprint not in (None, scan.fingerprint):
        raise SeedConflict(
            f"queue {broker.queue!r} was already seeded from a different task list: use a new "
            "release name (or `workqueue purge`) to run a different list"
        )
    if state.complete:
        log.info("queue %r is already seeded with %s; nothing to do", broker.queue,
                 plural(scan.count, "task"))
        return SeedReport(scan.count, 0, state.cursor, already_seeded=True)
    if state.cursor:
        log.info("resuming seeding at task %d of %d", state.cursor + 1, scan.count)
    resumed_from = state.cursor
    state = SeedState(state.cursor, scan.fingerprint, scan.count, run=run_id)
    progress = _Progress(scan.count)
    tasks = islice(iter_tasks(source, fmt), state.cursor, None)
    for batch in read_ahead(batches(tasks, batch_size)):
        state = broker.seed_batch(state, batch)
        progress.update(state.cursor)
    broker.mark_seeded(state)
    log.info("seeded %s into queue %r (%d written now)", plural(scan.count, "task"),
             broker.queue, scan.count - resumed_from)
    return SeedReport(scan.count, scan.count - resumed_from, resumed_from, already_seeded=False)


def batches(payloads: Iterator[str], size: int) -> Iterator[list[str]]:
    """Lists of ``size`` payloads, cut short once they hold SEED_BATCH_MAX_CHARS characters:
    a thousand 256 KiB tasks in one write would need a quarter of a gigabyte at once."""
    batch: list[str] = []
    chars = 0
    for payload in payloads:
        batch.append(payload)
        chars += len(payload)
        if len(batch) == size or chars >= SEED_BATCH_MAX_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def read_ahead(source: Iterator[T], depth: int = 2) -> Iterator[T]:
    """``source``'s items, produced by a thread of its own up to ``depth`` items ahead: the
    file is parsed while the broker writes the previous batch. Errors are raised here."""
    ready: queue.Queue[tuple[T | None, BaseException | None, bool]] = queue.Queue(depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                if stop.is_set():
                    return
                ready.put((item, None, False))
        except BaseException as exc:  # handed to the consuming thread, which raises it
            ready.put((None, exc, True))
            return
        ready.put((None, None, True))

    thread = threading.Thread(target=produce, daemon=True, name="workqueue-read-ahead")
    thread.start()
    try:
        while True:
            item, error, last = ready.get()
            if error is not None:
                raise error
            if last:
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            ready.get_nowait()


class _Progress:
    """Logs seeding progress at most every few seconds."""

    def __init__(self, total: int, every: float = 5.0) -> None:
        self.total, self.every = total, every
        self.last = time.monotonic()

    def update(self, cursor: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            log.info("seeded %d/%d tasks (%d%%)", cursor, self.total, 100 * cursor // self.total)
            self.last = now
