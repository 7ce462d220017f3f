"""`make e2e`: the whole job on a real cluster, for each broker x mode, and the cluster's faults.

Creates a kind cluster (unless KUBECONFIG or E2E_CONTEXT names one), builds the runtime image
and loads it onto the nodes (kind, k3d, minikube; elsewhere E2E_IMAGE must name a pushed image),
installs the chart with the generator's values and small requests, in a namespace of its own
that enforces the Pod Security "restricted" level, and checks each case's verdict on:
- the Jobs' conditions (podFailurePolicy reasons included);
- the product's own per-task report, read after the run as NOTES.txt tells people to (its `wq`
  function: a tools pod made from the release's CronJob);
- `helm test`; then it uninstalls and checks that the release left nothing behind.
Pod logs are never evidence: a deleted pod's log is gone with it.

A failed case saves a diagnostic bundle (events, pod states, logs of the pods that exist, helm
status, the report) under E2E_DIAGNOSTICS (default: a new folder in /tmp, named in the table)
and deletes its namespace, so its broker frees the node for the next case; E2E_KEEP=1 keeps the
namespace instead. Every wait is bounded and names what it waited for. The table at the end
gives each case's verdict, time to verdict and report. Skips with one line when Docker or kind
is missing.
"""

from __future__ import annotations

import os
import random
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
from e2e_api import (
    ReportSummary,
    evict,
    live_jobs,
    logs_of_pods,
    pod_states,
    save_bundle,
    summarize_report,
    wait_until,
    wq_function,
)
from e2e_support import (
    CALL_FAILED,
    LEFTOVER_KINDS,
    RESULTS,
    CaseResult,
    failed_indexes,
    has_default_storage_class,
    image_loader,
    image_pull_problem,
    job_progress,
    job_verdict,
    leftovers,
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
KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
RELEASE = "e2e"
BROKER_STATEFULSET = f"{RELEASE}-workqueue-job-broker"
WORKERS = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=worker"
JOB_TIMEOUT = 600
FAULT_BOUND = 300
"""A faulted run must reach its verdict within this: the chart's defaults never let it hang."""
TASKS = [f"frame-{i:03d}" for i in range(1, 21)]
DONE = "sh -c 'echo \"done: $WORKQUEUE_PAYLOAD\"'"
SLOW = "sh -c 'echo \"done: $WORKQUEUE_PAYLOAD\"; sleep 2'"
SLOWER = "sh -c 'echo \"done: $WORKQUEUE_PAYLOAD\"; sleep 5'"
"""For upgrades: 20 tasks at 3 at a time take 35 s, so the upgrade lands mid-run."""
POISON = ("sh -c 'test \"$WORKQUEUE_PAYLOAD\" != frame-007 || exit 9; "
          "echo \"done: $WORKQUEUE_PAYLOAD\"'")
RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted",
              "pod-security.kubernetes.io/enforce-version": "latest"}
SMALL = {
    # A 2-CPU node runs the cases one after another; their requests must not pile up.
    "broker": {"redis": {"resources": {"requests": {"cpu": "20m", "memory": "64Mi"}}},
               "rabbitmq": {"resources": {"requests": {"cpu": "50m", "memory": "256Mi"}}}},
    "worker": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
    "seeder": {"resources": {"requests": {"cpu": "10m", "memory": "32Mi"}}},
}
DIAGNOSTICS = Path(os.environ.get("E2E_DIAGNOSTICS")
                   or tempfile.mkdtemp(prefix="wq-e2e-diagnostics-"))


