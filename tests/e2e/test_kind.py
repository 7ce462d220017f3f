"""`make e2e`: the whole job on a real cluster, for each broker x mode.

Creates a kind cluster (unless KUBECONFIG or E2E_CONTEXT names one), builds and loads the
runtime image, installs the chart with the generator's values, waits for the worker Job through
the Kubernetes API, checks every task was done, runs `helm test`, uninstalls and checks that
nothing is left. Skips with one line when Docker or kind is missing.
"""

from __future__ import annotations

import os
import secrets
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
    has_default_storage_class,
    job_progress,
    job_state,
    leftovers,
    missing_tasks,
    missing_tools,
    progress,
)

pytestmark = pytest.mark.e2e

# Checked once, here, so a machine without the tools gets one line, not one per test.
_MISSING = missing_tools(os.environ, ensure_engine())
if _MISSING:
    pytest.skip(f"e2e: {_MISSING}", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[2]
HELM = str(ROOT / ".tools" / "bin" / "helm")
JOB_TIMEOUT = 600
TASKS = [f"frame-{i:03d}" for i in range(1, 21)]


def sh(*argv: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:4])} failed:\n{result.stdout}{result.stderr}")
    return result


class Cluster:
    """A kubeconfig + context, the API clients, and how to get the image in."""

    def __init__(self, kubeconfig: str | None, context: str | None, kind_name: str | None):
        from kubernetes import client, config

        config.load_kube_config(config_file=kubeconfig, context=context)
        self.kubeconfig, self.context, self.kind_name = kubeconfig, context, kind_name
        self.core, self.batch = client.CoreV1Api(), client.BatchV1Api()
        self.apps, self.net = client.AppsV1Api(), client.NetworkingV1Api()
        self.default_storage = has_default_storage_class(
            c.metadata.annotations for c in client.StorageV1Api().list_storage_class().items)

    def helm(self, *args: str, timeout: float = 600, check: bool = True):
        flags = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        flags += [f"--kube-context={self.context}"] if self.context else []
        return sh(HELM, *args, *flags, timeout=timeout, check=check)

    def wait_for_job(self, namespace: str, component: str = "worker",
                     timeout: float = JOB_TIMEOUT) -> str:
        """The final state of the release's Job of ``component``. Its name ends in a digest of
        its spec, so it is found by its labels; one that Helm is deleting is not it."""
        from kubernetes import watch

        deadline = time.monotonic() + timeout
        last = ""
        name = f"{component} Job"
        while time.monotonic() < deadline:
            stream = watch.Watch().stream(
                self.batch.list_namespaced_job, namespace,
                label_selector=f"app.kubernetes.io/instance=e2e,app.kubernetes.io/component={component}",
                timeout_seconds=max(1, int(min(60, deadline - time.monotonic()))))
            for event in stream:
                job = event["object"].to_dict()
                if event["type"] == "DELETED" or job["metadata"].get("deletion_timestamp"):
                    continue
                name = job["metadata"]["name"]
                status = job["status"]
                line = job_progress(status)
                if line != last:
                    progress(f"{namespace}/{name}: {line}")
                    last = line
                state = job_state(status)
                if state != "running":
                    return state
        raise AssertionError(f"job {namespace}/{name} did not finish in {timeout:.0f} s ({last})")

    def worker_logs(self, namespace: str) -> str:
        pods = self.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=worker").items
        return "\n".join(self.core.read_namespaced_pod_log(p.metadata.name, namespace)
                         for p in pods)

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
        return leftovers({kind: [o.metadata.name for o in lister(namespace).items]
                          for kind, lister in listers.items()})


