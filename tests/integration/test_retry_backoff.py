"""Retry backoff (worker.retryDelaySeconds): a failed item waits on the broker before it runs
again, twice as long after each failure, while the other items go on; a worker that dies in
the meantime loses nothing. Real servers, every shipped version.

RabbitMQ keeps a waiting item in a quorum queue with a per-message TTL that dead-letters into
the tasks queue at least once (RabbitMQ docs: "Quorum Queues", message TTL and at-least-once
dead-lettering, both from 3.10); Redis keeps it in a sorted set that fetch.lua moves from.
"""

from __future__ import annotations

import os
import signal
import subprocess

from cli_workers import cli, wait_until
from conftest import WORKQUEUE, broker_env
from workqueue.errors import EXIT_DEAD, EXIT_OK

# Each run appends "<payload> <start time>"; "poison" always fails, "flaky" fails its first run.
RECORDING = ('echo "$WORKQUEUE_PAYLOAD $(date +%s.%N)" >> "$OUT"; '
             'case "$WORKQUEUE_PAYLOAD" in '
             'poison) exit 9;; '
             'flaky) test -e "$MARKER" || { touch "$MARKER"; exit 9; };; esac')


def _runs(path) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {}
    for line in path.read_text().splitlines():
        payload, started = line.rsplit(" ", 1)
        runs.setdefault(payload, []).append(float(started))
    return runs


def _env(broker, server_for, tmp_path, delay: str) -> dict[str, str]:
    return {**broker_env(broker, server_for), "WORKQUEUE_RETRY_DELAY": delay,
            "WORKQUEUE_MAX_ATTEMPTS": "3", "OUT": str(tmp_path / "runs.txt"),
            "MARKER": str(tmp_path / "marker")}


def _seed(env: dict[str, str], tmp_path, tasks: list[str]) -> None:
    (tmp_path / "tasks.txt").write_text("".join(f"{task}\n" for task in tasks))
    seeded = cli("seed", "--tasks", str(tmp_path / "tasks.txt"), env=env)
    assert seeded.returncode == 0, seeded.stderr


def test_retries_wait_longer_each_time_while_other_tasks_run(broker, server_for, tmp_path):
    # Given a poison task first in the queue, and a 1.5 s retry delay
    env = _env(broker, server_for, tmp_path, "1.5")
    good = [f"ok-{i}" for i in range(8)]
    _seed(env, tmp_path, ["poison", *good])
    # When one worker drains the queue
    result = cli("work", "--", "sh", "-c", RECORDING, env=env, timeout=120)
    # Then the poison ran three times, each retry after its delay (jitter keeps at least half
    # of it: 1.5 s, then 3 s), and every other task ran while the poison waited
    assert result.returncode == EXIT_DEAD, result.stderr
    runs = _runs(tmp_path / "runs.txt")
    first, second, third = runs["poison"]
    assert second - first >= 0.75
    assert third - second >= 1.5
    assert sorted(task for task in runs if task != "poison") == sorted(good)
    assert max(runs[task][0] for task in good) < second
    status = broker.status()
    assert (status.done, status.dead, status.retried, status.delayed) == (8, 1, 2, 0)


def test_a_worker_killed_during_a_retry_delay_loses_nothing(broker, server_for, tmp_path):
    # Given a task that fails its first run, with a 4 s retry delay. And a 5 s lease: a task
    # that comes back from a dropped connection waits a lease for its worker's pardon before it
    # runs (pardons.py), and a node that has just restarted may still drop connections (the two
    # timeouts here in full runs followed a restart, at the default lease's 60 s).
    env = {**_env(broker, server_for, tmp_path, "4"), "WORKQUEUE_LEASE_SECONDS": "5"}
    _seed(env, tmp_path, ["flaky"])
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        worker = subprocess.Popen([*WORKQUEUE, "work", "--", "sh", "-c", RECORDING],
                                  env={**os.environ, **env, "WORKQUEUE_LOG_LEVEL": "INFO"},
                                  stderr=stderr)
    try:
        wait_until(lambda: broker.status().delayed == 1, 60, "the failed run's retry to wait")
    except AssertionError as exc:
        worker.kill()
        worker.wait(30)
        raise AssertionError(f"{exc}; the worker's log:\n{log.read_text()[-3000:]}") from None
    # The wait is on the broker, where `status` shows it
    shown = cli("status", env=env)
    assert "(1 waiting to retry)" in shown.stdout, shown.stdout
    # When the worker is killed outright while the task waits
    worker.send_signal(signal.SIGKILL)
    worker.wait(30)
    # Then a new worker runs it once its delay is over, and it is done
    result = cli("work", "--", "sh", "-c", RECORDING, env=env, timeout=120)
    assert result.returncode == EXIT_OK, result.stderr
    first, second = _runs(tmp_path / "runs.txt")["flaky"]
    assert second - first >= 2.0
    status = broker.status()
    assert (status.done, status.dead, status.delayed, status.pending) == (1, 0, 0, 0)

