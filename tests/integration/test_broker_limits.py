"""The bundled brokers' memory caps, as the chart renders them, on real servers: a full Redis
refuses the seeder with a line that names the fix, and RabbitMQ boots with the chart's conf."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
import redis

from conftest import VERSIONS, WORKQUEUE, versions_of
from render import BROKER, CHART, by_kind_name, load_values, rabbitmq_conf, render_chart
from servers import RabbitNode
from workqueue import Runner, WorkerConfig, seed
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.brokers.redis import RedisBroker
from workqueue.errors import EXIT_SEED_REFUSED
from workqueue.handlers import FunctionHandler
from workqueue.local import LocalRedis

CHART_DEFAULTS = load_values(CHART / "values.yaml")


def rendered_redis_flags(memory: str) -> list[str]:
    """The flags after `redis-server CONF` in the chart's Redis command, for this limit."""
    sts = by_kind_name(render_chart({"broker": {"redis": {"resources": {
        "limits": {"memory": memory}}}}}))[BROKER]
    command = sts["spec"]["template"]["spec"]["containers"][0]["command"][2]
    server = shlex.split(command.split("exec redis-server", 1)[1])
    return server[server.index("--maxmemory"):]


class CappedRedis(LocalRedis):
    """LocalRedis started with extra server flags, through a wrapper script in its folder."""

    def __init__(self, flags: list[str]) -> None:
        super().__init__()
        wrapper = self.dir / "redis-server"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(self.binary)} "$@" '
                           f'{shlex.join(flags)}\n')
        wrapper.chmod(0o755)
        self.binary = str(wrapper)


def test_a_full_redis_refuses_the_seeder_with_the_fix(tmp_path):
    # Given Redis capped as the chart caps it under a 4Mi limit (maxmemory 2 MiB, noeviction)
    flags = rendered_redis_flags("4Mi")
    assert flags == ["--maxmemory", "2097152", "--maxmemory-policy", "noeviction"]
    tasks = tmp_path / "big.txt"
    tasks.write_text("".join(f"{i:08d}" + "x" * 500 + "\n" for i in range(20_000)))
    with CappedRedis(flags) as server:
        # When a list of 10 MB is seeded
        result = subprocess.run(
            [*WORKQUEUE, "seed", "--tasks", str(tasks)], capture_output=True, text=True,
            timeout=120, env={**os.environ, "WORKQUEUE_BROKER_URL": server.url,
                              "WORKQUEUE_BROKER_PASSWORD": server.password})
    # Then the seeder stops with the refusal code and one line naming the fix, not a crash
    assert result.returncode == EXIT_SEED_REFUSED, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "out of memory" in last and "broker.redis.resources.limits.memory" in last
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("version", versions_of("rabbitmq"))
def test_rabbitmq_boots_and_serves_with_the_charts_settings(tmp_path, version):
    conf = rabbitmq_conf()
    settings = "".join(line + "\n" for line in conf.splitlines()
                       if line.strip() and not line.lstrip().startswith("#")
                       and not line.startswith("log."))
    node = RabbitNode(extra_conf=settings, root=VERSIONS[version]).start()
    try:
        broker = RabbitMQBroker(node.url, "conf", node.password, connect_timeout=30)
        (tmp_path / "t.txt").write_text("a\nb\n")
        seed(broker, str(tmp_path / "t.txt"))
        assert broker.status().pending == 2
        broker.close()
    finally:
        node.cleanup()


@pytest.mark.slow
def test_the_default_redis_holds_a_million_100_byte_tasks_and_their_report(tmp_path):
    # Given Redis capped as the chart caps it at its default limit
    flags = rendered_redis_flags(str(CHART_DEFAULTS["broker"]["redis"]["resources"]["limits"][
        "memory"]))
    tasks = tmp_path / "million.txt"
    with tasks.open("w") as out:
        for i in range(1_000_000):
            out.write(f"{i:010d}{'x' * 90}\n")
    with CappedRedis(flags) as server:
        # When a million 100-byte tasks are seeded, then the seeder succeeds under the cap
        result = subprocess.run(
            [*WORKQUEUE, "seed", "--tasks", str(tasks)], capture_output=True, text=True,
            timeout=300, env={**os.environ, "WORKQUEUE_BROKER_URL": server.url,
                              "WORKQUEUE_BROKER_PASSWORD": server.password})
        assert result.returncode == 0, result.stderr
        client = redis.Redis(port=server.port, password=server.password)
        seeded = client.info("memory")
        # And when they all run, each leaving its report record (a pod-sized worker name;
        # Redis refuses writes past maxmemory, which would fail the worker), they all settle
        broker = RedisBroker(server.url, "tasks", server.password)
        runner = Runner(broker, FunctionHandler(lambda item: None),
                        WorkerConfig(batch_size=500, poll_seconds=0.05),
                        worker_id="frames-workqueue-job-worker-1a2b3c4d-x7k2p-7-0f3a9c")
        assert runner.run() == 0
        assert broker.status().done == 1_000_000
        broker.close()
        drained = client.info("memory")
        client.close()
    assert seeded["used_memory"] < seeded["maxmemory"] == int(flags[1])
    assert drained["used_memory_peak"] < drained["maxmemory"]
