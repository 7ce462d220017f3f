"""A run on a 3-node RabbitMQ cluster rides out losing any one node: the node that leads the
task queue, a follower, or the leader while the seeder writes. Real `workqueue work` and
`workqueue seed` processes connect with one URL per node, as the chart's pods do, and the
queues are quorum queues replicated to all three (brokers/rabbitmq/queues.py). The nodes run
the chart's rabbitmq.conf for a cluster.

What RabbitMQ does, seen here on 3.10 and 4.0.5: a killed node's connections' deliveries go
back to the queue at once (their consumers' node is gone), with x-delivery-count raised; a
consumer on a surviving node keeps its deliveries through the leader's election. So a lost
node costs the workers on it a reconnect, and re-runs at most what they held.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from cli_workers import Workers, wait_until
from conftest import VERSIONS, WORKQUEUE, unique_queue, versions_of, write_tasks
from render import render_chart
from servers import RabbitCluster
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.defaults import BATCH_SIZE, SEED_BATCH_SIZE
from workqueue.errors import EXIT_OK

pytestmark = pytest.mark.slow

TASKS = 5000
WORKERS = 4
IN_FLIGHT = WORKERS * BATCH_SIZE
"""The most tasks the workers hold at once (each a prefetch window at the defaults): a lost
node can re-run no more than that."""
FINISH_SECONDS = 120
"""Bound on a run of TASKS after a kill: minutes, never a hang."""


def chart_conf() -> str:
    """The chart's rabbitmq.conf for a 3-node cluster, but for its list of nodes, which names
    pods (the test's nodes have names of their own, tests/servers.py)."""
    objects = render_chart({"broker": {"type": "rabbitmq", "rabbitmq": {"replicas": 3}}})
    [config] = [o for o in objects if o["kind"] == "ConfigMap"
                and o["metadata"]["name"].endswith("-broker-config")]
    lines = config["data"]["90-workqueue.conf"].splitlines()
    assert any(line.startswith("cluster_formation.classic_config.nodes.") for line in lines)
    return "".join(f"{line}\n" for line in lines if not line.startswith("cluster_formation."))


@pytest.fixture(params=versions_of("rabbitmq"))
def cluster(request: pytest.FixtureRequest) -> Iterator[RabbitCluster]:
    # Booted with the chart's settings: each version must take every one of them
    started = RabbitCluster(3, VERSIONS[request.param], chart_conf()).start()
    yield started
    started.cleanup()


def cluster_env(cluster: RabbitCluster, queue: str) -> dict[str, str]:
    return {"WORKQUEUE_BROKER_URL": ",".join(cluster.urls),
            "WORKQUEUE_BROKER_PASSWORD": cluster.password, "WORKQUEUE_QUEUE": queue,
            "WORKQUEUE_RUN_ID": "r1", "WORKQUEUE_CONNECT_TIMEOUT": "30",
            "WORKQUEUE_OUTAGE_SECONDS": "60", "WORKQUEUE_LOG_LEVEL": "INFO"}


def run_losing_a_node(cluster: RabbitCluster, tmp_path, victim: str,
                      while_seeding: bool = False) -> None:
    """Seed TASKS, start WORKERS, SIGKILL the ``victim`` ("leader" or "follower") of the task
    queue once the run is under way, and check the run's end; then restart the node."""
    tmp_path.mkdir()
    # The seeder's batch under way counts as in flight too: a transaction cut short by the
    # leader's loss can leave part of it queued, and the seeder writes it again (seen on 3.10:
    # task-3000..3277 ran twice, the start of the 1,000-task batch after the cursor)
    in_flight = IN_FLIGHT + (SEED_BATCH_SIZE if while_seeding else 0)
    queue = unique_queue()
    env = cluster_env(cluster, queue)
    witness = tmp_path / "witness.txt"
    tasks = write_tasks(tmp_path / "t.txt", TASKS)
    # Declared before the run (the broker declares its queues), so the victim is known before
    # the run starts: asking rabbitmqctl takes seconds, in which four workers once finished all
    # 5,000 tasks after the tenth was done, and the kill came after the run
    broker = RabbitMQBroker(cluster.urls, queue, cluster.password, connect_timeout=30)
    leader = cluster.leader_of(broker.names["tasks"])
    node = leader if victim == "leader" else next(
        node for node in cluster.nodes if node is not leader)
    seeder = subprocess.Popen([*WORKQUEUE, "seed", "--tasks", str(tmp_path / "t.txt")],
                              env={**os.environ, **env}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    if not while_seeding:
        assert seeder.wait(120) == EXIT_OK, seeder.stdout.read()
    workers = Workers(env, tmp_path / "logs", WORKERS, "sh", "-c",
                      f'echo "$WORKQUEUE_PAYLOAD" >> {witness}')
    try:
        if while_seeding:
            wait_until(lambda: broker.count("tasks") > 0, what="the seeder's first tasks")
        else:
            wait_until(lambda: broker.done_count() >= TASKS // 10, what="a tenth of the run")
        killed_at = broker.done_count()
        node.stop(hard=True)
        if while_seeding:
            assert seeder.wait(120) == EXIT_OK, seeder.stdout.read()
        # The run finishes without the lost node
        try:
            ended = workers.wait(FINISH_SECONDS)
        except AssertionError as hang:
            raise AssertionError(f"{hang}\nthe queues:\n{cluster.queues()}") from None
        assert ended == [EXIT_OK] * WORKERS, workers.text()[-3000:]
        assert killed_at < TASKS, "the node was lost after the run, not during it"
        runs = Counter(witness.read_text().split())
        assert set(runs) == set(tasks), f"{len(set(tasks) - set(runs))} tasks never ran"
        repeated = sum(count - 1 for count in runs.values())
        assert repeated <= in_flight, f"{repeated} re-runs, above the {in_flight} in flight"
        counts = broker.status()
        assert (counts.done, counts.dead, counts.drained) == (TASKS, 0, True), counts
        assert "Traceback" not in workers.text()
    finally:
        broker.close()
        for process in workers.procs:
            process.kill()
        seeder.kill()
    # The node rejoins, and every node tells the same state
    node.start()
    wait_until(lambda: all(node.name in other.ctl("cluster_status --formatter json")
                           for other in cluster.nodes), what="the node back in the cluster")
    for each in cluster.nodes:
        one = RabbitMQBroker(each.url, queue, cluster.password, connect_timeout=30,
                             replicas=3)
        try:
            counts = one.status()
        finally:
            one.close()
        # What the lost node's consumers held comes back with it, after the workers ran those
        # tasks from their copies: copies of done tasks, not work left (test_rabbitmq_copies.py)
        assert (counts.done, counts.dead, counts.pending, counts.drained) == (TASKS, 0, 0, True), (
            each.name, counts)
        assert counts.copies <= in_flight, (each.name, counts)


def test_a_run_rides_out_losing_any_one_node(cluster, tmp_path):
    # One cluster per version for the three losses: each boots in half a minute
    started = time.monotonic()
    for victim, while_seeding in (("leader", False), ("follower", False), ("leader", True)):
        try:
            run_losing_a_node(cluster, tmp_path / f"{victim}-{while_seeding}", victim,
                              while_seeding)
        except AssertionError as exc:
            raise AssertionError(f"losing the {victim}"
                                 f"{' while seeding' if while_seeding else ''}: {exc}") from exc
    assert time.monotonic() - started < 3 * FINISH_SECONDS
