"""Real broker servers for the tests: one redis-server and one rabbitmq-server per session,
on free loopback ports, stopped afterwards. A missing server fails the test with the fix."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from typing import TypeVar

import pytest

from servers import RabbitNode
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.brokers.redis import RedisBroker
from workqueue.errors import ConfigError
from workqueue.local import LocalRedis

BROKERS = ("redis", "rabbitmq")
WORKQUEUE = [sys.executable, "-m", "workqueue"]
"""The CLI, as the chart's pods run it."""
B = TypeVar("B", RedisBroker, RabbitMQBroker)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    try:
        server = LocalRedis().start()
    except ConfigError as exc:
        pytest.fail(f"{exc}. Run `make setup` to install it.")
    yield server
    server.cleanup()


@pytest.fixture(scope="session")
def rabbitmq_server() -> Iterator[RabbitNode]:
    try:
        node = RabbitNode().start()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    yield node
    node.cleanup()


def unique_queue() -> str:
    return f"test-{secrets.token_hex(4)}"


def own_queue(broker_class: type[B], server: LocalRedis | RabbitNode) -> Iterator[B]:
    """A broker on a queue of the test's own, purged afterwards."""
    broker = broker_class(server.url, unique_queue(), server.password, connect_timeout=10)
    yield broker
    broker.purge()
    broker.close()


@pytest.fixture
def redis_broker(redis_server: LocalRedis) -> Iterator[RedisBroker]:
    yield from own_queue(RedisBroker, redis_server)


@pytest.fixture
def rabbitmq_broker(rabbitmq_server: RabbitNode) -> Iterator[RabbitMQBroker]:
    yield from own_queue(RabbitMQBroker, rabbitmq_server)


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest):
    """Each test using it runs once per broker, against the real server."""
    return request.getfixturevalue(f"{request.param}_broker")


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
