"""Seeder crashes, broker restarts and bad input, against the real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

import pytest

from conftest import WORKQUEUE, broker_env, kind_of
from jobs import ForkedJob, WorkerSpec, results
from workqueue import WorkerConfig, seed
from workqueue.errors import EXIT_BROKER_UNREACHABLE, EXIT_CONFIG, EXIT_SEED_REFUSED
from workqueue.message import encode


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60):
    return subprocess.run([*WORKQUEUE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def queued_ids(broker) -> list[str]:
    """Every id waiting in the queue, by draining it with one consumer."""
    consumer = broker.consumer("inspector", 100, 60, 99)
    ids: list[str] = []
    while True:
        fetched = consumer.fetch(100)
        if not fetched.deliveries:
            break
        ids += [d.item.id for d in fetched.deliveries]
        # One settle per fetch: one per item cost RabbitMQ a transaction each (250 s in CI).
        consumer.ack_many(fetched.deliveries)
    consumer.close()
    return ids


def seed_state_after_crash(broker, timeout: float = 10):
    """The seed state once the server has noticed the killed seeder's dropped connection:
    until then RabbitMQ still counts the cursor message as held by it."""
    deadline = time.monotonic() + timeout
    state = broker.seed_state()
    while state.cursor == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        state = broker.seed_state()
    return state


def test_seeder_killed_half_way_then_rerun_queues_each_task_once(broker, server_for, tmp_path):
    # Given a large task file and a seeder writing it in small batches (a thousand of them:
    # at 200 batches, a seeder on Redis once wrote them all while the test polled a status)
    tasks = tmp_path / "tasks.txt"
    count = 10_000
    tasks.write_text("".join("same payload\n" if i % 2 else f"t{i}\n" for i in range(count)))
    env = broker_env(broker, server_for)
    proc = subprocess.Popen([*WORKQUEUE, "seed", "--tasks", str(tasks), "--batch-size", "10"],
                            env={**os.environ, **env}, stderr=subprocess.DEVNULL)
    # When it is SIGKILLed part-way through (its cursor, one read, says how far it is)
    deadline = time.monotonic() + 60
    while broker.seed_state().cursor < count // 20 and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = seed_state_after_crash(broker)
    assert 0 < partial.cursor < count and not partial.complete
    # And run again to the end
    rerun = cli("seed", "--tasks", str(tasks), env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming seeding at task {partial.cursor + 1}" in rerun.stderr
    # Then every task is queued exactly once, repeated payloads included
    ids = queued_ids(broker)
    assert len(ids) == count
    assert Counter(ids).most_common(1)[0][1] == 1
    # And a third run (a helm upgrade, say) changes nothing
    again = cli("seed", "--tasks", str(tasks), env=env)
    assert again.returncode == 0 and "already seeded" in again.stderr


def test_broker_restart_mid_run_loses_nothing(broker, server_for, tmp_path, request):
    # Given 2,000 seeded tasks and two workers that take a while over them
    kind = kind_of(broker)
    server = request.getfixturevalue(f"{kind}_server")
    (tmp_path / "tasks.txt").write_text("".join(f"r{i}\n" for i in range(2000)))
    seed(broker, str(tmp_path / "tasks.txt"))
    (tmp_path / "out").mkdir()
    url, password = server_for(kind)
    spec = WorkerSpec(url, password, broker.queue, tmp_path / "out",
                      WorkerConfig(batch_size=5, lease_seconds=5, poll_seconds=0.05), delay=0.002)
    job = ForkedJob(spec, parallelism=2)
    job.step()
    while len(results(tmp_path / "out")) < 300:
        job.step()
        time.sleep(0.01)
    # When the broker restarts mid-run (persistence on: Redis AOF, durable quorum queues)
    server.stop()
    time.sleep(1)
    server.start()
    job.run(timeout=300)
    # Then no task is lost
    assert set(results(tmp_path / "out")) == {f"r{i}" for i in range(2000)}
    assert broker.status().drained


def test_unreachable_broker_is_one_clear_line(tmp_path):
    (tmp_path / "t.txt").write_text("a\n")
    result = cli("seed", "--tasks", str(tmp_path / "t.txt"), env={
        "WORKQUEUE_BROKER_URL": "redis://127.0.0.1:1/0", "WORKQUEUE_CONNECT_TIMEOUT": "1"})
    assert result.returncode == EXIT_BROKER_UNREACHABLE
    assert result.stderr.strip().splitlines()[-1].startswith(
        "workqueue: error: cannot reach redis at 127.0.0.1:1 after 1s")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", ["redis", "rabbitmq"])
def test_wrong_password_is_one_clear_line(kind, server_for, tmp_path):
    url, _password = server_for(kind)
    result = cli("status", env={"WORKQUEUE_BROKER_URL": url,
                                "WORKQUEUE_BROKER_PASSWORD": "wrong",
                                "WORKQUEUE_CONNECT_TIMEOUT": "5"})
    assert result.returncode == EXIT_CONFIG
    assert "refused" in result.stderr and "WORKQUEUE_BROKER_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_rabbitmq_message_is_dead_lettered(rabbitmq_broker, server_for, tmp_path):
    # Given a seeded queue plus a message someone else published by hand
    (tmp_path / "t.txt").write_text("good\n")
    seed(rabbitmq_broker, str(tmp_path / "t.txt"))
    rabbitmq_broker.link.channel.basic_publish("", rabbitmq_broker.names["tasks"], b"not json")
    # When a worker drains it
    result = cli("work", "--", "true", env=broker_env(rabbitmq_broker, server_for))
    # Then the stray message is dead-lettered with the reason, and the good task is done
    assert "malformed item on the queue" in result.stderr
    dead = rabbitmq_broker.dead_items(5)
    assert [d.payload for d in dead] == ["not json"]
    assert rabbitmq_broker.status().done == 1


def test_malformed_redis_entry_is_skipped(redis_broker, server_for, tmp_path):
    # Given a seeded queue plus an id pushed by hand with no item behind it
    (tmp_path / "t.txt").write_text("good\n")
    seed(redis_broker, str(tmp_path / "t.txt"))
    redis_broker.client.lpush(redis_broker.keys[1], "stray")
    # When a worker drains it, then the good task is done and the worker exits 0
    result = cli("work", "--", "true", env=broker_env(redis_broker, server_for))
    assert result.returncode == 0, result.stderr
    assert redis_broker.status().done == 1 and redis_broker.status().drained


def test_drained_queue_exits_cleanly(broker, server_for, tmp_path):
    (tmp_path / "t.txt").write_text("only\n")
    seed(broker, str(tmp_path / "t.txt"))
    env = broker_env(broker, server_for)
    first = cli("work", "--", "true", env=env)
    second = cli("work", "--", "true", env=env)
    assert (first.returncode, second.returncode) == (0, 0)
    assert "queue drained" in second.stderr and "done 0" in second.stderr


def test_seed_refuses_a_different_task_list(broker, server_for, tmp_path):
    (tmp_path / "a.txt").write_text("a\n")
    (tmp_path / "b.txt").write_text("b\n")
    env = broker_env(broker, server_for)
    assert cli("seed", "--tasks", str(tmp_path / "a.txt"), env=env).returncode == 0
    other = cli("seed", "--tasks", str(tmp_path / "b.txt"), env=env)
    assert other.returncode == EXIT_SEED_REFUSED
    assert "already seeded from a different task list" in other.stderr


def test_encode_marks_items_so_payloads_may_repeat():
    assert encode("1", "x") != encode("2", "x")


def test_rabbitmq_broker_survives_idle_connection_drop(rabbitmq_server, tmp_path):
    # Given a broker connection with a 1 s heartbeat that then does no I/O for 5 s, so the
    # server drops it (as it does to a worker's broker during a long run)
    from workqueue.brokers.rabbitmq import RabbitMQBroker

    broker = RabbitMQBroker(rabbitmq_server.url, "idle-drop", rabbitmq_server.password,
                            connect_timeout=10, heartbeat_seconds=1)
    (tmp_path / "t.txt").write_text("a\n")
    seed(broker, str(tmp_path / "t.txt"))
    time.sleep(5)
    # When queue-wide calls run again, then they reconnect and answer
    try:
        assert broker.status().pending == 1
        assert broker.dead_items(5) == []
    finally:
        broker.purge()
        broker.close()
