"""`workqueue exporter` serves a queue's state to a real Prometheus (Debian's package) on every
broker version: after a run with a task done at once, one retried and one dead, the numbers
Prometheus holds are those `status` and the report give."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import WORKQUEUE, broker_env
from prometheus_server import Prometheus
from render import CHART
from workqueue import seed
from workqueue.local import free_port, wait_for_port

TASKS = ["ok-1", "ok-2", "ok-3", "flaky", "broken"]
FLAKY_THEN_FINE = ('case "$WORKQUEUE_PAYLOAD" in broken) exit 9;; '
                   'flaky) [ -e {marker} ] && exit 0; touch {marker}; exit 1;; esac')


@pytest.fixture
def exporter(broker, server_for, tmp_path):
    """`workqueue exporter` on a free loopback port, reading the report at every scrape."""
    port = free_port()
    env = {**os.environ, **broker_env(broker, server_for)}
    log = (tmp_path / "exporter.log").open("wb")
    process = subprocess.Popen([*WORKQUEUE, "exporter", "--address", "127.0.0.1", "--port",
                                str(port), "--report-every", "0.5"],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(process, port, 30, "workqueue exporter")
        yield port
    finally:
        process.terminate()
        try:
            assert process.wait(15) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            log.close()


DASHBOARD = CHART / "dashboards" / "workqueue-job.json"
DASHBOARD_VARIABLES = {"namespace": "jobs", "job": "demo-workqueue-job-metrics",
                       "__rate_interval": "10s"}
"""Values for the dashboard's variables: Grafana's rate interval, and the labels a
ServiceMonitor gives the exporter's series (the Prometheus here sets the same)."""


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard, its variables filled in: the panels'
    targets, and the series its variables list labels of (label_values(SERIES, LABEL) is
    Grafana's, not PromQL)."""
    board = json.loads(DASHBOARD.read_text())
    expressions = [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((.*), *(\w+)\)", variable["query"])
            assert inner, variable["query"]
            expressions.append(f"count by ({inner[2]}) ({inner[1]})")
    filled = []
    for expression in expressions:
        for name, value in sorted(DASHBOARD_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expression = expression.replace(f"${name}", value)
        assert "$" not in expression, expression
        filled.append(expression)
    return filled


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_prometheus_holds_the_numbers_status_gives(broker, server_for, exporter, tmp_path):
    # Given a queue of five tasks: three fine, one that fails once, one that always fails
    (tmp_path / "t.txt").write_text("\n".join(TASKS) + "\n")
    seed(broker, str(tmp_path / "t.txt"))
    # (labelled as a ServiceMonitor labels the chart's exporter, for the dashboard)
    prometheus = Prometheus(tmp_path, [f"127.0.0.1:{exporter}"], job=DASHBOARD_VARIABLES["job"],
                            labels={"namespace": DASHBOARD_VARIABLES["namespace"]})
    try:
        assert prometheus.value('workqueue_tasks{state="pending"}') == 5
        # When a worker drains it, two attempts per task
        script = FLAKY_THEN_FINE.format(marker=tmp_path / "flaky-failed")
        worker = subprocess.run(
            [*WORKQUEUE, "work", "--max-attempts", "2", "--", "sh", "-c", script],
            env={**os.environ, **broker_env(broker, server_for)}, capture_output=True,
            text=True, timeout=120)
        assert worker.returncode == 3, worker.stderr
        status = broker.status()
        records = list(broker.records())
        # Then Prometheus, scraping the exporter, holds what status and the report say
        assert prometheus.value("workqueue_drained == 1") == 1
        assert prometheus.value("workqueue_tasks_done_total") == status.done == 4
        assert prometheus.value("workqueue_tasks_dead_total") == status.dead == 1
        assert prometheus.value("workqueue_task_retries_total") == status.retried == 2
        assert prometheus.value("workqueue_task_runs_total") == sum(
            record.attempts for record in records) == 7
        assert prometheus.value("workqueue_seeded_tasks") == 5
        assert prometheus.value('workqueue_tasks{state="pending"}') == 0
        assert prometheus.value('workqueue_task_duration_seconds_count{outcome="done"}') == 4
        assert prometheus.value('workqueue_task_duration_seconds_count{outcome="dead"}') == 1
        assert prometheus.value(f'workqueue_run_info{{queue="{broker.queue}"}}') == 1
        assert prometheus.value("workqueue_broker_up") == 1
        # And every query of the chart's dashboard has data: it names only what is served
        for expression in dashboard_queries():
            assert prometheus.query(expression), f"no data for the dashboard's {expression}"
    finally:
        prometheus.stop()
    # And the exporter's own page parses as Prometheus text, every bucket count in order
    samples = scrape(exporter)
    buckets = sorted((float(dict(labels)["le"]), value) for (name, labels), value in
                     samples.items() if name == "workqueue_task_duration_seconds_bucket"
                     and dict(labels)["outcome"] == "done")
    assert [value for _bound, value in buckets] == sorted(value for _bound, value in buckets)
    assert buckets[-1] == (float("inf"), 4)


def start_exporter(tmp_path, url: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "WORKQUEUE_BROKER_URL": url, "WORKQUEUE_QUEUE": "nowhere",
           "WORKQUEUE_CONNECT_TIMEOUT": "1", "WORKQUEUE_OUTAGE_SECONDS": "1"}
    return subprocess.Popen([*WORKQUEUE, "exporter", "--address", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def test_an_exporter_without_its_broker_serves_broker_up_0_and_stops_on_sigterm(tmp_path):
    # Given an exporter whose broker is not there (not started yet, or gone)
    port = free_port()
    process = start_exporter(tmp_path, f"redis://127.0.0.1:{free_port()}/0", port)
    try:
        wait_for_port(process, port, 30, "workqueue exporter")
        # When it is scraped, twice
        first, second = scrape(port), scrape(port)
        # Then it says the broker is down, and nothing it cannot know
        assert first == second == {("workqueue_broker_up", ()): 0.0}
        # And SIGTERM ends it at once, exit 0
        process.terminate()
        assert process.wait(10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=10)[0].decode()
    assert "Traceback" not in output
    assert output.count("cannot read queue 'nowhere' for metrics") == 1, output


def test_a_port_in_use_is_one_line_that_names_the_flag(tmp_path):
    # Given a port something else listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # When the exporter is asked to serve there
        process = start_exporter(tmp_path, "redis://127.0.0.1:1/0", port)
        output = process.communicate(timeout=30)[0].decode()
    # Then it exits 2 with one line that says which port and what to change
    assert process.returncode == 2, output
    [line] = output.strip().splitlines()
    assert f"cannot serve metrics on 127.0.0.1:{port}" in line and "--port" in line


HOLD = ('case "$WORKQUEUE_PAYLOAD" in hold) while [ ! -e {release} ]; do sleep 0.1; done;; '
        'flaky) [ -e {marker} ] && exit 0; touch {marker}; exit 1;; esac')


def scrape_until(port: int, wanted: dict, timeout: float = 60.0) -> dict:
    """The worker's metrics once every sample named in ``wanted`` has at least its value."""
    deadline = time.monotonic() + timeout
    samples: dict = {}
    while time.monotonic() < deadline:
        try:
            samples = scrape(port)
        except OSError:
            samples = {}
        if all(samples.get(key, -1.0) >= value for key, value in wanted.items()):
            return samples
        time.sleep(0.2)
    raise AssertionError(f"the worker's metrics never showed {wanted}: {samples}")


def test_a_worker_serves_its_own_counts_while_it_runs(broker, server_for, tmp_path):
    # Given two fine tasks, one that fails once, and one that runs until the test lets it end
    (tmp_path / "t.txt").write_text("ok-1\nok-2\nflaky\nhold\n")
    seed(broker, str(tmp_path / "t.txt"))
    release = tmp_path / "release"
    script = HOLD.format(release=release, marker=tmp_path / "flaky-failed")
    port = free_port()
    # When a worker with a metrics port runs them, one at a time, with a 3 s lease
    worker = subprocess.Popen(
        [*WORKQUEUE, "work", "--metrics-port", str(port), "--batch-size", "1",
         "--lease-seconds", "3", "--", "sh", "-c", script],
        env={**os.environ, **broker_env(broker, server_for)}, stderr=subprocess.PIPE)
    try:
        # Then while it holds the last task, it counts what it settled and ran
        done = ("workqueue_worker_tasks_total", (("outcome", "done"),))
        retried = ("workqueue_worker_tasks_total", (("outcome", "retry"),))
        ran = ("workqueue_worker_task_duration_seconds_count", ())
        samples = scrape_until(port, {done: 2.0, retried: 1.0, ran: 3.0})
        assert (samples[done], samples[retried], samples[ran]) == (2.0, 1.0, 3.0)
        assert samples[("workqueue_worker_broker_outages_total", ())] == 0.0
        # And its heartbeats renew the lease of the task that runs past a beat (every 1 s)
        scrape_until(port, {("workqueue_worker_lease_renewals_total", ()): 1.0})
        release.touch()
        assert worker.wait(60) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        stderr = worker.communicate(timeout=10)[1].decode()
    assert "Traceback" not in stderr
    assert broker.status().done == 4
