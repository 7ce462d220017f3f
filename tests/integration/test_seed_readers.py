"""A seeder at work while its progress is read, on every RabbitMQ version.

`status` and the exporter read the seed cursor by taking it and handing it back; a seeder that
committed a batch in that moment took the empty queue for a cursor another seeder had moved and
failed with "moved under us" (reproduced with a reader polling every 50 ms).
"""

from __future__ import annotations

import os
import subprocess
import time

from conftest import WORKQUEUE, unique_queue, write_tasks
from workqueue.brokers.rabbitmq import RabbitMQBroker
from workqueue.errors import EXIT_OK


def test_reading_the_progress_never_stops_a_seeder(rabbitmq_server, tmp_path):
    # Given a seeder at work, in small batches
    queue = unique_queue()
    write_tasks(tmp_path / "tasks.txt", 1000)
    env = {**os.environ, "WORKQUEUE_BROKER_URL": rabbitmq_server.url,
           "WORKQUEUE_BROKER_PASSWORD": rabbitmq_server.password, "WORKQUEUE_QUEUE": queue,
           "WORKQUEUE_RUN_ID": "r1"}
    reader = RabbitMQBroker(rabbitmq_server.url, queue, rabbitmq_server.password)
    seeder = subprocess.Popen([*WORKQUEUE, "seed", "--tasks", str(tmp_path / "tasks.txt"),
                               "--batch-size", "2"], text=True, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # When its progress is read all the while
        while seeder.poll() is None:
            reader.seed_state()
            time.sleep(0.01)
        # Then it never takes a cursor held for a moment for one moved by another seeder
        _out, err = seeder.communicate(timeout=60)
        assert seeder.returncode == EXIT_OK, err
        assert reader.status().total == 1000
    finally:
        if seeder.poll() is None:
            seeder.kill()
        reader.purge()
        reader.close()
