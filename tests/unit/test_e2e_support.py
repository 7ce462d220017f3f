"""The parts of `make e2e` that need no cluster: tool checks, Job states, logs, leftovers."""

from __future__ import annotations

import pytest

from e2e_support import (
    CaseResult,
    failed_indexes,
    has_default_storage_class,
    image_loader,
    image_pull_problem,
    job_verdict,
    leftovers,
    missing_tools,
    no_way_to_the_nodes,
    results_table,
)


@pytest.mark.parametrize("env, docker_problem, expected", [
    ({"PATH": "/nonexistent"}, None, "kind not found: install it"),
    ({"PATH": "/nonexistent"}, "dockerd did not start", "Docker engine unavailable: dockerd"),
    ({"PATH": "/nonexistent", "KUBECONFIG": "/k"}, None, None),
    ({"PATH": "/nonexistent", "E2E_CONTEXT": "prod"}, "no docker", "set E2E_IMAGE"),
    ({"PATH": "/nonexistent", "E2E_CONTEXT": "prod", "E2E_IMAGE": "r/w:1"}, "no docker", None),
])
def test_missing_tools_says_what_and_how(env, docker_problem, expected):
    reason = missing_tools(env, docker_problem)
    assert (reason is None) if expected is None else (expected in reason)


def test_kind_on_path_is_enough(tmp_path):
    kind = tmp_path / "kind"
    kind.write_text("#!/bin/sh\n")
    kind.chmod(0o755)
    assert missing_tools({"PATH": str(tmp_path)}, None) is None


@pytest.mark.parametrize("status, expected", [
    (None, "running"),
    ({"active": 2}, "running"),
    ({"conditions": [{"type": "Complete", "status": "True"}]}, "complete"),
    ({"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}, "complete"),
    ({"conditions": [{"type": "Failed", "status": "True"}]}, "failed"),
    ({"conditions": [{"type": "FailureTarget", "status": "True"}]}, "failed"),
    ({"conditions": [{"type": "Complete", "status": "False"}]}, "running"),
    ({"conditions": [{"type": "Suspended", "status": "True"}]}, "running"),
])
def test_job_state(status, expected):
    assert job_verdict(status)[0] == expected


def test_leftovers_are_the_release_s_objects_only():
    found = {
        "configmaps": [("kube-root-ca.crt", None), ("openshift-service-ca.crt", {}),
                       ("e2e-workqueue-job-tasks",
                        {"app.kubernetes.io/instance": "e2e"})],
        "serviceaccounts": [("default", None), ("pipeline", {"app": "openshift"})],
        "pods": [("e2e-workqueue-job-worker-1a2b3c4d-x7k2p", None)],
        "secrets": [("other-release-broker", {"app.kubernetes.io/instance": "other"})],
    }
    assert leftovers(found, "e2e") == ["configmaps/e2e-workqueue-job-tasks",
                                       "pods/e2e-workqueue-job-worker-1a2b3c4d-x7k2p"]


def test_job_verdict_gives_the_podfailurepolicy_reason():
    message = ("Container worker for pod ns/w-1 failed with exit code 6 matching FailJob rule "
               "at index 0")
    failing = {"conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy",
         "message": message}]}
    assert job_verdict(failing) == ("failed", f"PodFailurePolicy: {message}")
    done = {"conditions": [{"type": "SuccessCriteriaMet", "status": "True",
                            "reason": "CompletionsReached", "message": "Reached expected"},
                           {"type": "Complete", "status": "True"}]}
    assert job_verdict(done) == ("complete", "CompletionsReached: Reached expected")
    assert job_verdict({"active": 1}) == ("running", "")


def test_an_indexed_job_with_a_failed_index_is_failed_and_names_it():
    # The Job controller's FailedIndexes verdict (pkg/controller/job: JobReasonFailedIndexes)
    status = {"failed_indexes": "1,3-5,7", "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": "FailedIndexes",
         "message": "Job has failed indexes"}]}
    assert job_verdict(status) == ("failed", "FailedIndexes: Job has failed indexes")
    assert failed_indexes(status) == [1, 3, 4, 5, 7]
    assert failed_indexes({"failed_indexes": ""}) == []
    assert failed_indexes(None) == []


