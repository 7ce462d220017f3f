"""Real broker servers for the tests: one redis-server and one rabbitmq-server per session,
on free loopback ports, stopped afterwards. A missing server fails the test with the fix."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from servers import RabbitNode
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.brokers.redis import RedisBroker
from workqueue.errors import ConfigError
from workqueue.local import LocalRedis

BROKERS = ("redis", "rabbitmq")


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


@pytest.fixture
def redis_broker(redis_server: LocalRedis) -> Iterator[RedisBroker]:
    broker = RedisBroker(redis_server.url, unique_queue(), redis_server.password,
                         connect_timeout=10)
    yield broker
    broker.purge()
    broker.close()


@pytest.fixture
def rabbitmq_broker(rabbitmq_server: RabbitNode) -> Iterator[RabbitMQBroker]:
    broker = RabbitMQBroker(rabbitmq_server.url, unique_queue(), rabbitmq_server.password,
                            connect_timeout=10)
    yield broker
    broker.purge()
    broker.close()


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


def kind_of(broker) -> str:
    """'redis' or 'rabbitmq', the name of the broker's server fixture."""
    return "redis" if isinstance(broker, RedisBroker) else "rabbitmq"
