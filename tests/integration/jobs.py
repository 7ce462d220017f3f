"""Worker processes for the integration tests: forked children running the real Runner, started
and restarted the way a Job controller does, and killable with SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from workqueue import WorkerConfig, connect, run_worker
from workqueue.errors import EXIT_DEAD, TaskFailed
from workqueue.message import Item

FORK = multiprocessing.get_context("fork")


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a forked worker needs; ``poison`` payloads always fail."""

    url: str
    password: str
    queue: str
    out_dir: Path
    config: WorkerConfig
    delay: float = 0.0
    poison: frozenset[str] = frozenset()


def _worker(spec: WorkerSpec) -> None:
    broker = connect(spec.url, spec.queue, spec.password, connect_timeout=120)
    out = (spec.out_dir / f"{os.getpid()}.txt").open("a", buffering=1)

    def handle(item: Item) -> None:
        if item.payload in spec.poison:
            raise TaskFailed(f"poison task {item.payload}")
        if spec.delay:
            time.sleep(spec.delay)
        out.write(item.payload + "\n")

    code = run_worker(handle, broker, spec.config)
    out.close()
    os._exit(code)


@dataclass
class ForkedJob:
    """Keeps ``parallelism`` workers running; counts successes like a Job's status."""

    spec: WorkerSpec
    parallelism: int
    completions: int | None = None
    running: list = field(default_factory=list)
    succeeded: int = 0
    exit_codes: list[int] = field(default_factory=list)
    kills: int = 0
    failed_job: bool = False
    """Set when a worker exits 3: the chart's podFailurePolicy fails the Job on that code."""

    def _want_more(self) -> bool:
        if self.failed_job:
            return False
        if self.completions is None:
            return self.succeeded == 0
        return self.succeeded + len(self.running) < self.completions

    def step(self) -> bool:
        """Reap finished workers and start new ones; False once the job is complete."""
        for proc in list(self.running):
            if proc.exitcode is not None:
                proc.join()
                self.running.remove(proc)
                self.exit_codes.append(proc.exitcode)
                if proc.exitcode == 0:
                    self.succeeded += 1
                elif proc.exitcode == EXIT_DEAD:
                    self.failed_job = True
        while len(self.running) < self.parallelism and self._want_more():
            proc = FORK.Process(target=_worker, args=(self.spec,))
            proc.start()
            self.running.append(proc)
        return bool(self.running) or self._want_more()

    def kill_one(self) -> None:
        """SIGKILL a random running worker, as a node loss or OOM kill would."""
        if self.running:
            victim = random.choice(self.running)
            os.kill(victim.pid, signal.SIGKILL)
            self.kills += 1

    def run(self, timeout: float, kill_every: float | None = None) -> None:
        deadline = time.monotonic() + timeout
        next_kill = time.monotonic() + (kill_every or 0)
        while self.step():
            if time.monotonic() > deadline:
                for proc in self.running:
                    proc.kill()
                raise AssertionError(f"job did not finish in {timeout}s")
            if kill_every and time.monotonic() >= next_kill:
                self.kill_one()
                next_kill = time.monotonic() + kill_every
            time.sleep(0.01)


def results(out_dir: Path) -> list[str]:
    """Every payload any worker finished, with repeats."""
    return [line for f in out_dir.glob("*.txt") for line in f.read_text().splitlines()]