def _pod(name: str, waiting: dict | None, image: str = "workqueue-job:0.1.0") -> dict:
    state = {"waiting": waiting} if waiting else {"running": {"started_at": "now"}}
    return {"metadata": {"name": name},
            "status": {"container_statuses": [{"image": image, "state": state}]}}


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"])
def test_a_pod_that_cannot_pull_ends_the_case_with_the_image_name(reason):
    pods = [_pod("broker-0", None),
            _pod("worker-x", {"reason": reason, "message": "not found"})]
    problem = image_pull_problem(pods)
    assert problem is not None
    assert "worker-x cannot get image workqueue-job:0.1.0" in problem and reason in problem
    assert "E2E_IMAGE" in problem


def test_pods_that_wait_for_other_reasons_are_not_pull_problems():
    pods = [_pod("w", {"reason": "ContainerCreating"}), _pod("b", None), {"metadata": {
        "name": "pending"}, "status": {}}]
    assert image_pull_problem(pods) is None


@pytest.mark.parametrize("context, expected", [
    ("kind-wq", ["kind", "load", "docker-image", "img:1", "--name", "wq"]),
    ("k3d-dev", ["k3d", "image", "import", "img:1", "--cluster", "dev"]),
    ("minikube", ["minikube", "image", "load", "img:1", "--profile", "minikube"]),
    ("prod-eu", None),
    ("admin@kubernetes", None),
])
def test_the_image_is_loaded_where_the_tool_is_known(context, expected):
    assert image_loader(context, "img:1") == expected


def test_any_other_cluster_gets_one_line_on_how_to_get_the_image_there():
    line = no_way_to_the_nodes("prod-eu")
    assert "\n" not in line and "'prod-eu'" in line and "E2E_IMAGE=" in line


def test_a_default_storage_class_is_found_by_either_annotation():
    assert has_default_storage_class([None, {"storageclass.kubernetes.io/is-default-class":
                                             "true"}])
    assert has_default_storage_class([{"storageclass.beta.kubernetes.io/is-default-class":
                                       "true"}])
    assert not has_default_storage_class([None, {"storageclass.kubernetes.io/is-default-class":
                                                 "false"}])
    assert not has_default_storage_class([])


def test_the_results_table_gives_each_case_its_verdict_time_and_report():
    table = results_table([
        CaseResult("redis-fine", "complete: SuccessPolicy", 41.2, "20 done, 0 dead, 20 runs",
                   passed=True),
        CaseResult("poison", "failed: PodFailurePolicy: Container worker for pod x failed "
                   "with exit code 3 matching FailJob rule at index 2", 75.0,
                   "19 done, 1 dead, 21 runs", passed=False, kept="/tmp/wq-e2e/poison")])
    header, first, second, kept_title, kept = table.splitlines()
    assert header.split() == ["case", "verdict", "to", "verdict", "report", "(done,", "dead,",
                              "runs)"]
    assert first.split()[:3] == ["redis-fine", "pass", "complete:"]
    assert "41 s" in first and first.endswith("20 done, 0 dead, 20 runs")
    assert second.startswith("poison") and " FAIL " in second and "75 s" in second
    # Columns line up, and a long verdict is cut so the table stays readable
    assert first.index("41 s") == second.index("75 s")
    assert len(second) < 160
    assert (kept_title, kept) == ("kept for diagnosis:", "  poison: /tmp/wq-e2e/poison")


def test_a_case_that_never_reached_a_verdict_shows_dashes():
    table = results_table([CaseResult("broker-lost")])
    assert table.splitlines()[1].split() == ["broker-lost", "FAIL", "no", "verdict", "-", "-"]
