"""Processes run-local starts (its redis-server, its workers), tied to run-local.

Each runs in a session of its own, so a terminal's Ctrl-C, which goes to the whole foreground
process group, reaches run-local alone: it stops the workers first, so that they give their
leases back while the server is still up, and the server last. If run-local itself is killed
(SIGKILL, the OOM killer), Linux sends each of them SIGTERM (PR_SET_PDEATHSIG), so no worker is
left retrying a server that is gone. Elsewhere that last guarantee is missing.
"""

from __future__ import annotations

import ctypes
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when the thread that started it ends."""


def popen_options() -> dict[str, Any]:
    """Keyword arguments for subprocess.Popen that start a tethered process."""
    options: dict[str, Any] = {"start_new_session": True}
    if sys.platform.startswith("linux"):
        options["preexec_fn"] = _end_with(os.getpid())
    return options


@functools.cache
def _prctl() -> Callable[..., int]:
    """libc's prctl, looked up once: run-local starts a worker per task in coarse mode."""
    return ctypes.CDLL(None, use_errno=True).prctl


def _end_with(parent: int) -> Callable[[], None]:
    # Looked up before the fork: the child, between fork and exec, only calls it.
    prctl = _prctl()

    def tether() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            # The parent ended before the tether was tied: end as if it had been.
            os.kill(os.getpid(), signal.SIGTERM)

    return tether
