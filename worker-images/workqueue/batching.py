"""How many items a fine-mode worker leases at once.

A lease round trip per item costs more than a no-op item, so fast items should come in batches;
but every leased item waits behind the ones before it, is re-run if the worker crashes before
recording it, and is given back on shutdown. So a worker leases about ``seconds`` of work at a
time, judged by its last batch: fast items go in batches of up to ``limit``, slow ones one by
one, and neither a crash nor a busy worker holds back more than about ``seconds`` of work.
"""

from __future__ import annotations


class BatchSizer:
    """The size of the next lease: as many items as the last batch says fit in ``seconds``,
    from 1 up to ``limit``, at most twice the last size (so one fast batch cannot lease a long
    run of slow items). ``seconds`` 0 turns it off: always ``limit``. Sizes below ``limit`` are
    powers of two, so that small changes in item times do not change the size (on RabbitMQ
    each change is a new subscription)."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self.size = limit if seconds <= 0 else 1

    def next(self) -> int:
        return self.size

    def observe(self, items: int, seconds: float) -> None:
        """The last batch of ``items`` items took ``seconds`` to work through (its runs, and the
        broker calls that record failures on the way)."""
        if self.seconds <= 0 or items <= 0:
            return
        fits = self.limit if seconds <= 0 else int(self.seconds * items / seconds)
        size = max(1, min(self.limit, 2 * self.size, fits))
        self.size = size if size == self.limit else 1 << (size.bit_length() - 1)
