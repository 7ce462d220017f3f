"""Riding out a broker that is away: pods often start before their broker is ready, and a broker
pod that is rescheduled (a volume re-attached, an image pulled) can be gone for minutes.

Every outage is logged, however short: one line when the broker is lost (or not reachable yet),
one every LOG_EVERY_SECONDS while it stays away, and one when it is back, with how long it took.
A stop asked for meanwhile (SIGTERM) ends the wait at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from .. import stopping, worker_metrics
from ..errors import BrokerAuthError, BrokerUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT = (OSError, ConnectionError, TimeoutError)
LOG_EVERY_SECONDS = 30.0
"""While a broker is away, one log line this often: never silence, never a flood."""
MAX_DELAY_SECONDS = 5.0
"""Longest wait between two tries."""


class Outage:
    """One spell of a broker being unreachable: backoff between tries, the log lines, and
    BrokerUnavailable once ``tolerance`` seconds have passed. ``lost`` tells a broker that was
    reached before and went away from one that has not answered yet (at start)."""

    def __init__(self, server: str, tolerance: float, fix: str, lost: bool = True) -> None:
        self.server, self.tolerance, self.fix, self.lost = server, tolerance, fix, lost
        self.started = time.monotonic()
        self.delay = 0.2
        self.next_log = self.started

    def wait(self, exc: BaseException) -> None:
        """Sleep before the next try, or raise BrokerUnavailable if the tolerance is spent
        (stopping.Stopped if a stop is asked for meanwhile)."""
        now = time.monotonic()
        away = now - self.started
        if away + self.delay > self.tolerance:
            # A failure that knows its fix (a refusal rather than silence) says it instead.
            raise BrokerUnavailable(
                f"cannot reach {self.server} after {self.tolerance:.0f}s ({reason(exc)}): "
                f"{getattr(exc, 'fix', self.fix)}") from exc
        if now >= self.next_log:
            if self.next_log == self.started:
                first = ("lost the connection to %s (%s); retrying for up to %.0fs" if self.lost
                         else "cannot reach %s yet (%s); retrying for up to %.0fs")
                log.warning(first, self.server, reason(exc), self.tolerance)
            else:
                log.warning("cannot reach %s for %.0fs (%s); retrying for up to %.0fs",
                            self.server, away, reason(exc), self.tolerance)
            self.next_log = now + LOG_EVERY_SECONDS
        stopping.sleep(self.delay, f"waiting for {self.server}")
        self.delay = min(self.delay * 2, MAX_DELAY_SECONDS)

    def ended(self) -> None:
        """The broker answered again."""
        away = time.monotonic() - self.started
        log.warning("%s is back after %.1fs", self.server, away)
        worker_metrics.BROKER_OUTAGES.inc()


UNREACHABLE_FIX = ("check the broker is running and that this pod may reach it (NetworkPolicy, "
                   "Service)")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def unreachable_fix(server: str) -> str:
    """What to check when ``server`` (e.g. "redis at host:6379") does not answer: the
    cluster's pieces only where the broker is not on this machine."""
    host = server.rpartition(" at ")[2].rpartition(":")[0].strip("[]")
    if host in LOCAL_HOSTS:
        return "check the broker is running on this machine, on that port"
    return UNREACHABLE_FIX


def retry_until(attempt: Callable[[], T], timeout: float, server: str,
                transient: tuple[type[BaseException], ...] = (), fix: str | None = None) -> T:
    """Call ``attempt`` until it succeeds, for up to ``timeout`` seconds; ``fix`` is what the
    final error tells the user to check.

    Auth errors are final at once; anything in ``transient`` (plus socket errors) is retried.
    """
    outage: Outage | None = None
    while True:
        try:
            result = attempt()
        except BrokerAuthError:
            raise
        except (*_TRANSIENT, *transient, _redis_connection_error()) as exc:
            if outage is None:
                outage = Outage(server, timeout, fix or unreachable_fix(server), lost=False)
            outage.wait(exc)
            continue
        if outage is not None:
            outage.ended()
        return result


def _redis_connection_error() -> type[BaseException]:
    import redis

    return redis.ConnectionError


def reason(exc: BaseException) -> str:
    """The first line of an exception's message, shortened."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:120]
