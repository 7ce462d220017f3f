"""One crash costs one task: a task that kills its worker (as an OOM kill, a segfaulting library
or a lost node would) is found and dead-lettered alone, and the tasks that shared its worker's
lease group lose nothing. The chart's worker Job runs, played by the Job controller model.

Reproduced before on a fresh clone (the crash-isolation issue): 601 tasks, one running
`kill -9 $PPID`, 2 workers at the defaults: 64 tasks dead on Redis, 63 of them never run.
"""

from __future__ import annotations

import random
import signal
from collections import Counter

import pytest

from chart_jobs import chart_job
from conftest import write_tasks
from workqueue import seed

pytestmark = pytest.mark.slow

CONTROLLER_CLOCK = 0.001
"""The controller's backoff runs a thousand times faster here: its 10-minute cap (reached after
seven failed pods, ignored ones included) becomes 0.6 s. At a hundred times (6 s), 30 crashes
kept the Job without pods for most of these tests' 75-104 s (waves of four pods every 7-8 s);
what they check (which tasks ran, died or were charged) does not depend on how long the
controller waits."""

CRASH = "crash"
"""The payload whose task kills the worker running it."""


def crashing_script(witness) -> str:
    """Writes each run of a task to ``witness``; a crash task kills its worker (the command's
    parent) instead, every time."""
    return (f'if [ "${{WORKQUEUE_PAYLOAD%%-*}}" = {CRASH} ]; then kill -9 $PPID; exit 1; fi; '
            f'echo "$WORKQUEUE_PAYLOAD" >> {witness}')


def run_with_crashers(broker, server_for, tmp_path, count: int, crashers: int,
                      parallelism: int):
    tasks = write_tasks(tmp_path / "t.txt", count)
    spots = random.Random(count).sample(range(count), crashers)
    for spot in spots:
        tasks[spot] = f"{CRASH}-{spot}"
    (tmp_path / "t.txt").write_text("\n".join(tasks) + "\n")
    seed(broker, str(tmp_path / "t.txt"))
    witness = tmp_path / "witness.txt"
    # Every crash is a failed pod, which lengthens the controller's wait before the next (the
    # run's only successes come at its end; CONTROLLER_CLOCK).
    job = chart_job(broker, server_for, tmp_path, crashing_script(witness), tasks,
                    parallelism=parallelism, time_scale=CONTROLLER_CLOCK)
    verdict = job.run(timeout=600)
    runs = Counter(witness.read_text().split()) if witness.exists() else Counter()
    crashes = sum(1 for _index, code in job.exits if code == 137)
    return tasks, {tasks[s] for s in spots}, job, verdict, runs, crashes


def check_only_the_crashers_died(broker, tasks, crashers, job, verdict, runs, crashes) -> None:
    max_attempts = int(job.env["WORKQUEUE_MAX_ATTEMPTS"])
    # The Job fails for the tasks that did fail (onDead: fail), and for nothing else
    assert (verdict.state, verdict.reason) == ("failed", "PodFailurePolicy"), verdict
    assert "exit code 3" in verdict.message
    assert job.counted_failures == 0, job.counted_text()[-4000:]
    # Exactly the crashing tasks are dead, each after maxAttempts runs charged to it alone
    dead = {item.payload: item for item in broker.dead_items(len(tasks))}
    assert set(dead) == crashers, sorted(dead)
    assert {item.attempts for item in dead.values()} == {max_attempts}
    assert all("its worker died while running it" in item.error for item in dead.values())
    # Every other task is done, and none ran more than once more per crash
    innocent = set(tasks) - crashers
    assert set(runs) == innocent
    status = broker.status()
    assert (status.done, status.dead) == (len(innocent), len(crashers))
    assert max(runs.values()) <= 1 + crashes, runs.most_common(3)
    group = int(job.env["WORKQUEUE_BATCH_SIZE"])
    assert sum(runs.values()) - len(innocent) <= crashes * group
    # And the report says the same, with attempts as charged runs
    records = {r.id: r for r in broker.report()}
    assert Counter(r.outcome for r in records.values()) == {"done": len(innocent),
                                                           "dead": len(crashers)}


def test_one_task_that_kills_its_worker_is_the_only_one_dead(broker, server_for, tmp_path):
    outcome = run_with_crashers(broker, server_for, tmp_path, 601, 1, parallelism=2)
    check_only_the_crashers_died(broker, *outcome)


def test_ten_tasks_that_kill_their_workers_among_5000(broker, server_for, tmp_path):
    outcome = run_with_crashers(broker, server_for, tmp_path, 5000, 10, parallelism=4)
    check_only_the_crashers_died(broker, *outcome)


def test_workers_killed_from_outside_mid_batch_lose_and_bury_nothing(broker, server_for,
                                                                      tmp_path):
    # Given 5,000 quick tasks and workers SIGKILLed 20 times while they run groups of them
    tasks = write_tasks(tmp_path / "t.txt", 5000)
    seed(broker, str(tmp_path / "t.txt"))
    witness = tmp_path / "witness.txt"
    job = chart_job(broker, server_for, tmp_path,
                    f'echo "$WORKQUEUE_PAYLOAD" >> {witness}; sleep 0.002', tasks,
                    time_scale=CONTROLLER_CLOCK)
    pick = random.Random(20)
    kills: list[int] = []

    def chaos(local) -> None:
        if len(kills) < 20 and local.pods and pick.random() < 0.03:
            local.signal(signal.SIGKILL, pick)
            kills.append(1)

    verdict = job.run(timeout=600, chaos=chaos)
    # Then the run completes: nothing dead, nothing lost
    assert verdict.state == "complete", f"{verdict} after {len(kills)} kills"
    status = broker.status()
    assert (status.done, status.dead, status.pending) == (5000, 0, 0)
    assert set(Counter(witness.read_text().split())) == set(tasks)
