"""Copies of done tasks are not work left. On a RabbitMQ cluster a worker whose node is lost
publishes again the tasks it held unstarted (consumer._publish_orphans), and runs them from
those copies; RabbitMQ hands the originals back only when that node returns, after the run.
Seen at four test processes: a 3-node run that had ended with every task done showed 32 (3.10)
and 64 (4.0) pending once the killed leader rejoined, so `status --require-drained` (helm test)
would have called a finished run unfinished.

One node stands in for the cluster: a raw connection holds a task unsettled and publishes a copy
of it, as a worker on a lost node does; closing that connection hands the original back.
"""

from __future__ import annotations

import pika
import pytest

from cli_workers import wait_until
from conftest import write_tasks
from workqueue import seed
from workqueue.progress import status_line, verdict

pytestmark = pytest.mark.slow

TASKS = 3


def test_a_task_handed_back_after_its_copy_ran_is_not_pending(rabbitmq_broker, tmp_path):
    broker = rabbitmq_broker
    write_tasks(tmp_path / "t.txt", TASKS)
    seed(broker, str(tmp_path / "t.txt"))
    # Given a task held unsettled on a connection, and a copy of it published meanwhile
    holder = pika.BlockingConnection(broker.params)
    channel = holder.channel()
    _method, properties, body = channel.basic_get(broker.names["tasks"])
    channel.basic_publish("", broker.names["tasks"], body, properties)
    # When a worker runs every task, the copy among them
    consumer = broker.consumer("worker", TASKS, 60, 3)
    taken = []
    wait_until(lambda: taken.extend(consumer.fetch(TASKS).deliveries) or len(taken) == TASKS,
               what="the two other tasks and the copy")
    consumer.ack_many(taken)
    consumer.close()
    assert broker.status().drained
    # And the original comes back afterwards
    holder.close()
    wait_until(lambda: broker.count("tasks") == 1, what="the original handed back")
    # Then the run is still finished: every task done, the original a copy, not work left
    status = broker.status()
    assert (status.done, status.pending, status.copies, status.drained) == (TASKS, 0, 1, True)
    assert verdict(status) == f"finished: all {TASKS} tasks done"
    assert "1 copy of done tasks still queued" in status_line(status)


def test_a_task_still_waiting_beside_done_ones_is_pending(rabbitmq_broker, tmp_path):
    # Copies only once every task is done: before that, what waits is work left
    broker = rabbitmq_broker
    write_tasks(tmp_path / "t.txt", TASKS)
    seed(broker, str(tmp_path / "t.txt"))
    consumer = broker.consumer("worker", 1, 60, 3)
    for _ in range(TASKS - 1):
        consumer.ack_many(consumer.fetch(1).deliveries)
    consumer.close()
    status = broker.status()
    assert (status.done, status.pending, status.copies, status.drained) == (TASKS - 1, 1, 0,
                                                                            False)
