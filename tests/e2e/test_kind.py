"""`make e2e`: the whole job on a real cluster, for each broker x mode, and the cluster's faults.

Creates a kind cluster (unless KUBECONFIG or E2E_CONTEXT names one), builds the runtime image
and loads it onto the nodes (kind, k3d, minikube; elsewhere E2E_IMAGE must name a pushed image),
installs the chart with the generator's values in a namespace of its own that enforces the Pod
Security "restricted" level, waits for the Jobs through the Kubernetes API, and checks each
case's verdict on the Jobs' conditions and the worker logs, then `helm test`, uninstalls and
checks that the release left nothing behind. Skips with one line when Docker or kind is missing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from docker_engine import ensure_engine
from e2e_support import (
    LEFTOVER_KINDS,
    failed_indexes,
    has_default_storage_class,
    image_loader,
    image_pull_problem,
    job_progress,
    job_verdict,
    leftovers,
    missing_tasks,
    missing_tools,
    no_way_to_the_nodes,
    progress,
)

pytestmark = pytest.mark.e2e

# Checked once, here, so a machine without the tools gets one line, not one per test.
_MISSING = missing_tools(os.environ, ensure_engine())
if _MISSING:
    pytest.skip(f"e2e: {_MISSING}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "workqueue-job"
HELMS = {"helm4": str(ROOT / ".tools" / "bin" / "helm"),
         "helm3": str(ROOT / ".tools" / "helm3" / "helm")}
RELEASE = "e2e"
BROKER_STATEFULSET = f"{RELEASE}-workqueue-job-broker"
JOB_TIMEOUT = 600
FAULT_BOUND = 300
"""A faulted run must reach its verdict within this: the chart's defaults never let it hang."""
TASKS = [f"frame-{i:03d}" for i in range(1, 21)]
DONE = "sh -c 'echo \"done: $WORKQUEUE_PAYLOAD\"'"
SLOW = "sh -c 'echo \"done: $WORKQUEUE_PAYLOAD\"; sleep 2'"
SLOWER = "sh -c 'echo \"done: $WORKQUEUE_PAYLOAD\"; sleep 5'"
"""For upgrades: 20 tasks at 3 at a time take 35 s, so the upgrade lands mid-run."""
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}


def sh(*argv: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:4])} failed:\n{result.stdout}{result.stderr}")
    return result


