"""Retrying the first connection: pods often start before their broker is ready."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import BrokerAuthError, BrokerUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT = (OSError, ConnectionError, TimeoutError)


def retry_until(attempt: Callable[[], T], timeout: float, server: str,
                transient: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``attempt`` until it succeeds, with backoff, for up to ``timeout`` seconds.

    Auth errors are final at once; anything in ``transient`` (plus socket errors) is retried.
    """
    deadline = time.monotonic() + timeout
    delay, tries = 0.2, 0
    while True:
        tries += 1
        try:
            return attempt()
        except BrokerAuthError:
            raise
        except (*_TRANSIENT, *transient, _redis_connection_error()) as exc:
            if time.monotonic() + delay > deadline:
                raise BrokerUnavailable(
                    f"cannot reach {server} after {timeout:.0f}s ({_reason(exc)}): check the "
                    "broker is running and that this pod may reach it (NetworkPolicy, Service)"
                ) from exc
            if tries in (1, 5) or tries % 20 == 0:
                log.info("waiting for %s (%s); retrying", server, _reason(exc))
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _redis_connection_error() -> type[BaseException]:
    import redis

    return redis.ConnectionError


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:120]