def sh(*argv: str, timeout: float = 600, check: bool = True,
       env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(argv[:4])} did not end within {timeout:.0f} s") from exc
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
        self.small_values = self.workdir / "small-requests.yaml"
        self.small_values.write_text(yaml.safe_dump(SMALL))

    def helm(self, *args: str, helm_name: str = "helm4", timeout: float = 600,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        flags = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
        flags += [f"--kube-context={self.context}"] if self.context else []
        return sh(HELMS[helm_name], *args, *flags, timeout=timeout, check=check)

    def kubectl_env(self) -> dict[str, str]:
        """The environment in which a person's `kubectl` reaches this cluster: the suite's
        kubectl first on PATH, and a kubeconfig whose current context is the cluster's."""
        config = self.workdir / "kubeconfig"
        if not config.exists():
            flags = [f"--kubeconfig={self.kubeconfig}"] if self.kubeconfig else []
            view = sh(str(KUBECTL), "config", "view", "--minify", "--flatten", "--context",
                      self.context_name, *flags)
            config.write_text(view.stdout)
        return {**os.environ, "KUBECONFIG": str(config),
                "PATH": f"{KUBECTL.parent}:{os.environ.get('PATH', os.defpath)}"}

    def new_namespace(self, case: str) -> str:
        """A namespace of the case's own that enforces the restricted Pod Security level, so
        the API server itself checks every pod the chart makes."""
        from kubernetes import client

        name = f"wq-e2e-{case}-{secrets.token_hex(2)}"[:63].rstrip("-")
        self.core.create_namespace(client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels=RESTRICTED)))
        return name

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

    def namespace_gone(self, namespace: str, timeout: float = 180) -> None:
        """Delete the namespace and wait for it to go, so its pods' requests are free for the
        next case. A namespace that takes longer is left to finish on its own."""
        from kubernetes.client.exceptions import ApiException

        def gone() -> bool | None:
            try:
                self.core.read_namespace(namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            return None

        try:
            self.core.delete_namespace(namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        try:
            wait_until(f"namespace {namespace} to be deleted", gone, timeout)
        except AssertionError as exc:
            progress(str(exc))


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


class Case:
    """One case's release in its own namespace, what the case saw, and its clean-up."""

    def __init__(self, kube: Cluster, name: str):
        self.kube, self.name = kube, name
        self.result = CaseResult(name)
        self.namespace = ""
        self.values = Path()
        self.helm_name = "helm4"
        self.broker: str | None = None
        self.started = time.monotonic()
        self.finished = False

    def install(self, broker: str | None, mode: str, command: str, *settings: str,
                helm_name: str = "helm4", tasks: list[str] = TASKS) -> None:
        """The release, installed in a new namespace. ``broker`` None: indexed mode."""
        self.namespace = self.kube.new_namespace(self.name)
        self.helm_name, self.broker = helm_name, broker
        task_file = self.kube.workdir / f"{self.namespace}.txt"
        task_file.write_text("\n".join(tasks) + "\n")
        self.values = self.kube.workdir / f"{self.namespace}-values.yaml"
        sh(sys.executable, "-m", "generator", str(task_file),
           *(["--broker", broker] if broker else []), "--mode", mode, "--parallelism", "3",
           "--name", RELEASE, "--image", self.kube.image, "--command", command,
           "-o", str(self.values))
        extra = [arg for setting in settings for arg in ("--set", setting)]
        if (broker and not self.kube.default_storage
                and "broker.persistence.enabled=false" not in settings):
            # The broker's PVC (persistence is on by default) would stay Pending for good.
            progress("no default StorageClass: installing with broker.persistence.enabled=false")
            extra += ["--set", "broker.persistence.enabled=false"]
        progress(f"{self.name}: {helm_name} install {RELEASE} -n {self.namespace} "
                 f"({broker or 'no broker'}, {mode}) {' '.join(extra)}")
        self.started = time.monotonic()
        self.kube.helm("install", RELEASE, str(CHART), "-f", str(self.values), "-f",
                       str(self.kube.small_values), "--namespace", self.namespace, *extra,
                       helm_name=helm_name)

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.kube.helm(*args, "--namespace", self.namespace, helm_name=self.helm_name,
                              check=check)

    def pods_seen(self) -> str:
        return pod_states(self.kube.core.list_namespaced_pod(self.namespace).items)

    def job(self, component: str = "worker"):
        """The release's live Job of ``component``, or None before it exists."""
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component={component}"
        jobs = live_jobs(self.kube.batch, self.namespace, selector)
        return jobs[0] if jobs else None

    def verdict(self, component: str = "worker",
                timeout: float = JOB_TIMEOUT) -> tuple[str, str]:
        """(complete|failed, why) of the release's Job of ``component``, from its conditions.
        A pod that cannot get its image ends the wait at once."""
        last = [""]

        def decided() -> tuple[str, str] | None:
            job = self.job(component)
            if job is None:
                last[0] = f"no {component} Job yet"
                return None
            status = job.to_dict()["status"]
            line = f"{job.metadata.name}: {job_progress(status)}"
            if line != last[0]:
                progress(f"{self.namespace}/{line}")
                last[0] = line
            state, why = job_verdict(status)
            if state != "running":
                return state, why
            problem = image_pull_problem(
                p.to_dict() for p in self.kube.core.list_namespaced_pod(self.namespace).items)
            if problem:
                raise AssertionError(problem)
            return None

        state, why = wait_until(f"the {component} Job's verdict", decided, timeout,
                                seen=lambda: f"{last[0]}; pods: {self.pods_seen()}")
        if component == "worker":
            self.result.verdict = f"{state}: {why}"
            self.result.seconds = time.monotonic() - self.started
        progress(f"{self.name}: {component} {state}: {why}")
        return state, why

    def wq(self, *command: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`wq <command>` as NOTES.txt tells people to run it once the workers are gone."""
        notes = self.helm("get", "notes", RELEASE).stdout
        script = f"{wq_function(notes)}\nwq {' '.join(command)}"
        return sh("bash", "-c", script, timeout=timeout, check=False,
                  env=self.kube.kubectl_env())

    def report(self) -> ReportSummary:
        """The product's per-task report, read through NOTES' `wq` function."""
        out = self.wq("report", "--format", "jsonl")
        assert out.returncode == 0, f"wq report failed:\n{out.stdout}{out.stderr}"
        summary = summarize_report(out.stdout)
        self.result.report = summary.line()
        progress(f"{self.name}: report: {summary.line()}")
        return summary

    def wait_for_progress(self, count: int) -> None:
        """Until the command has printed ``count`` "done:" lines in the worker pods that
        exist: a trigger for a fault mid-run, never evidence (a deleted pod's log is gone)."""
        def enough() -> bool | None:
            logs = logs_of_pods(self.kube.core, self.namespace, WORKERS)
            return True if sum(text.count("done: ") for text in logs.values()) >= count else None

        wait_until(f"{count} tasks started in the worker logs", enough, JOB_TIMEOUT,
                   seen=self.pods_seen, interval=2)

    def running_worker(self) -> str:
        """A worker pod that is running a task now."""
        def running() -> str | None:
            logs = logs_of_pods(self.kube.core, self.namespace, WORKERS)
            pods = {p.metadata.name: p for p in self.kube.core.list_namespaced_pod(
                self.namespace, label_selector=WORKERS).items}
            for name, text in logs.items():
                pod = pods.get(name)
                if (pod and pod.status.phase == "Running" and not pod.metadata.deletion_timestamp
                        and "done: " in text):
                    return name
            return None

        return wait_until("a worker pod that is running tasks", running, JOB_TIMEOUT,
                          seen=self.pods_seen, interval=2)

    def broker_identity(self) -> tuple[str, int]:
        """(uid, restart count) of the broker pod: what changes when it is replaced or
        restarted."""
        pod = self.kube.core.read_namespaced_pod(f"{BROKER_STATEFULSET}-0", self.namespace)
        return pod.metadata.uid, sum(s.restart_count for s in pod.status.container_statuses or [])

    def helm_test(self) -> subprocess.CompletedProcess[str]:
        progress(f"{self.name}: helm test {RELEASE} -n {self.namespace}")
        return self.helm("test", RELEASE, "--timeout", "5m", "--logs", check=False)

    def finish(self) -> None:
        """helm uninstall, and nothing of the release left behind; then drop the namespace."""
        self.helm("uninstall", RELEASE, "--wait", "--timeout", "5m")
        left = wait_until("helm uninstall to remove the release's objects",
                          lambda: None if self.kube.leftovers(self.namespace) else True, 180,
                          seen=lambda: ", ".join(self.kube.leftovers(self.namespace)))
        assert left
        self.kube.namespace_gone(self.namespace)
        self.finished = True

    def close(self, failed: bool) -> None:
        """After the case: a failed one leaves a diagnostic bundle and, unless E2E_KEEP=1,
        no namespace (its broker's requests would starve the next cases)."""
        self.result.passed = not failed
        RESULTS.append(self.result)
        if not failed or not self.namespace or self.finished:
            return
        folder = DIAGNOSTICS / self.namespace
        extras = {"helm-status.txt": lambda: self.helm("status", RELEASE, check=False).stdout,
                  "jobs.yaml": lambda: yaml.safe_dump(
                      [j.to_dict() for j in self.kube.batch.list_namespaced_job(
                          self.namespace).items], default_flow_style=False)}
        if self.broker:
            extras["report.jsonl"] = lambda: self.wq("report", "--format", "jsonl").stdout
        save_bundle(folder, self.kube.core, self.namespace, extras)
        self.result.kept = str(folder)
        if os.environ.get("E2E_KEEP") == "1":
            self.result.kept += f" (namespace {self.namespace} kept: E2E_KEEP=1)"
            return
        self.kube.namespace_gone(self.namespace)


@pytest.fixture
def case(cluster, request):
    made = Case(cluster, request.node.name.removeprefix("test_").replace("_", "-")
                .replace("[", "-").rstrip("]")[:40])
    yield made
    made.close(request.node.stash.get(CALL_FAILED, True))


def assert_all_done(case: Case, summary: ReportSummary, total: int = len(TASKS)) -> None:
    assert (summary.done, summary.dead, summary.pending) == (total, 0, 0), summary
    assert summary.runs >= total


def check_every_task_done(case: Case, total: int = len(TASKS)) -> None:
    state, why = case.verdict()
    assert state == "complete", f"{why}; pods: {case.pods_seen()}"
    assert_all_done(case, case.report(), total)
    test = case.helm_test()
    assert test.returncode == 0, f"helm test failed:\n{test.stdout}{test.stderr}"


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_job_runs_every_task(case, broker, mode):
    case.install(broker, mode, DONE)
    check_every_task_done(case)
    # The report above was read after the run, when no worker pod was left running
    workers = case.kube.core.list_namespaced_pod(case.namespace, label_selector=WORKERS).items
    assert all(p.status.phase in ("Succeeded", "Failed") for p in workers), case.pods_seen()
    case.finish()


@pytest.mark.parametrize("broker, grace", [("redis", None), ("rabbitmq", None),
                                           ("redis", 0), ("rabbitmq", 0)],
                         ids=["redis-graceful", "rabbitmq-graceful", "redis-forced",
                              "rabbitmq-forced"])
def test_deleted_worker_pod_loses_nothing(case, broker, grace):
    # A plain `kubectl delete pod` adds no DisruptionTarget: the pod ends 143 (graceful) or
    # is gone without an exit code (--grace-period=0 --force). Neither may fail the run.
    case.install(broker, "fine", SLOW)
    victim = case.running_worker()
    progress(f"{case.name}: deleting worker pod {victim} (grace period {grace})")
    case.kube.core.delete_namespaced_pod(victim, case.namespace, grace_period_seconds=grace)
    check_every_task_done(case)
    case.finish()


def test_evicted_worker_pod_loses_nothing_and_counts_no_failure(case):
    case.install("redis", "fine", SLOW)
    victim = case.running_worker()
    progress(f"{case.name}: evicting worker pod {victim}")
    evict(case.kube.core, victim, case.namespace)
    check_every_task_done(case)
    # The eviction's DisruptionTarget condition matches the podFailurePolicy Ignore rule, and
    # an ignored pod is not counted in the Job's failed pods
    assert not case.job().status.failed, case.job().status
    case.finish()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_deleted_broker_pod_with_persistence_loses_nothing(case, broker):
    if not case.kube.default_storage:
        pytest.skip("the cluster has no default StorageClass for the broker's claim")
    case.install(broker, "fine", SLOW)
    case.wait_for_progress(6)
    progress(f"{case.name}: deleting {BROKER_STATEFULSET}-0 mid-run (persistence on)")
    case.kube.core.delete_namespaced_pod(f"{BROKER_STATEFULSET}-0", case.namespace)
    check_every_task_done(case)
    case.finish()


def test_a_rabbitmq_cluster_loses_a_node_and_the_run_loses_nothing(case):
    # broker.rabbitmq.replicas: 3 (README: High availability): one node deleted mid-run, the
    # run goes on with the other two, and no worker pod fails for it
    if not case.kube.default_storage:
        pytest.skip("the cluster has no default StorageClass for the brokers' claims")
    case.install("rabbitmq", "fine", SLOW, "broker.rabbitmq.replicas=3")
    case.wait_for_progress(6)
    [statefulset] = case.kube.apps.list_namespaced_stateful_set(
        case.namespace, label_selector="app.kubernetes.io/component=broker").items
    victim = f"{statefulset.metadata.name}-1"
    progress(f"{case.name}: deleting broker node {victim} mid-run (3 nodes)")
    case.kube.core.delete_namespaced_pod(victim, case.namespace)
    check_every_task_done(case)
    assert not case.job().status.failed, case.job().status
    case.finish()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_deleted_broker_pod_without_persistence_fails_the_job(case, broker):
    # The pod comes back on a new, empty emptyDir: the run's state is gone, and the workers
    # must say so and fail the Job through podFailurePolicy, not wait for a seeder forever
    case.install(broker, "fine", SLOW, "broker.persistence.enabled=false")
    case.wait_for_progress(6)
    progress(f"{case.name}: deleting {BROKER_STATEFULSET}-0 mid-run (persistence off)")
    case.kube.core.delete_namespaced_pod(f"{BROKER_STATEFULSET}-0", case.namespace)
    case.started = time.monotonic()
    state, why = case.verdict(timeout=FAULT_BOUND)
    assert state == "failed"
    assert "PodFailurePolicy" in why and "exit code 6" in why, why
    assert case.helm_test().returncode != 0
    case.finish()


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
@pytest.mark.parametrize("change", ["chart-version", "worker-value"])
def test_helm_upgrade_mid_run_keeps_the_broker_and_finishes(case, helm_name, change):
    case.install("redis", "fine", SLOWER, helm_name=helm_name)
    case.wait_for_progress(6)
    broker_before = case.broker_identity()
    chart, extra = str(CHART), []
    if change == "chart-version":
        bumped = case.kube.workdir / f"{case.namespace}-chart"
        shutil.copytree(CHART, bumped)
        meta = yaml.safe_load((bumped / "Chart.yaml").read_text())
        meta["version"] = meta["appVersion"] = "99.0.0"
        (bumped / "Chart.yaml").write_text(yaml.safe_dump(meta))
        chart = str(bumped)
    else:
        extra = ["--set", "worker.maxAttempts=5"]
    if not case.kube.default_storage:
        extra += ["--set", "broker.persistence.enabled=false"]
    progress(f"{case.name}: {helm_name} upgrade mid-run ({change})")
    upgrade = case.helm("upgrade", RELEASE, chart, "-f", str(case.values), "-f",
                        str(case.kube.small_values), *extra, check=False)
    assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
    assert case.broker_identity() == broker_before, "the upgrade restarted the broker"
    # A new worker Job (worker-value) took over from the deleted one, whose pods' logs went
    # with them: every task done is the report's word
    check_every_task_done(case)
    assert case.broker_identity() == broker_before, "the broker restarted during the run"
    case.finish()


def test_seeding_that_cannot_start_fails_both_jobs(case):
    # A tasksFrom ConfigMap that was never applied. With the default 15-minute
    # seedTimeoutSeconds: the workers must not wait for it, since the seeder records why it
    # refused
    case.install("redis", "fine", DONE, "tasksFrom.configMaps[0]=e2e-never-applied-00000",
                 "tasksFrom.count=20", "tasksFrom.checksum=ab12")
    state, why = case.verdict("seeder", timeout=FAULT_BOUND)
    assert state == "failed" and "exit code 4" in why, why
    state, why = case.verdict(timeout=FAULT_BOUND)
    assert state == "failed" and "exit code 4" in why, why
    test = case.helm_test()
    assert test.returncode != 0
    progress(f"helm test says: {(test.stdout + test.stderr).strip()[-500:]}")
    case.finish()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_a_poison_task_is_named_in_the_verdict(case, broker):
    case.install(broker, "fine", POISON, "worker.maxAttempts=2")
    state, why = case.verdict(timeout=FAULT_BOUND)
    assert state == "failed" and "exit code 3" in why, why
    summary = case.report()
    assert (summary.done, summary.dead, summary.dead_payloads) == (19, 1, ("frame-007",))
    dead = case.wq("dead", "--format", "jsonl")
    assert dead.returncode == 0 and "frame-007" in dead.stdout, dead.stdout + dead.stderr
    test = case.helm_test()
    assert test.returncode != 0
    progress(f"helm test says: {(test.stdout + test.stderr).strip()[-500:]}")
    case.finish()


def test_indexed_job_runs_every_task_without_a_broker(case):
    case.install(None, "indexed", DONE)
    state, why = case.verdict()
    assert state == "complete", f"{why}; pods: {case.pods_seen()}"
    # The Job controller's own record: every index completed, each by one pod
    status = case.job().status
    assert status.completed_indexes == f"0-{len(TASKS) - 1}", status
    assert status.succeeded == len(TASKS) and not status.failed, status
    assert not case.kube.apps.list_namespaced_stateful_set(case.namespace).items
    case.result.report = f"{status.succeeded} indexes completed"
    case.finish()


def test_indexed_job_with_a_poison_task_names_its_index(case):
    # Every other index completes; the poison's index fails its two attempts, and the Job
    # controller fails the Job once all have run (FailedIndexes), listing that index
    case.install(None, "indexed", POISON, "worker.maxAttempts=2")
    state, why = case.verdict(timeout=FAULT_BOUND)
    assert state == "failed" and "FailedIndexes" in why, why
    job = case.job().to_dict()
    assert failed_indexes(job["status"]) == [TASKS.index("frame-007")]
    others = sorted(set(range(len(TASKS))) - {TASKS.index("frame-007")})
    assert job["status"]["succeeded"] == len(others), job["status"]
    case.result.report = f"{len(others)} indexes completed, index 6 failed"
    case.finish()


CHAOS_TASKS = [f"chaos-{i:04d}" for i in range(600)]
CHAOS_FAULTS = 8


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_pod_churn_never_fails_or_stalls_a_run(case, broker):
    """Every 10-20 s a worker pod is deleted (graceful or forced) or evicted, or the broker
    pod is deleted: routine churn. The run must end Complete, every task done once at least,
    none dead, within a bound."""
    if not case.kube.default_storage:
        pytest.skip("the cluster has no default StorageClass: the broker's state would not "
                    "survive its deletion")
    case.install(broker, "fine", "sh -c 'echo \"done: $WORKQUEUE_PAYLOAD\"; sleep 0.3'",
                 tasks=CHAOS_TASKS)
    chaos = random.Random(os.environ.get("E2E_SEED", "churn"))
    faults = 0
    deadline = time.monotonic() + 1200
    while faults < CHAOS_FAULTS and time.monotonic() < deadline:
        time.sleep(chaos.uniform(10, 20))  # the chaos schedule, not a wait for a state
        job = case.job()
        if job is not None and job_verdict(job.to_dict()["status"])[0] != "running":
            break
        fault = chaos.choice(["graceful", "forced", "evicted", "broker"])
        pods = [p.metadata.name for p in case.kube.core.list_namespaced_pod(
            case.namespace, label_selector=WORKERS).items
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp]
        if fault == "broker":
            victim = f"{BROKER_STATEFULSET}-0"
        elif pods:
            victim = chaos.choice(pods)
        else:
            continue
        progress(f"{case.name}: fault {faults + 1}: {fault} {victim}")
        from kubernetes.client.exceptions import ApiException
        try:
            if fault == "evicted":
                evict(case.kube.core, victim, case.namespace)
            else:
                case.kube.core.delete_namespaced_pod(
                    victim, case.namespace, grace_period_seconds=0 if fault == "forced" else None)
        except ApiException as exc:
            if exc.status != 404:  # the pod ended between the list and the fault
                raise
        faults += 1
    check_every_task_done(case, len(CHAOS_TASKS))
    case.finish()