class Cluster:
    """A kubeconfig + context, the API clients, and how to get the image in."""

    def __init__(self, kubeconfig: str | None, context: str | None):
        from kubernetes import client, config

        config.load_kube_config(config_file=kubeconfig, context=context)
        _contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        self.kubeconfig, self.context = kubeconfig, context
        self.context_name = context or active["name"]
        self.core, self.batch = client.CoreV1Api(), client.BatchV1Api()
        self.apps, self.net = client.AppsV1Api(), client.NetworkingV1Api()
        self.default_storage = has_default_storage_class(
            c.metadata.annotations for c in client.StorageV1Api().list_storage_class().items)
        self.image = ""
        self.workdir = Path(tempfile.mkdtemp(prefix="wq-e2e-values-"))

    def helm(self, *args: str, helm_name: str = "helm4", timeout: float = 600,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        flags = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        flags += [f"--kube-context={self.context}"] if self.context else []
        return sh(HELMS[helm_name], *args, *flags, timeout=timeout, check=check)

    def new_namespace(self, case: str) -> str:
        """A namespace of the case's own that enforces the restricted Pod Security level, so
        the API server itself checks every pod the chart makes."""
        from kubernetes import client

        name = f"wq-e2e-{case}-{secrets.token_hex(2)}"
        self.core.create_namespace(client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels=RESTRICTED)))
        return name

    def verdict(self, namespace: str, component: str = "worker",
                timeout: float = JOB_TIMEOUT) -> tuple[str, str]:
        """(complete|failed, why) of the release's Job of ``component``. Its name ends in a
        digest of its spec, so it is found by its labels; one that Helm is deleting after an
        upgrade is not it. A pod that cannot get its image ends the wait at once."""
        deadline = time.monotonic() + timeout
        last = ""
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
        while time.monotonic() < deadline:
            jobs = [j.to_dict() for j in
                    self.batch.list_namespaced_job(namespace, label_selector=selector).items]
            jobs = [j for j in jobs if not j["metadata"].get("deletion_timestamp")]
            for job in jobs:
                state, why = job_verdict(job["status"])
                line = f"{job['metadata']['name']}: {job_progress(job['status'])}"
                if line != last:
                    progress(f"{namespace}/{line}")
                    last = line
                if state != "running":
                    return state, why
            pods = [p.to_dict() for p in self.core.list_namespaced_pod(namespace).items]
            problem = image_pull_problem(pods)
            if problem:
                raise AssertionError(problem)
            time.sleep(3)  # polling the Job's status, as kubectl wait does
        raise AssertionError(f"{component} Job in {namespace} did not finish in {timeout:.0f} s "
                             f"({last})")

    def worker_logs(self, namespace: str) -> str:
        pods = self.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=worker").items
        return "\n".join(self.core.read_namespaced_pod_log(p.metadata.name, namespace)
                         for p in pods)

    def wait_for_done(self, namespace: str, count: int) -> None:
        deadline = time.monotonic() + JOB_TIMEOUT
        while self.worker_logs(namespace).count("done: ") < count:
            assert time.monotonic() < deadline, f"fewer than {count} tasks done in {namespace}"
            time.sleep(2)  # polling the worker logs for progress

    def broker(self, namespace: str) -> tuple[int, str]:
        """(generation of the broker StatefulSet, uid of its pod): what changes when the
        broker is rolled or replaced."""
        sts = self.apps.read_namespaced_stateful_set(BROKER_STATEFULSET, namespace)
        pod = self.core.read_namespaced_pod(f"{BROKER_STATEFULSET}-0", namespace)
        return sts.metadata.generation, pod.metadata.uid

    def leftovers(self, namespace: str) -> list[str]:
        listers = {
            "pods": self.core.list_namespaced_pod, "jobs": self.batch.list_namespaced_job,
            "statefulsets": self.apps.list_namespaced_stateful_set,
            "services": self.core.list_namespaced_service,
            "secrets": self.core.list_namespaced_secret,
            "configmaps": self.core.list_namespaced_config_map,
            "networkpolicies": self.net.list_namespaced_network_policy,
            "serviceaccounts": self.core.list_namespaced_service_account,
            "persistentvolumeclaims": self.core.list_namespaced_persistent_volume_claim,
        }
        assert set(listers) == set(LEFTOVER_KINDS)
        return leftovers({kind: [(o.metadata.name, o.metadata.labels)
                                 for o in lister(namespace).items]
                          for kind, lister in listers.items()}, RELEASE)


@pytest.fixture(scope="module")
def cluster():
    image = os.environ.get("E2E_IMAGE")
    created = None
    kubeconfig = os.environ.get("KUBECONFIG")
    context = os.environ.get("E2E_CONTEXT")
    if not (kubeconfig or context):
        created = f"wq-e2e-{secrets.token_hex(3)}"
        kubeconfig = f"{tempfile.mkdtemp(prefix='wq-e2e-')}/kubeconfig"
        progress(f"creating kind cluster {created} (a few minutes the first time)")
        sh("kind", "create", "cluster", "--name", created, "--kubeconfig", kubeconfig,
           "--wait", "180s", timeout=900)
    try:
        kube = Cluster(kubeconfig, context)
        kube.image = image or _build_and_load(kube)
        yield kube
    finally:
        if created:
            progress(f"deleting kind cluster {created}")
            sh("kind", "delete", "cluster", "--name", created, check=False)


