"""Timing and memory: forked workers, and child processes measured with wait4."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import time
from collections.abc import Callable, Sequence

from workqueue import WorkerConfig, connect, run_worker

FORK = multiprocessing.get_context("fork")


def _call(fn: Callable[..., object], args: tuple) -> None:
    fn(*args)


def parallel(fn: Callable[..., object], args: tuple, workers: int) -> float:
    """Seconds for ``workers`` forked processes, each running fn(*args), to all finish."""
    procs = [FORK.Process(target=_call, args=(fn, args)) for _ in range(workers)]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    elapsed = time.perf_counter() - start
    codes = [proc.exitcode for proc in procs]
    if any(codes):
        raise RuntimeError(f"a benchmark worker failed (exit codes {codes})")
    return elapsed


def our_worker(url: str, password: str, queue: str, batch_size: int | None) -> None:
    """Our runner, in-process, with no-op work, until the queue is drained: leasing
    ``batch_size`` items at a time, or as the defaults do (None)."""
    broker = connect(url, queue, password, connect_timeout=60)
    fixed = {} if batch_size is None else {"batch_size": batch_size, "batch_seconds": 0}
    config = WorkerConfig(poll_seconds=0.05, **fixed)
    code = run_worker(lambda item: None, broker, config)
    if code != 0:
        raise SystemExit(code)


def child(argv: Sequence[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one child process, which must exit 0."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed: {proc.stderr.read().decode()[-800:]}")
    return elapsed, usage.ru_maxrss / 1024
