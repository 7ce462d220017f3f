"""The rendered pieces point at each other: hosts, Secrets, ConfigMaps, counts, commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import workqueue
from render import (
    CHART,
    CI_VALUES,
    INDEXED_CI_VALUES,
    by_kind_name,
    load_values,
    pod_metadata,
    pod_specs,
    render_chart,
)
from workqueue.cli import build_parser

RUNTIME_SOURCE = "\n".join(p.read_text() for p in Path(workqueue.__file__).parent.rglob("*.py"))
CASES = [None, *CI_VALUES]
"""Every rendering with a broker; ANY_CASE adds indexed mode's."""
CHART_DEFAULTS = load_values(CHART / "values.yaml")


def _case_id(case):
    return "defaults" if case is None else case.name.removesuffix("-values.yaml")


def _rendered(path):
    """(values as the user gave them, the rendered objects) for a ci/ file, or no values."""
    files = [] if path is None else [path]
    return (load_values(path) if path else {}), render_chart(files=files)


@pytest.fixture(params=CASES, ids=_case_id)
def case(request):
    return _rendered(request.param)


@pytest.fixture(params=[*CASES, *INDEXED_CI_VALUES], ids=_case_id)
def any_case(request):
    return _rendered(request.param)


def _task_count(values: dict) -> int:
    source = values.get("tasksFrom", {})
    if source.get("configMaps"):
        return source["count"]
    return len(values.get("tasks", CHART_DEFAULTS["tasks"]))


def _references(objects: list[dict]):
    """(kind, name, key) of every Secret and ConfigMap key a pod reads."""
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            for env in container.get("env", []):
                source = env.get("valueFrom", {})
                if "secretKeyRef" in source:
                    yield "Secret", source["secretKeyRef"]["name"], source["secretKeyRef"]["key"]
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    yield "ConfigMap", ref["name"], ref["key"]
        for volume in spec.get("volumes", []):
            sources = [volume, *volume.get("projected", {}).get("sources", [])]
            for src in sources:
                if "secret" in src:
                    ref = src["secret"]
                    for item in ref.get("items", []):
                        yield "Secret", ref.get("secretName") or ref.get("name"), item["key"]
                if "configMap" in src:
                    for item in src["configMap"].get("items", []):
                        yield "ConfigMap", src["configMap"]["name"], item["key"]


def test_every_secret_and_configmap_reference_resolves(any_case):
    values, objects = any_case
    rendered = by_kind_name(objects)
    auth = values.get("broker", {}).get("auth", {})
    user_supplied = {("ConfigMap", name, "tasks.jsonl")
                     for name in values.get("tasksFrom", {}).get("configMaps", [])}
    if auth.get("existingSecret"):
        user_supplied.add(("Secret", auth["existingSecret"], auth.get("passwordKey", "password")))
    refs = set(_references(objects))
    assert refs, "no references found: the walk over the pod specs is broken"
    for kind, name, key in refs:
        if (kind, name, key) in user_supplied:
            continue
        assert (kind, name) in rendered, f"{kind} {name} is neither rendered nor user-supplied"
        assert key in rendered[(kind, name)]["data"], f"{kind} {name} has no key {key}"
    # Everything the user promised to supply is actually used.
    assert user_supplied <= refs


def test_worker_reaches_the_broker_service_or_the_external_host(case):
    values, objects = case
    rendered = by_kind_name(objects)
    broker = values.get("broker", {})
    env = {e["name"]: e.get("value") for e in
           rendered[("Job", "demo-workqueue-job-worker")]["spec"]["template"]["spec"]
           ["containers"][0]["env"]}
    url = env["WORKQUEUE_BROKER_URL"]
    urls = url.split(",")
    external = broker.get("external", {})
    nodes = broker.get("rabbitmq", {}).get("replicas", 1)
    if external.get("enabled"):
        hosts = external.get("hosts") or [external["host"]]
        assert len(urls) == len(hosts)
        for host, one in zip(hosts, urls, strict=True):
            assert f"@{host}:" in one or f"//{host}:" in one
        assert not any(o["kind"] == "StatefulSet" for o in objects)
    elif nodes == 1:
        service = rendered[("Service", "demo-workqueue-job-broker")]
        port = service["spec"]["ports"][0]["port"]
        assert f"demo-workqueue-job-broker.jobs.svc:{port}/" in url
        broker_pods = rendered[("StatefulSet", "demo-workqueue-job-broker")]["spec"]["template"]
        selector = service["spec"]["selector"]
        assert selector.items() <= broker_pods["metadata"]["labels"].items()
    else:
        # One URL per node, by its name under the headless peers Service
        [statefulset] = [o for o in objects if o["kind"] == "StatefulSet"]
        name = statefulset["metadata"]["name"]
        assert name.startswith(f"demo-workqueue-job-broker-{nodes}-")
        peers = rendered[("Service", "demo-workqueue-job-broker-peers")]["spec"]
        assert statefulset["spec"]["serviceName"] == "demo-workqueue-job-broker-peers"
        assert peers["clusterIP"] == "None" and peers["publishNotReadyAddresses"]
        assert peers["selector"].items() <= statefulset["spec"]["template"]["metadata"][
            "labels"].items()
        assert urls == [f"amqp://workqueue@{name}-{i}."
                        f"demo-workqueue-job-broker-peers.jobs.svc:5672/%2F"
                        for i in range(nodes)]
        assert env["WORKQUEUE_BROKER_REPLICAS"] == str(nodes)
    scheme = "redis://" if broker.get("type", "redis") == "redis" else "amqp://"
    assert all(one.startswith(scheme) for one in urls)


