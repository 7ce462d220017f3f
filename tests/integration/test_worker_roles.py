"""Fine mode's worker roles in the chart's Indexed worker Job (JOB_COMPLETION_INDEX).

The Job controller delays a new pod after every failed one, ignored by podFailurePolicy or not
(kubernetes/kubernetes#119434; pkg/controller/job/backoff_utils.go: newBackoffRecord counts
every failed pod since the last success, and only a pod success resets it). So a worker pod
that is stopped must succeed, or pod churn starves the run of workers. In an Indexed Job a
succeeded index is never run again and the next index starts at once; index 0 alone ends the
Job (successPolicy succeededIndexes "0"), so it exits 0 only once the queue is drained.
"""

from __future__ import annotations

import re
import signal
import time

from cli_workers import Workers, wait_until
from conftest import broker_env, write_tasks
from workqueue import seed
from workqueue.errors import EXIT_OK, EXIT_STOPPED
from workqueue.local import free_port

SLOW = ("sh", "-c", "sleep 0.2")


def worker(broker, server_for, tmp_path, index: int, *command: str) -> Workers:
    env = {**broker_env(broker, server_for), "JOB_COMPLETION_INDEX": str(index),
           "WORKQUEUE_LOG_LEVEL": "INFO", "WORKQUEUE_BATCH_SIZE": "5"}
    return Workers(env, tmp_path / f"logs-{index}", 1, *command)


def test_a_stopped_worker_exits_0_except_at_index_0(broker, server_for, tmp_path):
    # Given workers at index 0 and 1, part-way through slow tasks
    write_tasks(tmp_path / "t.txt", 100)
    seed(broker, str(tmp_path / "t.txt"))
    first, second = (worker(broker, server_for, tmp_path, i, *SLOW) for i in (0, 1))
    wait_until(lambda: broker.status().done >= 4, what="4 tasks done")
    # When both pods are stopped
    for workers in (first, second):
        workers.procs[0].send_signal(signal.SIGTERM)
    # Then index 1 succeeds (replaced at once, no backoff) and index 0 exits with the stop
    # code (podFailurePolicy Ignore): the Job goes on, and only index 0 may end it
    assert second.wait() == [EXIT_OK], second.text()
    assert first.wait() == [EXIT_STOPPED], first.text()
    # And nothing they held is lost: every task is still to be done or done
    status = broker.status()
    assert status.done + status.pending == 100 and status.leased == 0


def test_once_drained_other_indexes_wait_for_index_0(broker, server_for, tmp_path):
    # Given a queue that a worker at index 1 drains on its own
    write_tasks(tmp_path / "t.txt", 10)
    seed(broker, str(tmp_path / "t.txt"))
    second = worker(broker, server_for, tmp_path, 1, "true")
    wait_until(lambda: broker.status().drained, what="the queue drained")
    # Then it does not exit: its success would start the next index's pod, and so on
    time.sleep(2)
    assert second.procs[0].poll() is None
    assert "waiting for the worker at index 0 to end the Job" in second.text()
    # When index 0 runs, it finds the queue drained and succeeds (which ends the Job)
    first = worker(broker, server_for, tmp_path, 0, "true")
    assert first.wait() == [EXIT_OK], first.text()
    # And the Job controller then stops index 1, which succeeds too
    second.procs[0].send_signal(signal.SIGTERM)
    assert second.wait() == [EXIT_OK], second.text()


def test_a_worker_stopped_before_its_broker_answers_exits_0_except_at_index_0(
        broker, server_for, tmp_path):
    # Given workers at index 0 and 1 whose broker is not up yet (a port nothing listens on)
    env = {**broker_env(broker, server_for), "WORKQUEUE_CONNECT_TIMEOUT": "60"}
    env["WORKQUEUE_BROKER_URL"] = re.sub(r":\d+/", f":{free_port()}/",
                                         env["WORKQUEUE_BROKER_URL"])
    waiting = [Workers({**env, "JOB_COMPLETION_INDEX": str(i)}, tmp_path / f"logs-{i}", 1,
                       "true") for i in (0, 1)]
    for workers in waiting:
        wait_until(lambda w=workers: "cannot reach" in w.text(), what="the wait for the broker")
    # When both pods are stopped (a drain while the broker restarts)
    for workers in waiting:
        workers.procs[0].send_signal(signal.SIGTERM)
    # Then index 1, holding nothing, succeeds, and index 0 exits with the stop code
    assert waiting[1].wait(30) == [EXIT_OK], waiting[1].text()
    assert waiting[0].wait(30) == [EXIT_STOPPED], waiting[0].text()
