"""The e2e harness against the answers a real API server gave (../shared/evidence): the real
Python client runs end to end, and only its HTTP transport is replaced by recorded responses
(tests/unit/recorded_api/; the 400 bodies are verbatim from the evidence). So each response the
cluster gave runs the harness code the cluster will run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from e2e_api import (
    CaseTimeout,
    ReportSummary,
    evict,
    live_jobs,
    logs_of_pods,
    pod_log,
    pod_states,
    save_bundle,
    summarize_report,
    wait_until,
    wq_function,
)
from workqueue.report import TaskRecord, write_jsonl

RECORDED = Path(__file__).with_name("recorded_api")
NS = "wq-e2e-case-1a2b"
WAITING, RUNNING, DELETING = (f"e2e-workqueue-job-worker-1e0aabac-{i}" for i in
                              ("0-l48dr", "1-nbhkl", "2-p8ws9"))


class RecordedServer:
    """The client's REST transport, answering from recorded responses: routes of (method,
    path regex) -> (status, body, content type), the first match wins. Calls are kept."""

    def __init__(self, routes: list[tuple[str, str, int, str, str]]):
        self.routes = routes
        self.calls: list[tuple[str, str, object]] = []

    def request(self, method, url, headers=None, body=None, post_params=None,
                _request_timeout=None):
        path = re.sub(r"^https?://[^/]+", "", url)
        self.calls.append((method, path, body))
        for want_method, pattern, status, text, content_type in self.routes:
            if want_method == method and re.match(pattern, path):
                response = SimpleNamespace(status=status, reason=_REASONS[status],
                                           data=text.encode(),
                                           headers={"content-type": content_type})
                return client.rest.RESTResponse(response)
        raise AssertionError(f"no recorded answer for {method} {path}")

    def close(self) -> None:
        pass


_REASONS = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found",
            429: "Too Many Requests", 500: "Internal Server Error"}


def recorded(name: str) -> str:
    return (RECORDED / name).read_text()


def api(*routes: tuple[str, str, int, str, str]) -> tuple[client.CoreV1Api, client.BatchV1Api,
                                                            RecordedServer]:
    config = client.Configuration(host="https://recorded.invalid")
    api_client = client.ApiClient(config)
    server = RecordedServer(list(routes))
    api_client.rest_client = server
    return client.CoreV1Api(api_client), client.BatchV1Api(api_client), server


JSON, TEXT = "application/json", "text/plain"
PODS = ("GET", rf"/api/v1/namespaces/{NS}/pods(\?|$)", 200, recorded("pods.json"), JSON)


def log_route(pod: str, status: int, body: str) -> tuple[str, str, int, str, str]:
    return ("GET", rf"/api/v1/namespaces/{NS}/pods/{pod}/log", status, body,
            TEXT if status == 200 else JSON)


@pytest.mark.parametrize("status, body", [
    (200, ""),  # an empty log
    (400, recorded("log-waiting.json")),
    (400, recorded("log-not-available.json")),
    (404, recorded("log-gone.json")),
])
def test_a_log_that_cannot_be_read_yet_or_any_more_is_empty(status, body):
    core, _batch, server = api(log_route(WAITING, status, body))
    assert pod_log(core, WAITING, NS) == ""
    (method, path, _body), = server.calls
    assert (method, path.split("?")[0]) == ("GET", f"/api/v1/namespaces/{NS}/pods/{WAITING}/log")
    assert "container=worker" in path


def test_an_empty_log_given_as_none_is_empty():
    # The client at review returned None for an empty log, which broke `"\n".join(...)`;
    # this one returns "" for the same body, so the review's answer is replayed as it came.
    class ReviewClient:
        def read_namespaced_pod_log(self, name, namespace, container):
            return None

    assert pod_log(ReviewClient(), WAITING, NS) == ""


def test_a_log_is_returned_whole():
    core, _batch, _server = api(log_route(RUNNING, 200, "one\ntwo\n"))
    assert pod_log(core, RUNNING, NS) == "one\ntwo\n"


@pytest.mark.parametrize("status, body", [
    (400, recorded("log-which-container.json")),
    (500, '{"kind":"Status","status":"Failure","message":"etcdserver: timeout","code":500}'),
])
def test_other_errors_are_not_swallowed(status, body):
    core, _batch, _server = api(log_route(RUNNING, status, body))
    with pytest.raises(ApiException) as caught:
        pod_log(core, RUNNING, NS)
    assert caught.value.status == status


def test_logs_of_pods_reads_each_pod_that_answers_and_skips_none():
    core, _batch, server = api(
        PODS,
        log_route("e2e-workqueue-job-broker-0", 400, recorded("log-waiting.json")),
        log_route(WAITING, 400, recorded("log-waiting.json")),
        log_route(RUNNING, 200, "12:00:01 INFO task 00000003 (frame-003) done\n"),
        # Deleted between the list and the read
        log_route(DELETING, 404, recorded("log-gone.json")))
    logs = logs_of_pods(core, NS, "app.kubernetes.io/component=worker")
    assert logs == {"e2e-workqueue-job-broker-0": "", WAITING: "",
                    RUNNING: "12:00:01 INFO task 00000003 (frame-003) done\n", DELETING: ""}
    assert "labelSelector=app.kubernetes.io/component%3Dworker" in server.calls[0][1]


def test_pod_states_say_why_a_pod_waits():
    core, _batch, _server = api(PODS)
    line = pod_states(core.list_namespaced_pod(NS).items)
    assert line.split("; ") == [
        "e2e-workqueue-job-broker-0 Pending (Unschedulable: 0/1 nodes are available: 1 "
        "Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found"
        " for incoming pod.)",
        f"{WAITING} Pending (ContainerCreating)",
        f"{RUNNING} Running",
        f"{DELETING} Running, deleting"]


def test_a_job_with_no_pods_yet_has_no_pod_states():
    core, _batch, _server = api(("GET", rf"/api/v1/namespaces/{NS}/pods", 200,
                                 '{"kind":"PodList","apiVersion":"v1","metadata":{},"items":[]}',
                                 JSON))
    assert pod_states(core.list_namespaced_pod(NS).items) == "no pods"


def test_live_jobs_leave_out_the_job_helm_is_deleting():
    _core, batch, _server = api(("GET", rf"/apis/batch/v1/namespaces/{NS}/jobs", 200,
                                 recorded("jobs.json"), JSON))
    jobs = live_jobs(batch, NS, "app.kubernetes.io/component=worker")
    assert [job.metadata.name for job in jobs] == ["e2e-workqueue-job-worker-8d19ad5c"]
    conditions = {c.type: c.reason for c in jobs[0].status.conditions}
    assert conditions == {"SuccessCriteriaMet": "SuccessPolicy", "Complete": "SuccessPolicy"}


def test_eviction_goes_through_the_eviction_api():
    core, _batch, server = api(("POST", rf"/api/v1/namespaces/{NS}/pods/{RUNNING}/eviction",
                                201, recorded("eviction-created.json"), JSON))
    evict(core, RUNNING, NS)
    (method, _path, body), = server.calls
    assert method == "POST"
    assert body["metadata"] == {"name": RUNNING, "namespace": NS}


def test_a_refused_eviction_raises_with_the_servers_reason():
    core, _batch, _server = api(("POST", rf"/api/v1/namespaces/{NS}/pods/{RUNNING}/eviction",
                                 429, recorded("eviction-refused.json"), JSON))
    with pytest.raises(ApiException) as caught:
        evict(core, RUNNING, NS)
    assert caught.value.status == 429 and "disruption budget" in caught.value.body


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_wait_until_returns_the_first_answer():
    clock, answers = Clock(), iter([None, None, "done"])
    assert wait_until("x", lambda: next(answers), 60, clock=clock, sleep=clock.sleep) == "done"
    assert clock.now == 6.0


def test_wait_until_names_what_it_waited_for_and_what_it_saw():
    clock = Clock()
    with pytest.raises(CaseTimeout) as caught:
        wait_until("the worker Job's verdict", lambda: None, 30, seen=lambda: "broker-0 Pending",
                   clock=clock, sleep=clock.sleep)
    assert str(caught.value) == ("gave up after 30 s waiting for the worker Job's verdict; "
                                 "last seen: broker-0 Pending")
    assert 30 <= clock.now <= 33


def test_the_report_is_summed_from_the_products_own_jsonl():
    records = [TaskRecord("00000001", "done", 1, 0.2, 0, "w-0", 1.0e9, payload="frame-001"),
               TaskRecord("00000002", "dead", 2, 0.1, 9, "w-1", 1.0e9, "exit code 9",
                          payload="frame\u2028007"),
               TaskRecord("00000003", "done", 3, 0.2, 0, "w-0", 1.0e9, payload="frame-003"),
               TaskRecord("00000004", "pending", 1)]
    summary = summarize_report("".join(write_jsonl(records)))
    assert summary == ReportSummary(done=2, dead=1, pending=1, runs=7,
                                    dead_payloads=("frame\u2028007",))
    assert summary.line() == "2 done, 1 dead, 7 runs"


def test_an_empty_report_sums_to_nothing():
    assert summarize_report("") == ReportSummary(0, 0, 0, 0, ())


def test_wq_function_is_cut_from_notes_as_people_copy_it():
    notes = ("Then:\n  wq() { kubectl exec job/x -- workqueue \"$@\"\n"
             "    echo more; }\n  wq status\n")
    assert wq_function(notes) == '  wq() { kubectl exec job/x -- workqueue "$@"\n    echo more; }'
    with pytest.raises(AssertionError, match="no wq"):
        wq_function("Watch the job finish")


def test_a_bundle_keeps_what_explains_a_failure_even_when_parts_cannot_be_read(tmp_path):
    core, _batch, _server = api(
        PODS,
        ("GET", rf"/api/v1/namespaces/{NS}/events", 200, recorded("events.json"), JSON),
        log_route("e2e-workqueue-job-broker-0", 400, recorded("log-waiting.json")),
        log_route(WAITING, 400, recorded("log-not-available.json")),
        log_route(RUNNING, 200, "12:00:01 ERROR task 00000007 (frame-007) dead-lettered\n"),
        log_route(DELETING, 404, recorded("log-gone.json")))

    def no_report() -> str:
        raise RuntimeError("the tools pod did not start")

    folder = save_bundle(tmp_path / "case", core, NS, {
        "helm-status.txt": lambda: "STATUS: deployed\n", "report.jsonl": no_report})
    events = (folder / "events.txt").read_text().splitlines()
    assert len(events) == 2
    # In time order, whichever timestamp each event carries
    assert "Normal SuccessfulCreate Job/e2e-workqueue-job-worker-1e0aabac" in events[0]
    assert "Warning FailedScheduling Pod/e2e-workqueue-job-broker-0" in events[1]
    assert "Insufficient cpu" in (folder / "pods.txt").read_text()
    assert (folder / "logs" / f"{RUNNING}.log").read_text().endswith("dead-lettered\n")
    assert (folder / "logs" / f"{DELETING}.log").read_text() == ""
    assert (folder / "helm-status.txt").read_text() == "STATUS: deployed\n"
    assert (folder / "report.jsonl").read_text() == (
        "could not read report.jsonl: the tools pod did not start")


def test_recorded_bodies_are_the_api_servers_status_objects():
    for name in ("log-waiting.json", "log-not-available.json", "log-gone.json"):
        status = json.loads(recorded(name))
        assert status["kind"] == "Status" and status["code"] in (400, 404), name
