"""`helm upgrade` (or a re-install over surviving state) with another task list, reproduced
with real servers and the chart's own commands: the chart names each run's queue
FAMILY.RUN and runs `workqueue seed --supersede FAMILY`. The new list must run in full, the
old run's state must go (it would hold broker memory forever), its leftover workers must stop
without touching the new run, and a bad new list must not cost the old run anything.
"""

from __future__ import annotations

import pytest

from cli_workers import BOUND_SECONDS, Workers, cli, wait_until
from conftest import broker_env, kind_of, write_tasks
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.brokers.redis import RedisBroker
from workqueue.errors import EXIT_SEED_REFUSED, EXIT_STATE_LOST


def run_env(broker, server_for, run: str) -> dict[str, str]:
    """What the chart gives a run's pods: the family's queue for this run, and the run id."""
    return {**broker_env(broker, server_for), "WORKQUEUE_QUEUE": f"{broker.queue}.{run}",
            "WORKQUEUE_RUN_ID": run, "WORKQUEUE_SUPERSEDE": broker.queue}


def open_queue(broker, server_for, run: str):
    url, password = server_for(kind_of(broker))
    return type(broker)(url, f"{broker.queue}.{run}", password, connect_timeout=10)


@pytest.fixture
def family(broker, server_for):
    """The test's queue family; every run's queue in it is deleted afterwards."""
    yield broker
    for run in ("r1", "r2"):
        leftover = open_queue(broker, server_for, run)
        leftover.purge()
        leftover.close()
    if isinstance(broker, RabbitMQBroker):
        broker.link.channel.queue_delete(f"wq.{broker.queue}.current")
    else:
        broker.client.delete(f"wq:{{{broker.queue}}}:current")


def test_a_changed_task_list_replaces_the_old_run(family, server_for, tmp_path):
    # Given run r1 of list A, seeded, with a worker part-way through a slow task
    old = run_env(family, server_for, "r1")
    new = run_env(family, server_for, "r2")
    write_tasks(tmp_path / "a.txt", 4, prefix="a")
    expected = write_tasks(tmp_path / "b.txt", 6, prefix="b")
    assert cli("seed", "--tasks", str(tmp_path / "a.txt"), env=old).returncode == 0
    old_worker = Workers({**old, "WORKQUEUE_LEASE_SECONDS": "3"}, tmp_path / "old", 1,
                         "sh", "-c", "sleep 3")
    first = open_queue(family, server_for, "r1")
    wait_until(lambda: first.status().leased + first.status().done >= 1, what="a lease")
    first.close()
    # When `helm upgrade` brings list B: a new seeder for run r2 in the same family
    seeder = cli("seed", "--tasks", str(tmp_path / "b.txt"), env=new)
    # Then the seeder says which run it replaced
    assert seeder.returncode == 0, seeder.stderr
    assert f"replaces the one in queue '{family.queue}.r1'" in seeder.stderr
    # And the old run's worker stops with "lost its state", settling nothing into r2
    assert old_worker.wait(BOUND_SECONDS) == [EXIT_STATE_LOST], old_worker.text()
    assert "Traceback" not in old_worker.text()
    # And the new workers run every task of B exactly once, and nothing of A
    out = tmp_path / "ran.txt"
    workers = Workers(new, tmp_path / "new", 2, "sh", "-c", f'echo "$WORKQUEUE_PAYLOAD" >> {out}')
    assert workers.wait() == [0, 0], workers.text()
    assert sorted(out.read_text().split()) == sorted(expected)
    check = cli("status", "--require-drained", env=new)
    assert check.returncode == 0, check.stdout
    # And run r1's state is gone from the broker, so a check of it says so
    gone = cli("status", "--require-drained", env=old)
    assert gone.returncode == EXIT_STATE_LOST, gone.stdout


def test_the_same_list_again_replaces_nothing(family, server_for, tmp_path):
    # Given run r2 seeded and finished under supersede
    env = run_env(family, server_for, "r2")
    write_tasks(tmp_path / "b.txt", 3, prefix="b")
    assert cli("seed", "--tasks", str(tmp_path / "b.txt"), env=env).returncode == 0
    assert cli("work", "--", "true", env=env).returncode == 0
    # When its seeder runs again (a new seeder Job after an image or chart change)
    again = cli("seed", "--tasks", str(tmp_path / "b.txt"), env=env)
    # Then nothing is deleted or re-run: the run stays finished
    assert again.returncode == 0, again.stderr
    assert "replaces" not in again.stderr and "already seeded" in again.stderr
    queue = open_queue(family, server_for, "r2")
    assert (queue.status().done, queue.status().pending) == (3, 0)
    queue.close()


def test_a_bad_new_list_leaves_the_old_run_intact(family, server_for, tmp_path):
    # Given run r1, seeded
    old = run_env(family, server_for, "r1")
    write_tasks(tmp_path / "a.txt", 4, prefix="a")
    assert cli("seed", "--tasks", str(tmp_path / "a.txt"), env=old).returncode == 0
    # When run r2's list is not what the values promised (a tasksFrom ConfigMap missing)
    write_tasks(tmp_path / "b.txt", 2, prefix="b")
    bad = cli("seed", "--tasks", str(tmp_path / "b.txt"), "--expect-count", "5",
              env=run_env(family, server_for, "r2"))
    # Then the seeder refuses before touching anything, and run r1 still has all its tasks
    assert bad.returncode == EXIT_SEED_REFUSED
    assert "holds 2 tasks but 5 were expected" in bad.stderr
    first = open_queue(family, server_for, "r1")
    assert (first.status().seeded, first.status().pending) == (True, 4)
    first.close()


def test_a_queue_outside_the_family_is_refused(broker, server_for, tmp_path):
    write_tasks(tmp_path / "a.txt", 1)
    refused = cli("seed", "--tasks", str(tmp_path / "a.txt"), "--supersede", "elsewhere",
                  env=broker_env(broker, server_for))
    assert refused.returncode == 2
    assert "is not one of family 'elsewhere'" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_redis_keeps_no_key_of_the_replaced_run(redis_broker, server_for, tmp_path):
    write_tasks(tmp_path / "a.txt", 3, prefix="a")
    write_tasks(tmp_path / "b.txt", 3, prefix="b")
    for run, name in (("r1", "a.txt"), ("r2", "b.txt")):
        env = run_env(redis_broker, server_for, run)
        assert cli("seed", "--tasks", str(tmp_path / name), env=env).returncode == 0
    client: RedisBroker = redis_broker
    assert list(client.client.scan_iter(f"wq:{{{redis_broker.queue}.r1}}:*")) == []
    assert client.client.get(f"wq:{{{redis_broker.queue}}}:current") == f"{redis_broker.queue}.r2"
    for run in ("r1", "r2"):
        leftover = open_queue(redis_broker, server_for, run)
        leftover.purge()
        leftover.close()
    client.client.delete(f"wq:{{{redis_broker.queue}}}:current")
