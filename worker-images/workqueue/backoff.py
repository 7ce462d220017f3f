"""How long a failed item waits before its next run: exponential backoff with jitter."""

from __future__ import annotations

import random


def retry_delay(failed_attempt: int, base_seconds: float, max_seconds: float,
                rng: random.Random | None = None) -> float:
    """Seconds before the run after ``failed_attempt`` (from 1): ``base_seconds`` doubled per
    earlier failure, capped at ``max_seconds``, then scaled by a random factor in [0.5, 1] so
    that items failing together (a dependency that was down) do not all return at once."""
    if base_seconds <= 0:
        return 0.0
    ceiling = min(max_seconds, base_seconds * 2 ** min(failed_attempt - 1, 30))
    return ceiling * (rng or random).uniform(0.5, 1.0)
