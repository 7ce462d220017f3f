"""A worker's life around one long item: heartbeats keep it, SIGTERM gives it a grace period,
and whatever was not finished goes back to the queue without counting a run."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from conftest import WORKQUEUE, broker_env, write_tasks
from jobs import ForkedJob, WorkerSpec, results
from workqueue import Runner, WorkerConfig, seed
from workqueue.handlers import FunctionHandler

pytestmark = pytest.mark.slow

def seed_tasks(broker, tmp_path, count: int) -> list[str]:
    tasks = write_tasks(tmp_path / "tasks.txt", count, "job")
    seed(broker, str(tmp_path / "tasks.txt"))
    return tasks


def attempts_waiting(broker) -> dict[str, int]:
    """payload -> attempt number each waiting item would run as next, leaving them queued."""
    consumer = broker.consumer("inspector", 100, 60, 99)
    fetched = consumer.fetch(100).deliveries
    consumer.release(fetched)
    consumer.close()
    return {d.item.payload: d.item.attempt for d in fetched}


def test_heartbeats_keep_leases_on_items_longer_than_the_lease(redis_broker, server_for,
                                                                 tmp_path):
    # Given items that take 2.5 s each under a 1 s lease, two per batch, and two workers
    tasks = seed_tasks(redis_broker, tmp_path, 4)
    url, password = server_for("redis")
    (tmp_path / "out").mkdir()
    spec = WorkerSpec(url, password, redis_broker.queue, tmp_path / "out",
                      WorkerConfig(batch_size=2, lease_seconds=1, poll_seconds=0.05), delay=2.5)
    # When they drain the queue
    ForkedJob(spec, parallelism=2).run(timeout=60)
    # Then no lease ran out: every item ran once, and nothing was retried
    assert sorted(results(tmp_path / "out")) == sorted(tasks)
    status = redis_broker.status()
    assert (status.done, status.retried) == (4, 0)


def test_rabbitmq_worker_keeps_its_connection_through_a_long_item(rabbitmq_server, tmp_path):
    # Given a 1 s AMQP heartbeat, so a consumer silent for ~3 s is dropped by the server
    from workqueue.brokers.rabbitmq import RabbitMQBroker

    broker = RabbitMQBroker(rabbitmq_server.url, f"long-{os.getpid()}", rabbitmq_server.password,
                            connect_timeout=10, heartbeat_seconds=1)
    try:
        seed_tasks(broker, tmp_path, 2)
        runner = Runner(broker, FunctionHandler(lambda item: time.sleep(4)),
                        WorkerConfig(batch_size=2, poll_seconds=0.05))
        # When one worker runs both 4 s items
        code = runner.run()
        # Then both were recorded on the first run: the connection was never lost
        assert code == 0
        assert (runner.tally.done, runner.tally.lost, runner.tally.retried) == (2, 0, 0)
        assert broker.status().done == 2
    finally:
        broker.purge()
        broker.close()


def start_cli_worker(broker, server_for, tmp_path, command: str,
                     *flags: str) -> subprocess.Popen[str]:
    env = {**os.environ, **broker_env(broker, server_for)}
    return subprocess.Popen([*WORKQUEUE, "work", "--batch-size", "3", *flags, "--", "sh", "-c",
                             command], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)


def wait_for_file(path, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_sigterm_past_the_grace_period_stops_the_item_and_gives_everything_back(
        broker, server_for, tmp_path):
    # Given a worker whose first item would run for a minute, with a 1 s grace period
    tasks = seed_tasks(broker, tmp_path, 3)
    proc = start_cli_worker(broker, server_for, tmp_path, "touch started; exec sleep 60",
                            "--grace-seconds", "1")
    wait_for_file(tmp_path / "started", proc)
    # When it gets SIGTERM, as a pod being deleted does
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    # Then it exits 143 soon after the grace period, the command stopped, and every item is
    # back in the queue as not yet run
    assert code == 143, proc.stderr.read()
    assert time.monotonic() - started < 10
    assert "returning it to the queue" in proc.stderr.read()
    assert attempts_waiting(broker) == {task: 1 for task in tasks}
    status = broker.status()
    assert (status.done, status.dead, status.leased) == (0, 0, 0)


def test_sigterm_lets_the_running_item_finish_within_the_grace_period(broker, server_for,
                                                                      tmp_path):
    # Given a worker whose items take 2 s, with a 20 s grace period
    tasks = seed_tasks(broker, tmp_path, 3)
    proc = start_cli_worker(broker, server_for, tmp_path,
                            'touch "started-$WORKQUEUE_PAYLOAD"; sleep 2', "--grace-seconds", "20")
    wait_for_file(tmp_path / f"started-{tasks[0]}", proc)
    # When it gets SIGTERM during the first item
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    # Then that item is recorded as done, the other two go back unstarted, and it exits 143
    assert code == 143, proc.stderr.read()
    assert not (tmp_path / f"started-{tasks[1]}").exists()
    assert attempts_waiting(broker) == {task: 1 for task in tasks[1:]}
    assert broker.status().done == 1


@pytest.mark.parametrize("batch", ["1", "10"])
def test_a_graceful_stop_costs_no_attempt_of_a_task_that_never_started(broker, server_for,
                                                                      tmp_path, batch):
    """On RabbitMQ 4, every delivery the server gets back counts as a run (x-delivery-count),
    and pika's basic_cancel hands back what is still in flight; with max attempts 1, one such
    task would be dead-lettered although it never ran. Three stops at different moments."""
    env = {**broker_env(broker, server_for), "WORKQUEUE_MAX_ATTEMPTS": "1"}
    write_tasks(tmp_path / "t.txt", 30)
    seed(broker, str(tmp_path / "t.txt"))
    for delay in (2.1, 2.5, 2.9):
        # Given a worker part-way through its batch of one-second tasks
        proc = subprocess.Popen([*WORKQUEUE, "work", "--batch-size", batch, "--", "sleep", "1"],
                                env={**os.environ, **env}, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        # When it is stopped gracefully
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 143
    # Then a second worker finishes the queue, and nothing was dead-lettered
    finish = subprocess.run([*WORKQUEUE, "work", "--batch-size", batch, "--", "true"],
                            env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert finish.returncode == 0, finish.stderr
    status = broker.status()
    assert (status.done, status.dead) == (30, 0), broker.dead_items(5)
