"""Fine-mode workers lease fast tasks in groups (worker.batchSeconds, workqueue/batching.py) and
record each group's successes together. What a crash, a SIGTERM and a broker restart in the
middle of a group do, with real worker processes on every broker version: nothing is lost, and
what runs twice stays within the documented bound (values.yaml, worker.batchSeconds): the
successes not yet recorded, at most one group (``--batch-size``) per worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from conftest import WORKQUEUE, broker_env, kind_of, write_tasks
from workqueue import seed
from workqueue.errors import EXIT_STOPPED

GROUP = 20
"""The most tasks a worker leases at once here (--batch-size): the bound on re-runs."""
TASKS = 600


def start_worker(env: dict[str, str], out: Path, log: Path) -> subprocess.Popen[bytes]:
    """`workqueue work` at the default batchSeconds, each task appending its payload to
    ``out`` (an O_APPEND write of one short line is atomic, so lines never interleave)."""
    return subprocess.Popen(
        [*WORKQUEUE, "work", "--batch-size", str(GROUP), "--lease-seconds", "3", "--",
         "sh", "-c", f'echo "$WORKQUEUE_PAYLOAD" >> {out}'],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=log.open("w"))


def runs(out: Path) -> Counter[str]:
    return Counter(out.read_text().split()) if out.exists() else Counter()


def wait_for_runs(out: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(runs(out).values()) < count:
        assert time.monotonic() < deadline, f"fewer than {count} runs after {timeout}s"
        time.sleep(0.02)


def seeded(broker, tmp_path: Path) -> set[str]:
    tasks = write_tasks(tmp_path / "tasks.txt", TASKS)
    seed(broker, str(tmp_path / "tasks.txt"))
    return set(tasks)


def finish(env: dict[str, str], out: Path, tmp_path: Path) -> None:
    """A fresh worker drains what is left; the run ends with every task done."""
    proc = start_worker(env, out, tmp_path / "finisher.log")
    assert proc.wait(180) == 0, (tmp_path / "finisher.log").read_text()


def signalled_mid_group(broker, server_for, tmp_path: Path,
                        signum: int) -> tuple[set[str], dict[str, str], Path, int]:
    """A worker part-way through groups of fast tasks, sent ``signum``: returns the tasks, the
    worker environment, the file of runs and the worker's exit code."""
    tasks = seeded(broker, tmp_path)
    env, out = broker_env(broker, server_for), tmp_path / "runs.txt"
    worker = start_worker(env, out, tmp_path / "worker.log")
    wait_for_runs(out, 150)
    worker.send_signal(signum)
    return tasks, env, out, worker.wait(60)


def test_a_worker_killed_mid_group_reruns_at_most_one_group(broker, server_for, tmp_path):
    # Given a worker SIGKILLed part-way through its groups (a node lost, an OOM kill)
    tasks, env, out, _code = signalled_mid_group(broker, server_for, tmp_path, signal.SIGKILL)
    # Then a second worker finishes the queue: every task ran, each recorded done once
    finish(env, out, tmp_path)
    ran = runs(out)
    assert set(ran) == tasks
    status = broker.status()
    assert (status.done, status.dead, status.pending) == (TASKS, 0, 0)
    # And the tasks that ran twice are the killed worker's unrecorded successes: one group
    assert sum(ran.values()) - TASKS <= GROUP, ran.most_common(3)
    assert max(ran.values()) <= 2


def test_sigterm_mid_group_records_what_ran_and_costs_no_attempt(broker, server_for, tmp_path):
    # Given a worker stopped gracefully part-way through its groups (a pod deleted or evicted)
    tasks, env, out, code = signalled_mid_group(broker, server_for, tmp_path, signal.SIGTERM)
    assert code == EXIT_STOPPED
    # Then a second worker finishes: every task ran exactly once
    finish(env, out, tmp_path)
    ran = runs(out)
    assert set(ran) == tasks and max(ran.values()) == 1, ran.most_common(3)
    # And no task lost an attempt: the group's unstarted tasks went back unchanged (on
    # RabbitMQ 4 a delivery handed back to the server would count as a run)
    attempts = Counter(record.attempts for record in broker.records())
    assert attempts == {1: TASKS}


def test_broker_restart_mid_group_loses_nothing(broker, server_for, tmp_path, request):
    # Given two workers part-way through groups of fast tasks
    tasks = seeded(broker, tmp_path)
    server = request.getfixturevalue(f"{kind_of(broker)}_server")
    env, out = broker_env(broker, server_for), tmp_path / "runs.txt"
    workers = [start_worker(env, out, tmp_path / f"worker-{i}.log") for i in range(2)]
    wait_for_runs(out, 150)
    # When the broker restarts (its data kept: Redis AOF, durable quorum queues)
    server.stop()
    time.sleep(1)
    server.start()
    # Then both workers reconnect and finish the queue
    for i, worker in enumerate(workers):
        assert worker.wait(180) == 0, (tmp_path / f"worker-{i}.log").read_text()[-2000:]
    ran = runs(out)
    assert set(ran) == tasks
    status = broker.status()
    assert (status.done, status.dead, status.pending) == (TASKS, 0, 0)
    # And re-runs stay within one group per worker
    assert sum(ran.values()) - TASKS <= 2 * GROUP, ran.most_common(3)


def test_tasks_that_turn_slow_then_fast_again_change_the_group_without_costing_attempts(
        broker, server_for, tmp_path):
    """The group shrinks and grows with the tasks' times; on RabbitMQ each change is a new
    subscription, made only when nothing can be in flight to the old one (a delivery handed
    back would count as a run on RabbitMQ 4). With max attempts 1 such a run dead-letters."""
    tasks = seeded(broker, tmp_path)
    env = {**broker_env(broker, server_for), "WORKQUEUE_MAX_ATTEMPTS": "1"}
    out = tmp_path / "runs.txt"
    # Given tasks 200 to 219 that take 0.3 s, between fast ones
    proc = subprocess.Popen(
        [*WORKQUEUE, "work", "--batch-size", str(GROUP), "--", "sh", "-c",
         'case "$WORKQUEUE_PAYLOAD" in task-2[01]?) sleep 0.3;; esac; '
         f'echo "$WORKQUEUE_PAYLOAD" >> {out}'],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    # Then one worker runs them all, each once, and none is dead-lettered
    _, log = proc.communicate(timeout=180)
    assert proc.returncode == 0, log[-2000:]
    ran = runs(out)
    assert set(ran) == tasks and max(ran.values()) == 1
    status = broker.status()
    assert (status.done, status.dead) == (TASKS, 0), broker.dead_items(3)
