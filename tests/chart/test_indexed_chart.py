"""mode: indexed renders a Kubernetes Indexed Job and nothing of the queue modes: no broker,
seeder, Secret, broker NetworkPolicy or helm test pod.

The Job fields follow the Kubernetes Job API (batch/v1 JobSpec): completionMode Indexed,
backoffLimitPerIndex (beta and on by default from 1.29, the chart's kubeVersion floor; GA in
1.33), and the controller's batch.kubernetes.io/job-index-failure-count pod annotation, which
pkg/controller/job/indexed_job_utils.go (addIndexFailureCountAnnotation) writes on every pod
of a Job with backoffLimitPerIndex.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml

from render import (
    CHART,
    INDEXED_CI_VALUES,
    by_kind_name,
    helm,
    load_values,
    render_chart,
    template,
    validate_strictly,
)
from workqueue.errors import EXIT_CODES, EXIT_CONFIG, EXIT_ERROR, TaskSourceError
from workqueue.indexed import FAILURES_ENV

WORKER = ("Job", "demo-workqueue-job-worker")


def _worker(objects: list[dict]) -> dict:
    return by_kind_name(objects)[WORKER]


def _worker_name(values: dict) -> str:
    return _worker(render_chart(values))["metadata"]["name"]


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
@pytest.mark.parametrize("values_file", INDEXED_CI_VALUES,
                         ids=lambda p: p.stem.removesuffix("-values"))
def test_indexed_renders_one_indexed_job_and_no_broker(helm_name, values_file):
    lint = helm(helm_name, "lint", "--strict", str(CHART), "-f", str(values_file))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    values = load_values(values_file)
    objects = render_chart(helm_name=helm_name, files=[values_file])
    validate_strictly(objects)
    kinds = sorted(o["kind"] for o in objects)
    # The tasks ConfigMap only for inline tasks; the runtime NetworkPolicy; the worker's SA.
    expected = ["Job", "NetworkPolicy", "ServiceAccount"]
    if not values.get("tasksFrom", {}).get("configMaps"):
        expected.append("ConfigMap")
    assert kinds == sorted(expected)
    spec = _worker(objects)["spec"]
    count = values["tasksFrom"]["count"] if values["tasks"] == [] else len(values["tasks"])
    attempts = values.get("worker", {}).get("maxAttempts", 3)
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == count
    assert spec["backoffLimitPerIndex"] == attempts - 1
    # backoffLimit would count every index's failures together and stop the others.
    assert "backoffLimit" not in spec
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["workqueue", "run-index"]
    env = {e["name"]: e for e in container["env"]}
    assert env["WORKQUEUE_EXPECT_COUNT"]["value"] == str(count)
    assert env["WORKQUEUE_MAX_ATTEMPTS"]["value"] == str(attempts)
    assert env[FAILURES_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-index-failure-count']"
    assert not any(name.startswith("WORKQUEUE_BROKER") for name in env)
    assert {v["name"] for v in pod["volumes"]} == {"tmp", "tasks"}


def test_indexed_exit_codes_fail_the_job_only_where_every_index_would_fail_alike():
    spec = _worker(render_chart({"mode": "indexed"}))["spec"]
    rules = spec["podFailurePolicy"]["rules"]
    fail_job = [r for r in rules if r["action"] == "FailJob"]
    assert len(fail_job) == 1
    codes = fail_job[0]["onExitCodes"]["values"]
    assert codes == [EXIT_CONFIG, TaskSourceError.exit_code]
    documented = {row.code for row in EXIT_CODES}
    assert set(codes) <= documented
    # A failed task (1) must count against its own index, never fail the whole Job.
    assert EXIT_ERROR not in codes
    assert any(r["action"] == "Ignore" and r["onPodConditions"][0]["type"] == "DisruptionTarget"
               for r in rules)


def test_inline_tasks_reach_the_indexed_workers_unchanged():
    path = next(p for p in INDEXED_CI_VALUES if "-tasks-" in p.name)
    values, objects = load_values(path), render_chart(files=[path])
    rendered = by_kind_name(objects)
    tasks = rendered[("ConfigMap", "demo-workqueue-job-tasks")]["data"]["tasks.jsonl"]
    assert [json.loads(line) for line in tasks.splitlines()] == values["tasks"]
    volume = next(v for v in _worker(objects)["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "tasks")
    assert volume["projected"]["sources"][0]["configMap"]["name"] == "demo-workqueue-job-tasks"


def test_a_new_task_list_or_rerun_makes_a_new_indexed_job():
    # The task ConfigMap is not part of the Job, so the run id must be: same count, new list.
    base = {"mode": "indexed", "tasks": ["a", "b"]}
    name = _worker_name(base)
    assert _worker_name(base) == name
    assert _worker_name({**base, "tasks": ["a", "c"]}) != name
    assert _worker_name({**base, "rerun": 1}) != name
    assert _worker_name({**base, "worker": {"parallelism": 9}}) == name


def test_indexed_notes_give_the_verdict_from_the_job_status():
    out = helm("helm4", "install", "demo", str(CHART), "--dry-run=client", "--set",
               "mode=indexed")
    assert out.returncode == 0, out.stderr
    notes = out.stdout.split("NOTES:", 1)[1]
    assert "status.failedIndexes" in notes
    assert "helm test" in notes and "no helm test" in notes
    assert "seeder" not in notes and "workqueue status" not in notes


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
def test_indexed_job_names_make_room_for_the_last_pod_hostname(helm_name):
    # The API server rejects an Indexed Job whose "<name>-<last index>" is not a DNS label
    # (ValidateJob): a long name gives up the end of its prefix instead, keeping its digest
    out = template({"mode": "indexed"}, helm_name,
                   name="a-very-long-release-name-for-the-frames-batch-x")
    assert out.returncode == 0, out.stderr
    name = next(o["metadata"]["name"] for o in yaml.safe_load_all(out.stdout)
                if o and o["kind"] == "Job")
    assert len(f"{name}-11") == 63 and re.search(r"-[0-9a-f]{8}$", name)
    assert name.startswith("a-very-long-release-name-for-the-frames-batch-w")


def test_indexed_refuses_lists_above_the_api_servers_limit():
    big = {"mode": "indexed", "tasks": [],
           "tasksFrom": {"configMaps": ["t-00000"], "count": 100_001, "checksum": "ab"}}
    out = template(big)
    assert out.returncode != 0
    assert "at most 100000 tasks" in out.stderr and "use mode fine or coarse" in out.stderr
    assert template({**big, "tasksFrom": {**big["tasksFrom"], "count": 100_000}}).returncode == 0