def test_coarse_completions_equal_the_task_count_fine_counts_worker_pods(case):
    values, objects = case
    rendered = by_kind_name(objects)
    job = rendered[("Job", "demo-workqueue-job-worker")]
    count = _task_count(values)
    if values.get("mode", "fine") == "coarse":
        assert job["spec"]["completions"] == count
        assert "completionMode" not in job["spec"]
    else:
        # One index per worker pod's life; index 0 alone ends the Job (test_pod_churn.py)
        assert job["spec"]["completionMode"] == "Indexed"
        assert job["spec"]["completions"] == values.get("worker", {}).get("maxPods", 10000)
        assert job["spec"]["successPolicy"] == {"rules": [{"succeededIndexes": "0"}]}
    seeder = rendered[("Job", "demo-workqueue-job-seeder")]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in seeder["containers"][0]["env"]}
    assert env["WORKQUEUE_EXPECT_COUNT"] == str(count)


@pytest.mark.parametrize("path", [p for p in CI_VALUES if "-tasks-" in p.name],
                         ids=lambda p: p.name.removesuffix("-values.yaml"))
def test_inline_tasks_reach_the_seeder_unchanged(path):
    values, objects = load_values(path), render_chart(files=[path])
    chunk = by_kind_name(objects)[("ConfigMap", "demo-workqueue-job-tasks")]
    lines = chunk["data"]["tasks.jsonl"].splitlines()
    expected = values["tasks"]
    assert [json.loads(line) for line in lines] == expected


def test_runtime_commands_and_env_exist_in_the_cli(any_case):
    values, objects = any_case
    parser = build_parser()
    # Tunable options say which variable sets them in their help ("env WORKQUEUE_...").
    documented = " ".join(action.help or "" for sub in parser._subparsers._group_actions[0]
                          .choices.values() for action in sub._actions)
    runtime = 0
    for _, spec in pod_specs(objects):
        for container in spec["containers"]:
            if container.get("command", [""])[0] != "workqueue":
                continue
            runtime += 1
            # argparse exits (SystemExit) on an unknown subcommand or flag.
            parser.parse_args(container["command"][1:] + container.get("args", []))
            for env in container.get("env", []):
                name = env["name"]
                if name.startswith("WORKQUEUE_"):
                    short = f'_env("{name.removeprefix("WORKQUEUE_")}"'
                    read = name in RUNTIME_SOURCE or short in RUNTIME_SOURCE
                    assert read or f"env {name};" in documented, \
                        f"the runtime never reads {name}"
    # The seeder, the workers and the test pod (and the exporter, with metrics on); indexed
    # mode has only the workers.
    exporter = 1 if values.get("metrics", {}).get("enabled") else 0
    assert runtime == (1 if values.get("mode") == "indexed" else 3 + exporter)


def test_pods_meet_the_restricted_profile_and_have_resources(any_case):
    _, objects = any_case
    for obj, spec in pod_specs(objects):
        where = f"{obj['kind']} {obj['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec["containers"]:
            ctx = container["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["capabilities"]["drop"] == ["ALL"], where
            assert ctx["runAsUser"] > 0, where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= container["resources"][kind].keys(), where
            env_secrets = [e for e in container.get("env", [])
                           if "secretKeyRef" in e.get("valueFrom", {})]
            if container["name"] != "rabbitmq":
                assert not env_secrets, f"{where}: secrets belong in files, not the environment"


def test_only_the_release_pods_reach_the_broker(case):
    values, objects = case
    rendered = by_kind_name(objects)
    if values.get("broker", {}).get("external", {}).get("enabled"):
        assert ("NetworkPolicy", "demo-workqueue-job-broker") not in rendered
        return
    policy = rendered[("NetworkPolicy", "demo-workqueue-job-broker")]["spec"]
    allowed = policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed["app.kubernetes.io/instance"] == "demo"
    for obj, spec in pod_specs(objects):
        labels = pod_metadata(obj)["labels"]
        # The tools pod waits in `sleep`, and `kubectl exec` runs workqueue in it
        is_client = (spec["containers"][0].get("command", [""])[0] == "workqueue"
                     or obj["kind"] == "CronJob")
        assert (allowed.items() <= labels.items()) == is_client, obj["metadata"]["name"]
    [broker] = [o["spec"]["template"] for o in objects if o["kind"] == "StatefulSet"]
    assert policy["podSelector"]["matchLabels"].items() <= broker["metadata"]["labels"].items()


def test_helm_test_pod_is_deleted_whatever_its_outcome():
    objects = by_kind_name(render_chart())
    pod = objects[("Pod", "demo-workqueue-job-test-drained")]
    policy = set(pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"].split(","))
    assert {"hook-succeeded", "hook-failed", "before-hook-creation"} <= policy


def test_broker_claim_is_deleted_with_the_release():
    # A claim of the release's own, not a volumeClaimTemplate: `helm uninstall` deletes it
    values = {"broker": {"persistence": {"enabled": True, "size": "2Gi"}}}
    objects = render_chart(values)
    broker = by_kind_name(objects)[("StatefulSet", "demo-workqueue-job-broker")]
    [claim] = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert "helm.sh/resource-policy" not in claim["metadata"].get("annotations", {})
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "volumeClaimTemplates" not in broker["spec"]
    mounts = broker["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "data", "mountPath": "/data"} in mounts
