"""Real broker servers for the tests: each version runs once per session, on free loopback
ports, and is stopped afterwards. A test that uses a broker runs once per version of it, with
ids such as [redis-8.0] or [rabbitmq-4.0]. A missing server fails the test with the fix."""

from __future__ import annotations

import secrets
import warnings
from collections.abc import Iterator
from typing import TypeVar

import pytest

from pod_processes import CLI_PREFIX
from servers import TRIXIE_ROOT, RabbitNode, RootRedis
from workqueue import stopping
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.brokers.redis import RedisBroker

WORKQUEUE = CLI_PREFIX
"""The CLI, as the chart's pods run it."""
B = TypeVar("B", RedisBroker, RabbitMQBroker)

VERSIONS = {
    # Debian bookworm's, on this machine: what many external brokers run.
    "redis-7.0": None, "rabbitmq-3.10": None,
    # Debian trixie's: RabbitMQ 4.0.5 is the chart's; Redis 8.0 and 7.0 bracket its 7.4.
    "redis-8.0": TRIXIE_ROOT, "rabbitmq-4.0": TRIXIE_ROOT,
}
BROKERS = ("redis", "rabbitmq")
DEFAULT = {"redis": "redis-7.0", "rabbitmq": "rabbitmq-3.10"}
"""The version a test gets when it is not run once per version."""


@pytest.fixture(autouse=True)
def _no_stop_carried_over() -> Iterator[None]:
    """A test that stops a worker in this process must not stop the next test's waits."""
    yield
    stopping.clear()


def versions_of(kind: str) -> list[str]:
    return [version for version in VERSIONS if version.startswith(kind + "-")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run each test that uses a broker once per version of it."""
    names = set(metafunc.fixturenames)
    if "broker_version" not in names or any(
            "broker_version" in mark.args[0] for mark in metafunc.definition.iter_markers(
                "parametrize")):
        return
    if "broker" in names:
        ids = [*versions_of("redis"), *versions_of("rabbitmq")]
    elif names & {"redis_server", "redis_broker", "own_redis"}:
        ids = versions_of("redis")
    else:
        ids = versions_of("rabbitmq")
    metafunc.parametrize("broker_version", ids)


def _pick(kind: str, version: str | None) -> str:
    return version if version and version.startswith(kind + "-") else DEFAULT[kind]


@pytest.fixture
def broker_version() -> str | None:
    """The broker version the test runs on: set per version by pytest_generate_tests for the
    tests that use a broker; otherwise each kind's default."""
    return None


@pytest.fixture(scope="session")
def servers() -> Iterator[dict[str, RootRedis | RabbitNode]]:
    """Each version's server, started when a test first needs it."""
    running: dict[str, RootRedis | RabbitNode] = {}
    yield running
    for server in running.values():
        server.cleanup()


def server_of(servers: dict, version: str) -> RootRedis | RabbitNode:
    if version not in servers:
        root = VERSIONS[version]
        try:
            server = (RootRedis(root) if version.startswith("redis") else RabbitNode(root=root))
            servers[version] = server.start()
        except FileNotFoundError as exc:
            pytest.fail(str(exc))
    server = servers[version]
    if isinstance(server, RabbitNode) and server.heal():
        warnings.warn(f"{version} node {server.name} had lost its dead-letter supervisor after "
                      "a restart (rabbitmq-server#16652); restarted it", stacklevel=1)
    return server


@pytest.fixture
def redis_server(broker_version: str | None, servers: dict) -> RootRedis:
    return server_of(servers, _pick("redis", broker_version))


@pytest.fixture
def rabbitmq_server(broker_version: str | None, servers: dict) -> RabbitNode:
    return server_of(servers, _pick("rabbitmq", broker_version))


@pytest.fixture
def own_redis(broker_version: str | None) -> Iterator[RootRedis]:
    """A redis-server of this test's own, of the test's version, which it may wipe or stop."""
    server = RootRedis(VERSIONS[_pick("redis", broker_version)]).start()
    yield server
    server.cleanup()


def unique_queue() -> str:
    return f"test-{secrets.token_hex(4)}"


TEST_OUTAGE_SECONDS = 120.0
"""How long a test's own broker rides out its server being away: past any restart a test makes
(a RabbitMQ boot is bounded at 90 s, tests/servers.py), and far short of the product's 900 s,
which a server that never came back once cost as one fixture teardown in CI."""


def own_queue(broker_class: type[B], server: RootRedis | RabbitNode) -> Iterator[B]:
    """A broker on a queue of the test's own, purged afterwards."""
    broker = broker_class(server.url, unique_queue(), server.password, connect_timeout=10,
                          outage_seconds=TEST_OUTAGE_SECONDS)
    yield broker
    broker.purge()
    broker.close()


@pytest.fixture
def redis_broker(redis_server: RootRedis) -> Iterator[RedisBroker]:
    yield from own_queue(RedisBroker, redis_server)


@pytest.fixture
def rabbitmq_broker(rabbitmq_server: RabbitNode) -> Iterator[RabbitMQBroker]:
    yield from own_queue(RabbitMQBroker, rabbitmq_server)


@pytest.fixture
def broker(request: pytest.FixtureRequest, broker_version: str):
    """Each test using it runs once per broker and version, against the real server."""
    return request.getfixturevalue(f"{broker_version.split('-')[0]}_broker")


@pytest.fixture
def server_for(request: pytest.FixtureRequest):
    """server_for(kind) -> (url, password) of the session's real server of that kind."""
    def lookup(kind: str) -> tuple[str, str]:
        server = request.getfixturevalue(f"{kind}_server")
        return server.url, server.password

    return lookup


def broker_env(broker, server_for) -> dict[str, str]:
    """The WORKQUEUE_* variables that point the CLI at ``broker``'s queue."""
    url, password = server_for(kind_of(broker))
    return {"WORKQUEUE_BROKER_URL": url, "WORKQUEUE_BROKER_PASSWORD": password,
            "WORKQUEUE_QUEUE": broker.queue, "WORKQUEUE_CONNECT_TIMEOUT": "10"}


def write_tasks(path, count: int, prefix: str = "task") -> list[str]:
    """A text task file of ``count`` distinct tasks; returns them in order."""
    tasks = [f"{prefix}-{i}" for i in range(count)]
    path.write_text("\n".join(tasks) + "\n")
    return tasks


def kind_of(broker) -> str:
    """'redis' or 'rabbitmq', the name of the broker's server fixture."""
    return "redis" if isinstance(broker, RedisBroker) else "rabbitmq"
