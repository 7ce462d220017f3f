"""Broker implementations, chosen by the URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..broker import Broker
from ..errors import ConfigError

SCHEMES = {"redis": "redis", "rediss": "redis", "amqp": "rabbitmq", "amqps": "rabbitmq"}


def connect(url: str, queue: str, password: str | None = None,
            connect_timeout: float = 300.0) -> Broker:
    """Open the broker named by ``url`` (redis://host:port/db or amqp://user@host:port/vhost)."""
    scheme = urlsplit(url).scheme
    kind = SCHEMES.get(scheme)
    if kind is None:
        raise ConfigError(
            f"broker URL {url!r} has scheme {scheme!r}; use redis://HOST:PORT/0 or "
            "amqp://USER@HOST:PORT/%2F"
        )
    if kind == "redis":
        from .redis import RedisBroker

        return RedisBroker(url, queue, password, connect_timeout)
    from .rabbitmq import RabbitMQBroker

    return RabbitMQBroker(url, queue, password, connect_timeout)
