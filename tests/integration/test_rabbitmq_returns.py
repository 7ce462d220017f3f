"""RabbitMQ counts every message it takes back from a consumer (x-delivery-count), whether the
consumer ran it or only held it in its prefetch window. Only a task a worker held alone was
surely running when that worker died; one that came back from a window is run alone to find
out, and is charged nothing for it.

Seen in CI (pod churn, RabbitMQ 4.0): workers killed, and a broker restart, each returned a
window of 100 tasks; the next worker was stopped (SIGTERM) a moment after it subscribed, and
its shutdown charged the tasks still in its window as crashed runs, so one that never ran was
dead-lettered "after 3 attempts" and the Job failed.
"""

from __future__ import annotations

import pika

from conftest import write_tasks
from workqueue import seed
from workqueue.brokers.rabbitmq import RabbitMQBroker

TASKS = 20
MAX_ATTEMPTS = 2


def hold_and_drop(broker: RabbitMQBroker) -> None:
    """A worker that dies with every task in its window, none started: a subscription takes
    them all, and its connection closes without settling any."""
    connection = pika.BlockingConnection(broker.params)
    channel = connection.channel()
    channel.basic_qos(prefetch_count=TASKS)
    held: list[int] = []
    channel.basic_consume(broker.names["tasks"],
                          lambda _ch, method, _props, _body: held.append(method.delivery_tag))
    while len(held) < TASKS:
        connection.process_data_events(time_limit=1)
    connection.close()


def test_a_window_returned_unstarted_is_charged_nothing_when_the_next_worker_stops(
        rabbitmq_broker, tmp_path):
    # Given tasks returned unstarted as often as the attempts allow: each now says it came back
    # MAX_ATTEMPTS times
    write_tasks(tmp_path / "t.txt", TASKS)
    seed(rabbitmq_broker, str(tmp_path / "t.txt"))
    for _ in range(MAX_ATTEMPTS):
        hold_and_drop(rabbitmq_broker)
    # When a worker subscribes, settles what it took, and stops with the rest still in its
    # window
    consumer = rabbitmq_broker.consumer("stopper", 5, 60, MAX_ATTEMPTS)
    taken = consumer.fetch(5).deliveries
    consumer.ack_many(taken)
    consumer.close()
    # Then no task is dead: those it did not run wait, to run alone
    status = rabbitmq_broker.status()
    assert status.dead == 0, rabbitmq_broker.dead_items(TASKS)
    assert status.done + status.pending == TASKS, status
