"""The protocols we compare against, written plainly, one round trip at a time."""

from __future__ import annotations

from urllib.parse import quote

import pika
import redis

LEASE_SECONDS = 60


def redis_client(url: str, password: str) -> redis.Redis:
    return redis.Redis.from_url(url, password=password)


def redis_docs_worker(url: str, password: str, queue: str) -> int:
    """The docs' rediswq: per item LLEN, BRPOPLPUSH, SETEX, LREM, DEL (5 round trips)."""
    client = redis_client(url, password)
    main, processing = f"{queue}:main", f"{queue}:processing"
    done = 0
    while client.llen(main):
        item = client.brpoplpush(main, processing, timeout=1)
        if item is None:
            break
        client.setex(f"{queue}:lease:{item.decode()}", LEASE_SECONDS, "1")
        client.lrem(processing, 0, item)
        client.delete(f"{queue}:lease:{item.decode()}")
        done += 1
    return done


def redis_fill(url: str, password: str, queue: str, count: int) -> None:
    """Fill the docs' queue fast (pipelined); its seeding is not what is measured here."""
    client = redis_client(url, password)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.rpush(f"{queue}:main", f"task-{i}")
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def redis_push_per_item(url: str, password: str, queue: str, tasks: list[str]) -> None:
    """Seeding the plain way: one RPUSH round trip per task."""
    client = redis_client(url, password)
    for task in tasks:
        client.rpush(f"{queue}:seed", task)


def _rabbit(url: str, password: str) -> pika.BlockingConnection:
    # pika cannot parse a URL user without a password, so the password goes in the URL here.
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return pika.BlockingConnection(pika.URLParameters(f"{scheme}://{user}:{quote(password)}@{host}"))


def rabbit_fill(url: str, password: str, queue: str, count: int) -> None:
    """A quorum queue, like ours, filled with persistent messages."""
    connection = _rabbit(url, password)
    channel = connection.channel()
    channel.queue_declare(queue, durable=True, arguments={"x-queue-type": "quorum"})
    channel.confirm_delivery()
    props = pika.BasicProperties(delivery_mode=2)
    for i in range(count):
        channel.basic_publish("", queue, f"task-{i}".encode(), props)
    connection.close()


def rabbit_get_worker(url: str, password: str, queue: str) -> int:
    """The docs' amqp-consume style at its plainest: basic.get, then ack, per item."""
    connection = _rabbit(url, password)
    channel = connection.channel()
    done = 0
    while True:
        method, _, _ = channel.basic_get(queue)
        if method is None:
            break
        channel.basic_ack(method.delivery_tag)
        done += 1
    connection.close()
    return done


def rabbit_delete(url: str, password: str, queue: str) -> None:
    connection = _rabbit(url, password)
    connection.channel().queue_delete(queue)
    connection.close()
