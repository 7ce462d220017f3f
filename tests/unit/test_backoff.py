"""retry_delay: exponential backoff with jitter, capped."""

from __future__ import annotations

import random

import pytest

from workqueue.backoff import retry_delay


def test_no_base_means_no_wait():
    assert retry_delay(1, 0, 300) == 0
    assert retry_delay(7, 0, 300) == 0


@pytest.mark.parametrize("attempt, ceiling", [(1, 10), (2, 20), (3, 40), (5, 160), (6, 300),
                                              (60, 300)])
def test_each_failure_doubles_the_wait_up_to_the_cap_with_half_of_it_random(attempt, ceiling):
    rng = random.Random(attempt)
    waits = [retry_delay(attempt, 10, 300, rng) for _ in range(500)]
    assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
    # Jitter spreads items that failed together instead of returning them at once
    assert max(waits) - min(waits) > ceiling / 4
