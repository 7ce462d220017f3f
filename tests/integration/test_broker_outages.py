"""A broker that restarts, drops connections or comes back empty, met by `workqueue work`
processes as the chart's pods run them, on every broker version.

What the cluster did (the pod-churn issue): a RabbitMQ worker that had reconnected after a
broker restart ended with exit 5, a FailJob code, when it was then stopped or met a second
reset; a RabbitMQ broker that came back without its data ended the workers with 5 instead of 6;
a Redis restart left no line in the workers' logs at all.
"""

from __future__ import annotations

import signal
import time

import pytest

from cli_workers import Workers, wait_until
from conftest import broker_env, kind_of, write_tasks
from workqueue import seed
from workqueue.brokers.rabbitmq import RabbitMQBroker, connection
from workqueue.errors import EXIT_OK, EXIT_STATE_LOST, EXIT_STOPPED, BrokerAuthError

SLOW = ("sh", "-c", "sleep 0.1")


def start_workers(broker, server_for, tmp_path, count: int = 1, tasks: int = 100,
                  **extra: str) -> Workers:
    write_tasks(tmp_path / "t.txt", tasks)
    seed(broker, str(tmp_path / "t.txt"), run_id="r1")
    env = {**broker_env(broker, server_for), "WORKQUEUE_RUN_ID": "r1",
           "WORKQUEUE_OUTAGE_SECONDS": "60", "WORKQUEUE_BATCH_SIZE": "5",
           "WORKQUEUE_LOG_LEVEL": "INFO", **extra}
    workers = Workers(env, tmp_path / "logs", count, *SLOW)
    wait_until(lambda: broker.status().done >= 5, what="5 tasks done")
    return workers


def done_after(broker, before: int) -> bool:
    return broker.status().done > before


def test_a_worker_stopped_right_after_a_restart_exits_with_the_stop_code(
        broker, server_for, tmp_path, request):
    # Given a worker part-way through its tasks
    server = request.getfixturevalue(f"{kind_of(broker)}_server")
    workers = start_workers(broker, server_for, tmp_path)
    # When the broker restarts with its data, and the worker has carried on after it
    server.restart()
    done = broker.status().done
    wait_until(lambda: done_after(broker, done), what="progress after the restart")
    # And the worker is then stopped, as a pod deletion stops it
    workers.procs[0].send_signal(signal.SIGTERM)
    # Then it exits with the stop code, which the chart ignores, never a FailJob code
    assert workers.wait() == [EXIT_STOPPED], workers.text()
    log = workers.text()
    assert "lost the broker" not in log and "Traceback" not in log
    # And its log says the broker was away and came back. Redis may restart between two
    # commands, unseen by them: its new run id on the next connection tells.
    if kind_of(broker) == "redis":
        assert f"{broker.server} restarted" in log
    else:
        assert "lost the connection to" in log and "is back after" in log


def test_two_connection_resets_within_the_tolerance_are_ridden_out(
        broker, server_for, tmp_path, request):
    # Given two workers part-way through 100 tasks. A RabbitMQ task whose worker's connection
    # dropped while it held it alone waits a lease for that worker's pardon (pardons.py): a
    # short lease, so that the run is not a minute of that wait.
    server = request.getfixturevalue(f"{kind_of(broker)}_server")
    workers = start_workers(broker, server_for, tmp_path, count=2, WORKQUEUE_LEASE_SECONDS="5")
    # When the broker drops every connection twice, a second apart
    server.close_connections()
    time.sleep(1)
    server.close_connections()
    # Then both workers finish the run, and every task is done
    assert workers.wait(120) == [EXIT_OK, EXIT_OK], workers.text()
    assert broker.status().drained and broker.status().done == 100
    assert "Traceback" not in workers.text()


def test_a_broker_back_without_its_data_ends_the_workers_with_state_lost(
        broker, server_for, tmp_path, request):
    # Given two workers part-way through their tasks
    server = request.getfixturevalue(f"{kind_of(broker)}_server")
    workers = start_workers(broker, server_for, tmp_path, count=2)
    # When the broker comes back empty (persistence off: a new emptyDir)
    server.restart(wipe=True)
    # Then each worker exits 6 and names broker.persistence, never 5
    assert workers.wait(90) == [EXIT_STATE_LOST, EXIT_STATE_LOST], workers.text()
    log = workers.text()
    assert "lost its state mid-run" in log and "broker.persistence" in log
    assert "Traceback" not in log


def test_a_stop_while_the_broker_is_away_ends_in_seconds(broker, server_for, tmp_path,
                                                          request):
    # Given a worker part-way through its tasks, and a broker that then goes away
    server = request.getfixturevalue(f"{kind_of(broker)}_server")
    workers = start_workers(broker, server_for, tmp_path)
    server.stop()
    try:
        wait_until(lambda: "lost the connection to" in workers.text(), what="the outage")
        # When the pod is stopped (a drain, helm uninstall) during the outage
        started = time.monotonic()
        workers.procs[0].send_signal(signal.SIGTERM)
        # Then it exits with the stop code in seconds, not at the end of the tolerance (60 s)
        assert workers.wait(30) == [EXIT_STOPPED], workers.text()
        assert time.monotonic() - started < 10
        assert "stopped while waiting for" in workers.text()
        assert "Traceback" not in workers.text()
    finally:
        server.start()


def test_a_vhost_denied_past_a_nodes_boot_is_a_settings_error(rabbitmq_server, monkeypatch):
    # A booting node denies its vhosts until it has recovered them, so a denial is waited out
    # for a while (a pod beside a restarting broker once failed its Job here, exit 2); one that
    # lasts is a wrong vhost, and says so.
    monkeypatch.setattr(connection, "HANDSHAKE_GRACE_SECONDS", 1.0)
    url = rabbitmq_server.url.rsplit("/", 1)[0] + "/no-such-vhost"
    started = time.monotonic()
    with pytest.raises(BrokerAuthError, match="denied access to vhost 'no-such-vhost'"):
        RabbitMQBroker(url, "q", rabbitmq_server.password, connect_timeout=30)
    assert 1.0 <= time.monotonic() - started < 20
