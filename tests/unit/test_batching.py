"""How many items a fine-mode worker leases next (workqueue/batching.py)."""

from __future__ import annotations

from workqueue.batching import BatchSizer


def sizes(sizer: BatchSizer, batches: list[tuple[int, float]]) -> list[int]:
    seen = []
    for items, seconds in batches:
        sizer.observe(items, seconds)
        seen.append(sizer.next())
    return seen


def test_fast_items_double_the_batch_up_to_the_limit():
    sizer = BatchSizer(100, 1.0)
    assert sizer.next() == 1
    assert sizes(sizer, [(1, 0.0001)] * 8) == [2, 4, 8, 16, 32, 64, 100, 100]


def test_slow_items_go_one_by_one_at_once():
    sizer = BatchSizer(100, 1.0)
    sizes(sizer, [(1, 0.0)] * 7)
    assert sizer.next() == 100
    assert sizes(sizer, [(100, 200.0), (1, 2.0)]) == [1, 1]


def test_sizes_below_the_limit_are_powers_of_two_that_fit_the_seconds():
    sizer = BatchSizer(100, 1.0)
    # 30 ms items: 33 fit in a second, so 32 once the ramp gets there
    assert sizes(sizer, [(1, 0.03)] * 7)[-1] == 32
    # 40 ms items: 25 fit, so 16
    assert sizes(sizer, [(32, 32 * 0.04)]) == [16]


def test_zero_seconds_always_leases_the_limit():
    sizer = BatchSizer(7, 0)
    assert sizer.next() == 7
    assert sizes(sizer, [(7, 70.0)]) == [7]


def test_a_limit_of_one_stays_one():
    sizer = BatchSizer(1, 1.0)
    assert sizes(sizer, [(1, 0.0)] * 3) == [1, 1, 1]


def test_an_empty_batch_changes_nothing():
    sizer = BatchSizer(100, 1.0)
    sizer.observe(1, 0.0)
    assert sizes(sizer, [(0, 0.0)]) == [2]
