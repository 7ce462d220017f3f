"""What a cluster does to a run, reproduced with real servers and real worker processes: the
broker comes back empty or late, the seeder never runs, a release is re-installed with another
list. Each case must end, with the documented exit code and a line that names the cause.

Why these are the faults: a StatefulSet pod that is evicted, preempted or OOM-killed is replaced
(the same name, a new pod), and with an emptyDir its data is gone (Kubernetes docs, "Volumes:
emptyDir": "When a Pod is removed from a node for any reason, the data in the emptyDir is
deleted permanently"). A PVC re-attach plus an image pull can keep it away for minutes.
"""

from __future__ import annotations

import time

import pytest

from cli_workers import BOUND_SECONDS, Workers, cli, wait_until
from conftest import broker_env, write_tasks
from workqueue import seed
from workqueue.broker import SeedState
from workqueue.brokers.redis import RedisBroker
from workqueue.errors import (
    EXIT_BROKER_UNREACHABLE,
    EXIT_OTHER_RUN,
    EXIT_SEED_REFUSED,
    EXIT_SEED_TIMEOUT,
    EXIT_STATE_LOST,
)
from workqueue.local import LocalRedis


def redis_env(server: LocalRedis, queue: str, **extra: str) -> dict[str, str]:
    return {"WORKQUEUE_BROKER_URL": server.url, "WORKQUEUE_BROKER_PASSWORD": server.password,
            "WORKQUEUE_QUEUE": queue, "WORKQUEUE_CONNECT_TIMEOUT": "10", **extra}


def test_redis_restarted_empty_mid_run_fails_every_worker_with_state_lost(own_redis, tmp_path):
    # Given 300 seeded tasks for run r1 and two workers part-way through them
    broker = RedisBroker(own_redis.url, "lost", own_redis.password, connect_timeout=10)
    write_tasks(tmp_path / "t.txt", 300)
    seed(broker, str(tmp_path / "t.txt"), run_id="r1")
    env = redis_env(own_redis, "lost", WORKQUEUE_RUN_ID="r1", WORKQUEUE_OUTAGE_SECONDS="30")
    workers = Workers(env, tmp_path / "logs", 2, "sh", "-c", "sleep 0.05")
    wait_until(lambda: broker.status().done >= 20, what="20 tasks done")
    # When the broker comes back empty (a pod on an emptyDir replaced)
    own_redis.restart(wipe=True)
    # Then every worker exits with the lost-state code, in bounded time, naming the fix
    assert workers.wait() == [EXIT_STATE_LOST, EXIT_STATE_LOST]
    log = workers.text()
    assert "lost its state mid-run" in log and "broker.persistence" in log
    assert "Traceback" not in log
    assert "waiting for the seeder" not in log
    # And the helm test's check fails the same way instead of waiting or passing
    check = cli("status", "--require-drained", env=env)
    assert check.returncode == EXIT_STATE_LOST
    assert "broker.persistence" in check.stdout
    broker.close()


@pytest.mark.parametrize("batch", ["1", "5"], ids=["coarse-get", "fine-consume"])
def test_rabbitmq_queues_deleted_mid_run_fail_every_worker_with_state_lost(
        rabbitmq_broker, server_for, tmp_path, batch):
    # Given 300 seeded tasks and two workers part-way through them (basic.get at batch 1,
    # a subscription with prefetch above it)
    write_tasks(tmp_path / "t.txt", 300)
    seed(rabbitmq_broker, str(tmp_path / "t.txt"), run_id="r1")
    env = {**broker_env(rabbitmq_broker, server_for), "WORKQUEUE_RUN_ID": "r1",
           "WORKQUEUE_BATCH_SIZE": batch, "WORKQUEUE_OUTAGE_SECONDS": "30"}
    workers = Workers(env, tmp_path / "logs", 2, "sh", "-c", "sleep 0.05")
    wait_until(lambda: rabbitmq_broker.status().done >= 20, what="20 tasks done")
    # When the queues are deleted (as a broker that restarted without its data has none)
    rabbitmq_broker.purge()
    # Then every worker exits with the lost-state code, in bounded time
    assert workers.wait() == [EXIT_STATE_LOST, EXIT_STATE_LOST], workers.text()
    assert "lost its state mid-run" in workers.text()
    assert "Traceback" not in workers.text()
    # And the helm test's check fails with the same cause
    check = cli("status", "--require-drained", env=env)
    assert check.returncode == EXIT_STATE_LOST
    assert "broker.persistence" in check.stdout


