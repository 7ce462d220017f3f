"""RabbitMQ counts items done from one receipt per settled batch, naming its items, merged as
they are read. Counts take turns, so each is exact even while other readers count: a worker's
last line, which says how far the queue got, once read 0 done of 200 after a broker restart.
And an item settled twice counts once: a 3-node cluster that lost its leader mid-commit once
counted 5,300 done of 5,000 (the cluster test of issue 30)."""

from __future__ import annotations

import os
import subprocess
import threading

from conftest import WORKQUEUE, broker_env
from workqueue import seed
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.brokers.rabbitmq.messages import receipt
from workqueue.message import item_id


def settle_in_batches(broker: RabbitMQBroker, tmp_path, count: int, batch: int) -> None:
    (tmp_path / "tasks.txt").write_text("".join(f"t{i}\n" for i in range(count)))
    seed(broker, str(tmp_path / "tasks.txt"))
    consumer = broker.consumer("settler", batch, 60, 3)
    settled = 0
    while settled < count:
        deliveries = consumer.fetch(batch).deliveries
        consumer.ack_many(deliveries)
        settled += len(deliveries)
    consumer.close()


def test_concurrent_counts_are_exact(rabbitmq_broker,
                                                                     rabbitmq_server, tmp_path):
    # Given 60 items done in batches of 7, so 9 receipts of uneven size
    settle_in_batches(rabbitmq_broker, tmp_path, 60, 7)
    seen: list[int] = []

    def count_repeatedly() -> None:
        reader = RabbitMQBroker(rabbitmq_server.url, rabbitmq_broker.queue,
                                rabbitmq_server.password, connect_timeout=10)
        try:
            seen.extend(reader.done_count() for _ in range(15))
        finally:
            reader.close()

    # When three readers count at the same time
    readers = [threading.Thread(target=count_repeatedly) for _ in range(3)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    # Then every count was exactly 60, and one receipt is left
    assert seen == [60] * 45
    assert rabbitmq_broker.done_count() == 60
    assert rabbitmq_broker.count("done") == 1
    status = rabbitmq_broker.status()
    assert status.drained and (status.done, status.leased) == (60, 0)


def test_a_receipt_that_outlived_its_acks_does_not_end_the_run_early(rabbitmq_broker,
                                                                     server_for, tmp_path):
    # Given 5 tasks, and a receipt for 5 as a broker crash mid-commit leaves it: the receipt
    # kept, the acks lost (AMQP transactions are not atomic across queues), so the tasks are
    # all still waiting while the count says they are done
    (tmp_path / "tasks.txt").write_text("".join(f"t{i}\n" for i in range(5)))
    seed(rabbitmq_broker, str(tmp_path / "tasks.txt"))
    rabbitmq_broker.link.channel.basic_publish("", rabbitmq_broker.names["done"],
                                               receipt([item_id(i) for i in range(5)]))
    # Then a worker with nothing in hand (as when others hold the tasks) does not call it drained
    idle = rabbitmq_broker.consumer("idle", 1, 60, 3)
    assert not idle._idle().drained
    idle.close()
    # And a worker runs every task before it calls the queue drained
    env = {**broker_env(rabbitmq_broker, server_for), "WORKQUEUE_BATCH_SIZE": "2"}
    result = subprocess.run([*WORKQUEUE, "work", "--", "sh", "-c",
                             'echo "ran $WORKQUEUE_PAYLOAD"'], capture_output=True, text=True,
                            timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(["ran"] * 5 + [f"t{i}" for i in range(5)])
    # And each task counts once: the receipt names them, so settling them again adds nothing
    status = rabbitmq_broker.status()
    assert (status.done, status.drained) == (5, True), status


def test_receipts_from_before_the_upgrade_still_count(rabbitmq_broker, tmp_path):
    # Given a run part-way, whose receipts so far count items without naming them (0.2)
    settle_in_batches(rabbitmq_broker, tmp_path, 10, 4)
    rabbitmq_broker.link.channel.basic_publish("", rabbitmq_broker.names["done"], '{"done": 3}')
    # Then the count adds them to the named ones, and merging keeps both
    assert rabbitmq_broker.done_count() == 13
    assert rabbitmq_broker.done_count() == 13
    assert rabbitmq_broker.count("done") == 1
