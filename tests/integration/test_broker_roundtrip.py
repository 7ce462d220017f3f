"""The fixtures' servers answer real traffic: a raw push/pop on Redis, publish/consume on
RabbitMQ (the foundation's smoke check, independent of our broker classes)."""

import pika
import redis


def test_redis_push_and_pop(redis_server):
    client = redis.Redis.from_url(redis_server.url, password=redis_server.password)
    client.rpush("roundtrip", "a", "b")
    assert client.lpop("roundtrip") == b"a"
    assert client.lpop("roundtrip") == b"b"
    client.delete("roundtrip")


def test_rabbitmq_publish_and_consume(rabbitmq_server):
    params = pika.URLParameters(f"amqp://127.0.0.1:{rabbitmq_server.port}/%2F")
    params.credentials = pika.PlainCredentials(rabbitmq_server.user, rabbitmq_server.password)
    with pika.BlockingConnection(params) as connection:
        channel = connection.channel()
        channel.queue_declare("roundtrip", auto_delete=True)
        channel.basic_publish("", "roundtrip", b"hello")
        method, _props, body = next(channel.consume("roundtrip", inactivity_timeout=10))
        assert body == b"hello"
        channel.basic_ack(method.delivery_tag)
