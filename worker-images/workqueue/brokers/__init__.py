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


def connect(url: str, queue: str, password: str | None = None,
            connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
            outage_seconds: float = OUTAGE_SECONDS) -> Broker:
    """Open the broker named by ``url`` (redis://host:port/db or amqp://user@host:port/vhost),
    waiting up to ``connect_timeout`` seconds for it to answer, and later riding out outages of
    up to ``outage_seconds``."""
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
    if kind == "redis":
        from .redis import RedisBroker

        return RedisBroker(url, queue, password, connect_timeout, outage_seconds)
    from .rabbitmq import RabbitMQBroker

    return RabbitMQBroker(url, queue, password, connect_timeout, outage_seconds)


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
