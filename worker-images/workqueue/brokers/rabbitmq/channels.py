"""Channels of their own beside a link's main one, for reads whose unsettled messages must go
back to their queue when the read ends, and for answers (a 404) that close the channel they
come on."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pika.adapters.blocking_connection import BlockingChannel


@contextlib.contextmanager
def closing(side: BlockingChannel) -> Iterator[BlockingChannel]:
    """``side`` for the block, closed after it unless the broker closed it already. pika
    raises "Channel is closed." on closing a closed channel, which would hide the broker's
    answer (a 404 for a queue deleted under us: lost state) behind what Link takes for a
    dropped connection: the call would be retried for the whole outage tolerance and end as
    unreachable (exit 5) instead of lost state (exit 6)."""
    try:
        yield side
    finally:
        if side.is_open:
            side.close()


def side_channel(channel: BlockingChannel) -> contextlib.AbstractContextManager[BlockingChannel]:
    """A new channel on ``channel``'s connection, for the block (``closing``)."""
    return closing(channel.connection.channel())