@pytest.fixture(scope="module")
def cluster():
    image = os.environ.get("E2E_IMAGE")
    created = None
    kubeconfig = os.environ.get("KUBECONFIG")
    context = os.environ.get("E2E_CONTEXT")
    workdir = tempfile.mkdtemp(prefix="wq-e2e-")
    if not (kubeconfig or context):
        created = f"wq-e2e-{secrets.token_hex(3)}"
        kubeconfig = f"{workdir}/kubeconfig"
        progress(f"creating kind cluster {created} (a few minutes the first time)")
        sh("kind", "create", "cluster", "--name", created, "--kubeconfig", kubeconfig,
           "--wait", "180s", timeout=900)
    try:
        kube = Cluster(kubeconfig, context, created or _kind_name(context))
        if not image:
            chart = yaml.safe_load((ROOT / "charts" / "workqueue-job" / "Chart.yaml").read_text())
            image = f"workqueue-job:{chart['appVersion']}"
            base = os.environ.get("E2E_BASE_IMAGE")
            progress(f"building {image} (make images)")
            sh(str(ROOT / "scripts" / "build-image.sh"), image,
               *(["--build-arg", f"BASE_IMAGE={base}"] if base else []), timeout=1800)
            if kube.kind_name:
                progress(f"kind load docker-image {image}")
                sh("kind", "load", "docker-image", image, "--name", kube.kind_name, timeout=600)
        kube.image = image
        kube.workdir = Path(workdir)
        yield kube
    finally:
        if created:
            progress(f"deleting kind cluster {created}")
            sh("kind", "delete", "cluster", "--name", created, check=False)


def _kind_name(context: str | None) -> str | None:
    return context.removeprefix("kind-") if context and context.startswith("kind-") else None


def install(kube: Cluster, namespace: str, broker: str, mode: str, command: str) -> None:
    repository, _, tag = kube.image.rpartition(":")
    tasks = kube.workdir / f"{namespace}.txt"
    tasks.write_text("\n".join(TASKS) + "\n")
    values = kube.workdir / f"{namespace}-values.yaml"
    sh(sys.executable, "-m", "generator", str(tasks), "--broker", broker, "--mode", mode,
       "--parallelism", "3", "--name", "e2e", "--image", f"{repository}:{tag}",
       "--command", command, "-o", str(values))
    extra = []
    if not kube.default_storage:
        # The broker's PVC (persistence is on by default) would stay Pending for good.
        progress("no default StorageClass: installing with broker.persistence.enabled=false")
        extra = ["--set", "broker.persistence.enabled=false"]
    progress(f"helm install e2e -n {namespace} ({broker}, {mode})")
    kube.helm("install", "e2e", str(ROOT / "charts" / "workqueue-job"), "-f", str(values),
              "--namespace", namespace, "--create-namespace", *extra)


def finish(kube: Cluster, namespace: str) -> None:
    """helm test, helm uninstall, and nothing left behind; then drop the namespace."""
    progress(f"helm test e2e -n {namespace}")
    test = kube.helm("test", "e2e", "--namespace", namespace, "--timeout", "5m", check=False)
    assert test.returncode == 0, f"helm test failed:\n{test.stdout}{test.stderr}"
    kube.helm("uninstall", "e2e", "--namespace", namespace, "--wait", "--timeout", "5m")
    deadline = time.monotonic() + 180
    left = kube.leftovers(namespace)
    while left and time.monotonic() < deadline:
        time.sleep(3)  # terminating pods take their grace period to go
        left = kube.leftovers(namespace)
    assert not left, f"helm uninstall left behind: {left}"
    kube.core.delete_namespace(namespace)


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_job_runs_every_task(cluster, broker, mode):
    namespace = f"wq-e2e-{broker}-{mode}"
    install(cluster, namespace, broker, mode, "sh -c 'echo \"done: $WORKQUEUE_PAYLOAD\"'")
    state = cluster.wait_for_job(namespace)
    logs = cluster.worker_logs(namespace)
    assert state == "complete", logs[-3000:]
    assert not missing_tasks(TASKS, logs), f"not in the logs: {missing_tasks(TASKS, logs)}"
    finish(cluster, namespace)


def test_deleted_worker_pod_loses_nothing(cluster):
    namespace = "wq-e2e-pod-deleted"
    install(cluster, namespace, "redis", "fine",
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
    assert cluster.wait_for_job(namespace) == "complete"
    finish(cluster, namespace)