def test_workers_give_up_when_the_seeder_never_runs(broker, server_for, tmp_path):
    # Given a queue nobody seeds, and workers with a 3 s seeding deadline
    env = {**broker_env(broker, server_for), "WORKQUEUE_SEED_TIMEOUT": "3"}
    started = time.monotonic()
    workers = Workers(env, tmp_path / "logs", 2, "true")
    # Then they exit with the seeding-timeout code, saying what they waited for and what to check
    assert workers.wait() == [EXIT_SEED_TIMEOUT, EXIT_SEED_TIMEOUT]
    assert time.monotonic() - started < BOUND_SECONDS
    log = workers.text()
    assert "waiting for the seeder" in log
    assert "seeding did not complete within 3s" in log and "seeder Job" in log


def test_workers_and_status_stop_at_once_when_the_seeder_refuses(broker, server_for, tmp_path):
    # Given workers waiting for the seeder, with the chart's 15-minute seeding deadline
    env = {**broker_env(broker, server_for), "WORKQUEUE_SEED_TIMEOUT": "900"}
    workers = Workers(env, tmp_path / "logs", 2, "true")
    # When the seeder refuses the list (a tasksFrom ConfigMap missing: fewer tasks than promised)
    write_tasks(tmp_path / "t.txt", 3)
    seeder = cli("seed", "--tasks", str(tmp_path / "t.txt"), "--expect-count", "5", env=env)
    assert seeder.returncode == EXIT_SEED_REFUSED
    started = time.monotonic()
    # Then the workers exit 4 within seconds, with the seeder's own line, not after 15 minutes
    assert workers.wait() == [EXIT_SEED_REFUSED, EXIT_SEED_REFUSED], workers.text()
    assert time.monotonic() - started < 30
    assert "holds 3 tasks but 5 were expected" in workers.text()
    assert "Traceback" not in workers.text()
    # And the helm test's check says the same
    check = cli("status", "--require-drained", env=env)
    assert check.returncode == EXIT_SEED_REFUSED
    assert "holds 3 tasks but 5 were expected" in check.stdout
    # And once the list is right, the next seeder clears the note and the run goes through
    assert cli("seed", "--tasks", str(tmp_path / "t.txt"), "--expect-count", "3",
               env=env).returncode == 0
    assert cli("work", "--", "true", env=env).returncode == 0
    assert cli("status", "--require-drained", env=env).returncode == 0


def test_redis_outage_shorter_than_the_tolerance_is_ridden_out(own_redis, tmp_path):
    # Given 200 tasks, two workers that tolerate 60 s of outage, and redis-py's own retries cut
    # to a few hundred milliseconds (so only our tolerance can carry them through)
    broker = RedisBroker(own_redis.url, "outage", own_redis.password, connect_timeout=10)
    tasks = write_tasks(tmp_path / "t.txt", 200)
    seed(broker, str(tmp_path / "t.txt"))
    env = redis_env(own_redis, "outage", WORKQUEUE_OUTAGE_SECONDS="60",
                    WORKQUEUE_LEASE_SECONDS="30")
    out = tmp_path / "out"
    out.mkdir()
    workers = Workers(env, tmp_path / "logs", 2, "sh", "-c",
                      f'echo "$WORKQUEUE_PAYLOAD" >> {out}/$$.txt; sleep 0.02')
    wait_until(lambda: broker.status().done >= 20, what="20 tasks done")
    # When Redis is down for 8 s, then back with its data (AOF)
    own_redis.stop()
    time.sleep(8)
    own_redis.start()
    # Then both workers carry on and every task is done
    assert workers.wait(120) == [0, 0], workers.text()
    done = {line for f in out.iterdir() for line in f.read_text().splitlines()}
    assert done == set(tasks)
    assert "lost the connection to redis" in workers.text()
    assert "is back after" in workers.text()
    assert "Traceback" not in workers.text()
    broker.close()


def test_redis_outage_longer_than_the_tolerance_exits_unreachable(own_redis, tmp_path):
    broker = RedisBroker(own_redis.url, "gone", own_redis.password, connect_timeout=10)
    write_tasks(tmp_path / "t.txt", 200)
    seed(broker, str(tmp_path / "t.txt"))
    env = redis_env(own_redis, "gone", WORKQUEUE_OUTAGE_SECONDS="3")
    workers = Workers(env, tmp_path / "logs", 2, "sh", "-c", "sleep 0.02")
    wait_until(lambda: broker.status().done >= 10, what="10 tasks done")
    # When Redis goes away for good
    own_redis.stop()
    # Then each worker exits with the unreachable code and one line, no traceback
    assert workers.wait() == [EXIT_BROKER_UNREACHABLE, EXIT_BROKER_UNREACHABLE]
    log = workers.text()
    assert "Traceback" not in log
    assert "cannot reach redis at 127.0.0.1" in log and "after 3s" in log
    broker.close()