def _build_and_load(kube: Cluster) -> str:
    """Build the image and put it on the nodes; fail at once where that cannot work."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    image = f"workqueue-job:{chart['appVersion']}"
    loader = image_loader(kube.context_name, image)
    if loader is None:
        pytest.fail(no_way_to_the_nodes(kube.context_name), pytrace=False)
    if shutil.which(loader[0]) is None:
        pytest.fail(f"e2e: {loader[0]} not found, and it is what puts the image onto the nodes "
                    f"of {kube.context_name!r}: install it, or push the image and set "
                    "E2E_IMAGE", pytrace=False)
    base = os.environ.get("E2E_BASE_IMAGE")
    progress(f"building {image} (make images)")
    sh(str(ROOT / "scripts" / "build-image.sh"), image,
       *(["--build-arg", f"BASE_IMAGE={base}"] if base else []), timeout=1800)
    progress(" ".join(loader))
    sh(*loader, timeout=600)
    return image


def install(kube: Cluster, case: str, broker: str | None, mode: str, command: str,
            *settings: str, helm_name: str = "helm4") -> tuple[str, Path]:
    """A new namespace with the release installed in it; returns it and the values file.
    ``broker`` None: indexed mode, which has none."""
    namespace = kube.new_namespace(case)
    tasks = kube.workdir / f"{namespace}.txt"
    tasks.write_text("\n".join(TASKS) + "\n")
    values = kube.workdir / f"{namespace}-values.yaml"
    sh(sys.executable, "-m", "generator", str(tasks), *(["--broker", broker] if broker else []),
       "--mode", mode, "--parallelism", "3", "--name", RELEASE, "--image", kube.image,
       "--command", command, "-o", str(values))
    extra = [arg for setting in settings for arg in ("--set", setting)]
    if broker and not kube.default_storage and "broker.persistence.enabled=false" not in settings:
        # The broker's PVC (persistence is on by default) would stay Pending for good.
        progress("no default StorageClass: installing with broker.persistence.enabled=false")
        extra += ["--set", "broker.persistence.enabled=false"]
    progress(f"{helm_name} install {RELEASE} -n {namespace} ({broker or 'no broker'}, {mode}) "
             f"{' '.join(extra)}")
    kube.helm("install", RELEASE, str(CHART), "-f", str(values), "--namespace", namespace,
              *extra, helm_name=helm_name)
    return namespace, values


def helm_test(kube: Cluster, namespace: str) -> subprocess.CompletedProcess[str]:
    progress(f"helm test {RELEASE} -n {namespace}")
    return kube.helm("test", RELEASE, "--namespace", namespace, "--timeout", "5m", "--logs",
                     check=False)


def finish(kube: Cluster, namespace: str, helm_name: str = "helm4") -> None:
    """helm uninstall, and nothing of the release left behind; then drop the namespace."""
    kube.helm("uninstall", RELEASE, "--namespace", namespace, "--wait", "--timeout", "5m",
              helm_name=helm_name)
    deadline = time.monotonic() + 180
    left = kube.leftovers(namespace)
    while left and time.monotonic() < deadline:
        time.sleep(3)  # terminating pods take their grace period to go
        left = kube.leftovers(namespace)
    assert not left, f"helm uninstall left behind: {left}"
    kube.core.delete_namespace(namespace)


def assert_every_task_done(kube: Cluster, namespace: str) -> None:
    state, why = kube.verdict(namespace)
    logs = kube.worker_logs(namespace)
    assert state == "complete", f"{why}\n{logs[-3000:]}"
    assert not missing_tasks(TASKS, logs), f"not in the logs: {missing_tasks(TASKS, logs)}"
    test = helm_test(kube, namespace)
    assert test.returncode == 0, f"helm test failed:\n{test.stdout}{test.stderr}"


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_job_runs_every_task(cluster, broker, mode):
    namespace, _values = install(cluster, f"{broker}-{mode}", broker, mode, DONE)
    assert_every_task_done(cluster, namespace)
    finish(cluster, namespace)


def test_deleted_worker_pod_loses_nothing(cluster):
    namespace, _values = install(cluster, "pod-deleted", "redis", "fine",
                                 "sh -c 'echo \"done: $WORKQUEUE_PAYLOAD\"; sleep 3'")
    deadline = time.monotonic() + JOB_TIMEOUT
    victim = None
    while victim is None and time.monotonic() < deadline:
        pods = cluster.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=worker").items
        running = [p for p in pods if p.status.phase == "Running"]
        for pod in running:
            log = cluster.core.read_namespaced_pod_log(pod.metadata.name, namespace)
            if "done: " in log:
                victim = pod.metadata.name
                break
        else:
            time.sleep(2)  # polling for a worker that has started on its tasks
    assert victim, "no worker started working"
    progress(f"deleting worker pod {victim} mid-run")
    cluster.core.delete_namespaced_pod(victim, namespace)
    assert_every_task_done(cluster, namespace)
    finish(cluster, namespace)


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_deleted_broker_pod_with_persistence_loses_nothing(cluster, broker):
    if not cluster.default_storage:
        pytest.skip("the cluster has no default StorageClass for the broker's claim")
    namespace, _values = install(cluster, f"{broker}-kept", broker, "fine", SLOW)
    cluster.wait_for_done(namespace, 6)
    progress(f"deleting {BROKER_STATEFULSET}-0 mid-run (persistence on)")
    cluster.core.delete_namespaced_pod(f"{BROKER_STATEFULSET}-0", namespace)
    assert_every_task_done(cluster, namespace)
    finish(cluster, namespace)


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_deleted_broker_pod_without_persistence_fails_the_job(cluster, broker):
    # The pod comes back on a new, empty emptyDir: the run's state is gone, and the workers
    # must say so and fail the Job through podFailurePolicy, not wait for a seeder forever
    namespace, _values = install(cluster, f"{broker}-lost", broker, "fine", SLOW,
                                 "broker.persistence.enabled=false")
    cluster.wait_for_done(namespace, 6)
    progress(f"deleting {BROKER_STATEFULSET}-0 mid-run (persistence off)")
    cluster.core.delete_namespaced_pod(f"{BROKER_STATEFULSET}-0", namespace)
    started = time.monotonic()
    state, why = cluster.verdict(namespace, timeout=FAULT_BOUND)
    progress(f"verdict after {time.monotonic() - started:.0f} s: {state}: {why}")
    assert state == "failed"
    assert "PodFailurePolicy" in why and "exit code 6" in why, why
    assert "lost its state mid-run" in cluster.worker_logs(namespace)
    assert helm_test(cluster, namespace).returncode != 0
    finish(cluster, namespace)


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
@pytest.mark.parametrize("change", ["chart-version", "worker-value"])
def test_helm_upgrade_mid_run_keeps_the_broker_and_finishes(cluster, helm_name, change):
    namespace, values = install(cluster, f"upgrade-{change}-{helm_name}", "redis", "fine",
                                SLOWER, helm_name=helm_name)
    cluster.wait_for_done(namespace, 6)
    broker_before = cluster.broker(namespace)
    chart, extra = str(CHART), []
    if change == "chart-version":
        bumped = cluster.workdir / f"{namespace}-chart"
        shutil.copytree(CHART, bumped)
        meta = yaml.safe_load((bumped / "Chart.yaml").read_text())
        meta["version"] = meta["appVersion"] = "99.0.0"
        (bumped / "Chart.yaml").write_text(yaml.safe_dump(meta))
        chart = str(bumped)
    else:
        extra = ["--set", "worker.maxAttempts=5"]
    if not cluster.default_storage:
        extra += ["--set", "broker.persistence.enabled=false"]
    progress(f"{helm_name} upgrade mid-run ({change})")
    upgrade = cluster.helm("upgrade", RELEASE, chart, "-f", str(values), "--namespace",
                           namespace, *extra, helm_name=helm_name, check=False)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert cluster.broker(namespace) == broker_before, "the upgrade restarted the broker"
    state, why = cluster.verdict(namespace)
    assert state == "complete", why
    # A new worker Job (worker-value) took over from the deleted one, whose pods' logs went
    # with them: the verdict is helm test's count, done + dead == total and no dead task
    test = helm_test(cluster, namespace)
    assert test.returncode == 0, f"helm test failed:\n{test.stdout}{test.stderr}"
    assert cluster.broker(namespace) == broker_before
    finish(cluster, namespace, helm_name)


def test_seeding_that_cannot_start_fails_both_jobs(cluster):
    # A tasksFrom ConfigMap that was never applied
    # With the default 15-minute seedTimeoutSeconds: the workers must not wait for it, since
    # the seeder records why it refused
    namespace, _values = install(
        cluster, "no-tasks", "redis", "fine", DONE,
        "tasksFrom.configMaps[0]=e2e-never-applied-00000", "tasksFrom.count=20",
        "tasksFrom.checksum=ab12")
    state, why = cluster.verdict(namespace, "seeder", timeout=FAULT_BOUND)
    assert state == "failed" and "exit code 4" in why, why
    state, why = cluster.verdict(namespace, timeout=FAULT_BOUND)
    assert state == "failed" and "exit code 4" in why, why
    assert "folder holds no *.jsonl task chunks" in cluster.worker_logs(namespace)
    test = helm_test(cluster, namespace)
    assert test.returncode != 0
    progress(f"helm test says: {(test.stdout + test.stderr).strip()[-500:]}")
    finish(cluster, namespace)


def test_a_poison_task_with_on_dead_fail_fails_the_job(cluster):
    poison = ("sh -c 'test \"$WORKQUEUE_PAYLOAD\" != frame-007 || exit 9; "
              "echo \"done: $WORKQUEUE_PAYLOAD\"'")
    namespace, _values = install(cluster, "poison", "rabbitmq", "fine", poison,
                                 "worker.maxAttempts=2")
    state, why = cluster.verdict(namespace, timeout=FAULT_BOUND)
    assert state == "failed" and "exit code 3" in why, why
    logs = cluster.worker_logs(namespace)
    assert "dead-lettered" in logs and "frame-007" in logs
    assert missing_tasks(TASKS, logs) == ["frame-007"]
    test = helm_test(cluster, namespace)
    assert test.returncode != 0
    progress(f"helm test says: {(test.stdout + test.stderr).strip()[-500:]}")
    finish(cluster, namespace)


def test_indexed_job_runs_every_task_without_a_broker(cluster):
    namespace, _values = install(cluster, "indexed", None, "indexed", DONE)
    state, why = cluster.verdict(namespace)
    logs = cluster.worker_logs(namespace)
    assert state == "complete", f"{why}\n{logs[-3000:]}"
    assert not missing_tasks(TASKS, logs), f"not in the logs: {missing_tasks(TASKS, logs)}"
    # One pod per index, and each ran its own task once
    assert sorted(logs.count(f"done: {task}\n") for task in TASKS) == [1] * len(TASKS)
    assert not cluster.apps.list_namespaced_stateful_set(namespace).items
    finish(cluster, namespace)


def test_indexed_job_with_a_poison_task_names_its_index(cluster):
    # Every other index completes; the poison's index fails its two attempts, and the Job
    # controller fails the Job once all have run (FailedIndexes), listing that index
    poison = ("sh -c 'test \"$WORKQUEUE_PAYLOAD\" != frame-007 || exit 9; "
              "echo \"done: $WORKQUEUE_PAYLOAD\"'")
    namespace, _values = install(cluster, "indexed-poison", None, "indexed", poison,
                                 "worker.maxAttempts=2")
    state, why = cluster.verdict(namespace, timeout=FAULT_BOUND)
    assert state == "failed" and "FailedIndexes" in why, why
    job = cluster.batch.list_namespaced_job(
        namespace, label_selector="app.kubernetes.io/component=worker").items[0].to_dict()
    assert failed_indexes(job["status"]) == [TASKS.index("frame-007")]
    logs = cluster.worker_logs(namespace)
    assert missing_tasks(TASKS, logs) == ["frame-007"]
    assert "failed its last attempt (2 of 2)" in logs
    finish(cluster, namespace)
