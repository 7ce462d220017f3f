"""How the seeder cuts a task stream into writes, and reads ahead of the broker."""

from __future__ import annotations

import pytest

from workqueue.defaults import SEED_BATCH_MAX_CHARS
from workqueue.errors import TaskSourceError
from workqueue.seeding import batches, read_ahead


def test_batches_keep_order_and_the_count_limit():
    tasks = [f"t{i}" for i in range(10)]
    cut = list(batches(iter(tasks), 4))
    assert [len(b) for b in cut] == [4, 4, 2]
    assert [t for b in cut for t in b] == tasks


def test_large_tasks_end_a_batch_early():
    # 40 tasks of a quarter of the character cap: four per write, not the 1,000 asked for
    big = ["x" * (SEED_BATCH_MAX_CHARS // 4)] * 40
    assert [len(b) for b in batches(iter(big), 1000)] == [4] * 10


def test_read_ahead_yields_everything_in_order():
    assert list(read_ahead(iter(range(1000)))) == list(range(1000))


def test_read_ahead_raises_the_sources_error_after_the_items_before_it():
    def source():
        yield from range(3)
        raise TaskSourceError("tasks.txt:4: not UTF-8")

    seen = []
    with pytest.raises(TaskSourceError, match=r"tasks\.txt:4"):
        for item in read_ahead(source()):
            seen.append(item)
    assert seen == [0, 1, 2]


def test_read_ahead_stops_its_thread_when_the_consumer_stops():
    produced = []

    def source():
        for i in range(10_000):
            produced.append(i)
            yield i

    for item in read_ahead(source()):
        if item == 5:
            break
    assert len(produced) < 100
