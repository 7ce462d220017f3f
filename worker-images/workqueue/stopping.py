"""A stop asked for by SIGTERM (a pod deletion, a drain) or Ctrl-C, seen by every wait in the
process: waiting for a broker that is away, or between polls, ends promptly once it is asked.

The signal handler only sets a flag. It runs in the main thread between two bytecodes, so
taking a lock there could wait forever on one that thread already holds.
"""

from __future__ import annotations

import time

from .errors import EXIT_STOPPED, WorkqueueError

STEP_SECONDS = 0.1
"""How often a wait looks whether a stop was asked for."""

_asked = False


class Stopped(WorkqueueError):
    """A stop was asked for while the process waited (for a broker, say)."""

    exit_code = EXIT_STOPPED


def ask() -> None:
    """Ask every wait in this process to end (signal-safe: sets a flag, takes no lock)."""
    global _asked
    _asked = True


def asked() -> bool:
    """Whether a stop was asked for."""
    return _asked


def clear() -> None:
    """Forget an earlier stop: for a process (a test, say) that runs more than one worker."""
    global _asked
    _asked = False


def sleep(seconds: float, what: str) -> None:
    """Sleep ``seconds``, in steps; raise Stopped, saying it was ``what``, once a stop is
    asked for."""
    end = time.monotonic() + seconds
    while True:
        if _asked:
            raise Stopped(f"stopped while {what}")
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, STEP_SECONDS))
