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

import time

import pika
import pytest
from held_deliveries import hold_unsettled

from conftest import write_tasks
from workqueue import seed
from workqueue.errors import ConnectionLost

TASKS = 20
MAX_ATTEMPTS = 2


def test_a_window_returned_unstarted_is_charged_nothing_when_the_next_worker_stops(
        rabbitmq_broker, tmp_path):
    # Given tasks returned unstarted as often as the attempts allow: each now says it came back
    # MAX_ATTEMPTS times
    write_tasks(tmp_path / "t.txt", TASKS)
    seed(rabbitmq_broker, str(tmp_path / "t.txt"))
    for _ in range(MAX_ATTEMPTS):
        hold_unsettled(rabbitmq_broker, TASKS).close()
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


LEASE_SECONDS = 2.0
"""How long a task held alone waits, once back, for its worker to say that it is alive."""


def fetch_within(consumer, seconds: float) -> list:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        deliveries = consumer.fetch(1).deliveries
        if deliveries:
            return list(deliveries)
        time.sleep(0.1)
    return []


def test_a_task_held_alone_through_a_lost_connection_is_charged_nothing(
        rabbitmq_broker, rabbitmq_server, tmp_path):
    # Given a worker running a task it holds alone (coarse mode), with one attempt allowed
    write_tasks(tmp_path / "t.txt", 1)
    seed(rabbitmq_broker, str(tmp_path / "t.txt"))
    survivor = rabbitmq_broker.consumer("survivor", 1, LEASE_SECONDS, 1)
    [running] = survivor.fetch(1).deliveries
    # When the broker drops its connection (a restart, a network fault) and the worker lives on
    rabbitmq_server.close_connections()
    time.sleep(0.5)
    survivor.keep_alive([running])
    # Then its result cannot be recorded, so the task runs again: after the lease, uncharged
    with pytest.raises(ConnectionLost):
        survivor.ack(running)
    survivor.close()
    other = rabbitmq_broker.consumer("next", 1, LEASE_SECONDS, 1)
    # (a lease in `suspects`, then RabbitMQ's dead-lettering to `isolated`: 10 s was not
    # always enough in a full parallel run, with the cores busy)
    [again] = fetch_within(other, LEASE_SECONDS * 15)
    assert (again.item.id, again.item.attempt) == (running.item.id, 1)
    other.ack(again)
    other.close()
    status = rabbitmq_broker.status()
    assert (status.done, status.dead) == (1, 0), rabbitmq_broker.dead_items(1)


def test_a_task_whose_worker_died_holding_it_alone_is_charged_after_the_lease(
        rabbitmq_broker, tmp_path):
    # Given a worker that takes a task alone and dies (its connection closes, nothing said)
    write_tasks(tmp_path / "t.txt", 1)
    seed(rabbitmq_broker, str(tmp_path / "t.txt"))
    connection = pika.BlockingConnection(rabbitmq_broker.params)
    method, _props, _body = connection.channel().basic_get(rabbitmq_broker.names["tasks"])
    assert method is not None
    connection.close()
    # When the next worker looks, with one attempt allowed
    other = rabbitmq_broker.consumer("next", 1, LEASE_SECONDS, 1)
    found = fetch_within(other, LEASE_SECONDS * 5)
    other.close()
    # Then the task is dead-lettered, charged the run its worker died in, and never ran again
    assert found == []
    [dead] = rabbitmq_broker.dead_items(1)
    assert dead.attempts == 1 and "its worker died while running it" in dead.error


def test_a_connection_lost_while_a_fetch_moves_a_returned_task_is_ridden_out(
        rabbitmq_broker, rabbitmq_server, tmp_path, monkeypatch):
    # Given tasks returned unstarted from a dead worker's window, which a fetch moves to run
    # alone, each in a transaction of its own (seen in CI: pod churn, RabbitMQ 3.10, exit 1)
    write_tasks(tmp_path / "t.txt", TASKS)
    seed(rabbitmq_broker, str(tmp_path / "t.txt"))
    hold_unsettled(rabbitmq_broker, TASKS).close()
    consumer = rabbitmq_broker.consumer("mover", 5, 60, MAX_ATTEMPTS)
    # When the broker drops every connection just as the first of those moves begins
    move = consumer._move
    dropped = []

    def drop_then_move(*args, **kwargs):
        if not dropped:
            dropped.append(True)
            rabbitmq_server.close_connections()
        return move(*args, **kwargs)

    monkeypatch.setattr(consumer, "_move", drop_then_move)
    # Then the fetch carries on over a new connection instead of failing the worker
    fetch_within(consumer, 20)
    consumer.close()
    assert dropped
    status = rabbitmq_broker.status()
    assert (status.dead, status.done + status.pending) == (0, TASKS), status
