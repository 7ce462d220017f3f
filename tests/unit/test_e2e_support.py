"""The parts of `make e2e` that need no cluster: tool checks, Job states, logs, leftovers."""

from __future__ import annotations

import pytest

from e2e_support import (
    has_default_storage_class,
    job_state,
    leftovers,
    missing_tasks,
    missing_tools,
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
    assert job_state(status) == expected


def test_missing_tasks_reads_worker_logs():
    logs = "worker x: fine mode\ndone: a\nnoise done: b\nINFO item 3 failed\n"
    assert missing_tasks(["a", "b", "c", "done"], logs) == ["c", "done"]


def test_leftovers_ignore_what_kubernetes_creates():
    found = {"configmaps": ["kube-root-ca.crt", "e2e-workqueue-job-seeder-tasks"],
             "serviceaccounts": ["default"], "pods": []}
    assert leftovers(found) == ["configmaps/e2e-workqueue-job-seeder-tasks"]


def test_a_default_storage_class_is_found_by_either_annotation():
    assert has_default_storage_class([None, {"storageclass.kubernetes.io/is-default-class":
                                             "true"}])
    assert has_default_storage_class([{"storageclass.beta.kubernetes.io/is-default-class":
                                       "true"}])
    assert not has_default_storage_class([None, {"storageclass.kubernetes.io/is-default-class":
                                                 "false"}])
    assert not has_default_storage_class([])