def test_rabbitmq_outage_longer_than_the_tolerance_exits_unreachable(rabbitmq_server, tmp_path):
    from workqueue.brokers.rabbitmq import RabbitMQBroker

    broker = RabbitMQBroker(rabbitmq_server.url, "gone", rabbitmq_server.password,
                            connect_timeout=10)
    write_tasks(tmp_path / "t.txt", 200)
    seed(broker, str(tmp_path / "t.txt"))
    env = {"WORKQUEUE_BROKER_URL": rabbitmq_server.url,
           "WORKQUEUE_BROKER_PASSWORD": rabbitmq_server.password, "WORKQUEUE_QUEUE": "gone",
           "WORKQUEUE_OUTAGE_SECONDS": "3", "WORKQUEUE_BATCH_SIZE": "5"}
    workers = Workers(env, tmp_path / "logs", 2, "sh", "-c", "sleep 0.05")
    wait_until(lambda: broker.status().done >= 10, what="10 tasks done")
    broker.close()
    try:
        rabbitmq_server.stop(hard=True)
        assert workers.wait() == [EXIT_BROKER_UNREACHABLE, EXIT_BROKER_UNREACHABLE], \
            workers.text()
        assert "Traceback" not in workers.text()
        assert "cannot reach rabbitmq at 127.0.0.1" in workers.text()
    finally:
        rabbitmq_server.start()
    RabbitMQBroker(rabbitmq_server.url, "gone", rabbitmq_server.password,
                   connect_timeout=30).purge()


def test_reseeding_with_a_different_list_never_reports_drained(broker, server_for, tmp_path):
    # Given run r1 of list A, seeded and run to the end
    env = broker_env(broker, server_for)
    write_tasks(tmp_path / "a.txt", 3, prefix="a")
    write_tasks(tmp_path / "b.txt", 2, prefix="b")
    assert cli("seed", "--tasks", str(tmp_path / "a.txt"), "--run-id", "r1",
               env=env).returncode == 0
    assert cli("work", "--run-id", "r1", "--", "true", env=env).returncode == 0
    # When the release is re-installed with list B (run r2) over the surviving state
    seeder = cli("seed", "--tasks", str(tmp_path / "b.txt"), "--run-id", "r2", env=env)
    worker = cli("work", "--run-id", "r2", "--", "true", env=env)
    check = cli("status", "--require-drained", "--run-id", "r2", env=env)
    # Then the seeder refuses for good, and neither the workers nor the check says drained
    assert seeder.returncode == EXIT_SEED_REFUSED
    assert "holds run r1, not this run r2" in seeder.stderr
    assert worker.returncode == EXIT_OTHER_RUN
    assert "holds run r1, not this run r2" in worker.stderr
    assert "drained" not in worker.stderr
    assert check.returncode == EXIT_OTHER_RUN
    assert "holds run r1, not this run r2" in check.stdout
    assert "finished" not in check.stdout


def test_seeding_from_stdin_queues_every_task(broker, server_for):
    env = broker_env(broker, server_for)
    seeded = cli("seed", "--tasks", "-", env=env, stdin="x\ny\n")
    assert seeded.returncode == 0, seeded.stderr
    assert broker.status().pending == 2
    worked = cli("work", "--", "sh", "-c", 'echo "ran $WORKQUEUE_PAYLOAD"', env=env)
    assert worked.returncode == 0, worked.stderr
    assert sorted(worked.stdout.split("\n")[:2]) == ["ran x", "ran y"]
    assert broker.status().done == 2


def test_bad_stdin_names_stdin_not_a_spool_file(broker, server_for):
    bad = cli("seed", "--tasks", "-", "--format", "jsonl", env=broker_env(broker, server_for),
              stdin='"ok"\nnot json\n')
    assert bad.returncode == EXIT_SEED_REFUSED
    assert "<stdin>:2: not valid JSON" in bad.stderr


def test_status_of_an_unseeded_queue_is_not_finished(broker, server_for, tmp_path):
    env = broker_env(broker, server_for)
    check = cli("status", "--require-drained", env=env)
    assert check.returncode == 1
    assert "not seeded yet" in check.stdout
    assert "finished" not in check.stdout
    # Seeding under way (a cursor, no marker yet) is not finished either
    broker.seed_batch(SeedState(0, "fingerprint", 2), ["a"])
    check = cli("status", "--require-drained", env=env)
    assert check.returncode == 1
    assert "not finished: seeding has not completed" in check.stdout
