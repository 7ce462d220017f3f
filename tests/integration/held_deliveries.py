"""A raw consumer that takes tasks into its window and settles none: a worker caught between
receiving its deliveries and starting them."""

from __future__ import annotations

import pika

from workqueue.brokers.rabbitmq import RabbitMQBroker


def hold_unsettled(broker: RabbitMQBroker, count: int) -> pika.BlockingConnection:
    """A connection holding the first ``count`` tasks of the queue, unsettled."""
    connection = pika.BlockingConnection(broker.params)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=count)
    held: list[int] = []
    channel.basic_consume(broker.names["tasks"],
                          lambda _ch, method, _props, _body: held.append(method.delivery_tag))
    while len(held) < count:
        connection.process_data_events(time_limit=1)
    return connection
