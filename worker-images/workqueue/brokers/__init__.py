"""Broker implementations, chosen by the URL scheme."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ..broker import Broker
from ..defaults import CONNECT_TIMEOUT_SECONDS, OUTAGE_SECONDS
from ..errors import ConfigError

PASSWORD_ENV = ("WORKQUEUE_BROKER_PASSWORD", "WORKQUEUE_BROKER_PASSWORD_FILE")
"""The broker password, or a file holding it (as the chart mounts it: Secrets as files do not
leak into the environment of every process the worker starts)."""

SCHEMES = {"redis": "redis", "rediss": "redis", "amqp": "rabbitmq", "amqps": "rabbitmq"}


def node_urls(url: str) -> list[str]:
    """The URLs in ``url``: one, or one per node of a cluster, separated by commas."""
    return [part.strip() for part in url.split(",") if part.strip()]


def connect(url: str, queue: str, password: str | None = None,
            connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
            outage_seconds: float = OUTAGE_SECONDS, replicas: int | None = None) -> Broker:
    """Open the broker named by ``url`` (redis://host:port/db or amqp://user@host:port/vhost,
    or several amqp:// URLs, one per node of a RabbitMQ cluster), waiting up to
    ``connect_timeout`` seconds for it to answer, and later riding out outages of up to
    ``outage_seconds``. A cluster's queues are replicated to ``replicas`` nodes (by default,
    one per URL)."""
    urls = node_urls(url)
    if not urls:
        raise ConfigError("the broker URL is empty: set WORKQUEUE_BROKER_URL or --broker-url")
    kinds = {_kind(part) for part in urls}
    if kinds != {"rabbitmq"} and len(urls) > 1:
        raise ConfigError(
            f"broker URL {url!r} names {len(urls)} servers; only RabbitMQ takes several (one "
            "per node of a cluster): give one redis:// URL (Redis replication is asynchronous, "
            "so a failover can lose settled tasks)")
    kind = kinds.pop()
    if replicas is not None and replicas > 1 and kind == "redis":
        raise ConfigError(f"broker replicas {replicas} given for a Redis broker; unset "
                          "WORKQUEUE_BROKER_REPLICAS (only RabbitMQ replicates queues)")
    if replicas is not None and replicas % 2 == 0:
        raise ConfigError(
            f"broker replicas {replicas} is even; use an odd number (a quorum of {replicas} "
            f"survives no more lost nodes than one of {replicas - 1})")
    if kind == "redis":
        from .redis import RedisBroker

        return RedisBroker(urls[0], queue, password, connect_timeout, outage_seconds)
    from .rabbitmq import RabbitMQBroker

    return RabbitMQBroker(urls, queue, password, connect_timeout, outage_seconds,
                          replicas=replicas)


def _kind(url: str) -> str:
    """"redis" or "rabbitmq", by the URL's scheme; a bad scheme or port is refused."""
    parts = urlsplit(url)
    kind = SCHEMES.get(parts.scheme)
    if kind is None:
        raise ConfigError(
            f"broker URL {url!r} has scheme {parts.scheme!r}; use redis://HOST:PORT/0 or "
            "amqp://USER@HOST:PORT/%2F"
        )
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number from 0 to 65535)
    except ValueError as exc:
        raise ConfigError(f"broker URL {url!r}: {exc}; give the broker's port") from None
    return kind


def password_from_env() -> str | None:
    """The broker password from WORKQUEUE_BROKER_PASSWORD, else from the file named by
    WORKQUEUE_BROKER_PASSWORD_FILE (one trailing newline dropped), else None."""
    value, path = (os.environ.get(name) for name in PASSWORD_ENV)
    if value or not path:
        return value or None
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the broker password from {path} (WORKQUEUE_BROKER_PASSWORD_FILE): "
            f"{getattr(exc, 'strerror', None) or exc}; mount the Secret there or unset the variable"
        ) from None
    return text.removesuffix("\n").removesuffix("\r")
