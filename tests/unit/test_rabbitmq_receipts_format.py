"""RabbitMQ's "done" receipts name their items as index ranges, so that an item settled twice
counts once; receipts of 0.2 ({"done": n}) still count."""

from __future__ import annotations

import json

import pytest

from workqueue.brokers.rabbitmq.messages import (
    covered,
    id_ranges,
    merge_ranges,
    receipt,
    receipt_of,
    receipt_parts,
)
from workqueue.message import item_id


def test_a_receipt_names_its_items_as_ranges():
    body = receipt([item_id(i) for i in (7, 3, 4, 5, 9)])
    assert json.loads(body) == {"ids": [[3, 6], [7, 8], [9, 10]]}
    assert receipt_parts(body.encode()) == ([[3, 6], [7, 8], [9, 10]], 0)


@pytest.mark.parametrize("ranges, merged", [
    ([], []),
    ([[0, 5], [5, 10]], [[0, 10]]),                  # touching
    ([[4, 8], [0, 5]], [[0, 8]]),                    # overlapping, out of order
    ([[0, 3], [0, 3]], [[0, 3]]),                    # the same items settled twice
    ([[10, 20], [0, 2], [12, 13]], [[0, 2], [10, 20]]),
])
def test_merging_counts_each_item_once(ranges, merged):
    assert merge_ranges(ranges) == merged
    assert covered(merge_ranges(ranges)) == len({i for start, end in ranges
                                                 for i in range(start, end)})


def test_old_receipts_count_beside_named_ones():
    assert receipt_parts(b'{"done": 5}') == ([], 5)
    merged = receipt_of(id_ranges([0, 1, 2]), 5)
    assert receipt_parts(merged.encode()) == ([[0, 3]], 5)
