"""A seeder at work while its progress is read, on every RabbitMQ version.

`status` and the exporter read the seed cursor by taking it and handing it back; a seeder that
committed a batch in that moment took the empty queue for a cursor another seeder had moved and
failed with "moved under us" (reproduced with a reader polling every 50 ms).
"""

from __future__ import annotations

import os
import subprocess
import time

from conftest import WORKQUEUE, broker_env, write_tasks
from workqueue.errors import EXIT_OK

SEED_BOUND_SECONDS = 60
"""Longest the seeder may take here (it takes about a second): a run must never hang."""


def test_reading_the_progress_never_stops_a_seeder(rabbitmq_broker, server_for, tmp_path):
    # Given a seeder at work, in small batches
    write_tasks(tmp_path / "tasks.txt", 1000)
    env = {**os.environ, **broker_env(rabbitmq_broker, server_for), "WORKQUEUE_RUN_ID": "r1"}
    seeder = subprocess.Popen([*WORKQUEUE, "seed", "--tasks", str(tmp_path / "tasks.txt"),
                               "--batch-size", "2"], text=True, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # When its progress is read all the while
        deadline = time.monotonic() + SEED_BOUND_SECONDS
        while seeder.poll() is None and time.monotonic() < deadline:
            rabbitmq_broker.seed_state()
            time.sleep(0.01)
        # Then it never takes a cursor held for a moment for one moved by another seeder
        _out, err = seeder.communicate(timeout=10)
        assert seeder.returncode == EXIT_OK, err
        assert rabbitmq_broker.status().total == 1000
    finally:
        if seeder.poll() is None:
            seeder.kill()
            seeder.wait(10)
