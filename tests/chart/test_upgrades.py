"""`helm upgrade` with any one value changed: the API server must accept every update Helm sends.

For each value in values.yaml, the chart is rendered before and after the change, with helm 3
and helm 4. Objects present in both renders under one name are updates; each must pass the API
server's update validation, taken from kubernetes/kubernetes:

- Job, pkg/apis/batch/validation/validation.go, ValidateJobSpecUpdate: `completions` (unless
  an elastic Indexed Job), `selector`, `template` (validatePodTemplateUpdate: only a suspended
  Job that never started may change its scheduling directives), `completionMode`,
  `podFailurePolicy`, `backoffLimitPerIndex`, `managedBy` and `successPolicy` are immutable.
- StatefulSet, pkg/apis/apps/validation/validation.go, ValidateStatefulSetUpdate: "updates to
  statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy',
  'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are
  forbidden".
- PersistentVolumeClaim, pkg/apis/core/validation/validation.go,
  ValidatePersistentVolumeClaimUpdate: "spec is immutable after creation except
  resources.requests and volumeAttributesClassName for bound claims" (and requests may only
  grow, where the StorageClass allows expansion).

Objects only in the old render are deleted by Helm (pkg/kube/client.go Update deletes what the
new manifest lacks, with background propagation, so a removed Job's pods get SIGTERM and hand
their leases back); objects only in the new render are created.
"""

from __future__ import annotations

import copy
from functools import cache

import pytest
import yaml

import render
from render import CHART, render_chart, template

HELM_NAMES = ("helm3", "helm4")

JOB_IMMUTABLE = ("completions", "selector", "template", "completionMode", "podFailurePolicy",
                 "backoffLimitPerIndex", "managedBy", "successPolicy")
STATEFULSET_MUTABLE = {"replicas", "ordinals", "template", "updateStrategy",
                       "revisionHistoryLimit", "persistentVolumeClaimRetentionPolicy",
                       "minReadySeconds"}

def merged(*layers: dict) -> dict:
    out: dict = {}
    for layer in layers:
        _merge_into(out, copy.deepcopy(layer))
    return out


def _merge_into(target: dict, layer: dict) -> None:
    for key, value in layer.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict) and value:
            _merge_into(target[key], value)
        else:
            target[key] = value


RABBITMQ = {"broker": {"type": "rabbitmq"}}
CLUSTER_VALUES = {"broker": {"type": "rabbitmq", "rabbitmq": {"replicas": 3}}}
CHUNKED = {"configMaps": ["frames-00000"], "count": 5, "checksum": "ab12"}
EXTERNAL = {"broker": {"external": {"enabled": True, "host": "queue.example"},
                       "auth": {"existingSecret": "queue-password"}}}
EXTERNAL_RABBITMQ = merged(EXTERNAL, RABBITMQ)
NODE_AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [{"matchExpressions": [
        {"key": "pool", "operator": "In", "values": ["batch"]}]}]}}}
TOLERATIONS = [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}]
RESOURCES = {"requests": {"cpu": "300m", "memory": "300Mi"},
             "limits": {"cpu": "2", "memory": "1Gi"}}

# (values path, new value, the values it needs to be valid): one row per value in values.yaml.
METRICS = {"metrics": {"enabled": True}}


def metrics_with(*parts: str) -> dict:
    """Metrics on, with each of ``parts`` (serviceMonitor, workers...) enabled too."""
    return {"metrics": {"enabled": True, **{part: {"enabled": True} for part in parts}}}


CHANGES: list[tuple[str, object, dict]] = [
    ("nameOverride", "batch", {}),
    ("fullnameOverride", "nightly-frames", {}),
    ("mode", "coarse", {}),
    ("tasks", ["frame-a", "frame-b"], {}),
    ("tasksFrom.configMaps", ["frames-00000"], {"tasksFrom": {"count": 5, "checksum": "ab12"}}),
    ("tasksFrom.count", 7, {"tasksFrom": CHUNKED}),
    ("tasksFrom.checksum", "cd34", {"tasksFrom": CHUNKED}),
    ("rerun", 1, {}),
    ("retryDead", 1, {}),
    ("image.repository", "registry.example/workqueue-job", {}),
    ("image.tag", "9.9.9", {}),
    ("image.pullPolicy", "Always", {}),
    ("imagePullSecrets", [{"name": "registry"}], {}),
    ("priorityClassName", "batch-low", {}),
    ("podAnnotations", {"example.com/team": "frames"}, {}),
    ("podLabels", {"team": "frames"}, {}),
    ("nodeSelector", {"pool": "batch"}, {}),
    ("tolerations", TOLERATIONS, {}),
    ("affinity", NODE_AFFINITY, {}),
    ("broker.type", "rabbitmq", {}),
    ("broker.external.enabled", True, {"broker": {"external": {"host": "queue.example"},
                                                  "auth": {"existingSecret": "queue-password"}}}),
    ("broker.external.host", "other.example", EXTERNAL),
    ("broker.external.hosts", ["queue-0.example", "queue-1.example", "queue-2.example"],
     EXTERNAL_RABBITMQ),
    ("broker.external.replicas", 3, EXTERNAL_RABBITMQ),
    ("broker.external.port", 6380, EXTERNAL),
    ("broker.external.user", "jobs", EXTERNAL_RABBITMQ),
    ("broker.external.vhost", "batch", EXTERNAL_RABBITMQ),
    ("broker.external.database", 3, EXTERNAL),
    ("broker.external.redisUser", "jobs", EXTERNAL),
    ("broker.external.tls", True, EXTERNAL),
    ("broker.auth.existingSecret", "queue-password", {}),
    ("broker.auth.erlangCookieKey", "cookie", merged(CLUSTER_VALUES, {
        "broker": {"auth": {"existingSecret": "queue-password"}}})),
    ("broker.auth.passwordKey", "secret", {}),
    ("broker.redis.image.repository", "mirror.example/redis", {}),
    ("broker.redis.image.tag", "7.4.3-alpine", {}),
    ("broker.redis.image.pullPolicy", "Always", {}),
    ("broker.redis.resources", RESOURCES, {}),
    ("broker.rabbitmq.image.repository", "mirror.example/rabbitmq", RABBITMQ),
    ("broker.rabbitmq.image.tag", "4.0.6", RABBITMQ),
    ("broker.rabbitmq.image.pullPolicy", "Always", RABBITMQ),
    ("broker.rabbitmq.user", "jobs", RABBITMQ),
    ("broker.rabbitmq.consumerTimeoutSeconds", 3600, RABBITMQ),
    ("broker.rabbitmq.resources", RESOURCES, RABBITMQ),
    ("broker.rabbitmq.startupSeconds", 300, RABBITMQ),
    # A new node count is a new StatefulSet (its shape is immutable), named by the count
    ("broker.rabbitmq.replicas", 3, RABBITMQ),
    ("broker.persistence.enabled", False, {}),
    ("broker.persistence.storageClass", "fast-ssd", {}),
    ("broker.persistence.size", "5Gi", {}),
    ("broker.nodeSelector", {"pool": "brokers"}, {}),
    ("broker.tolerations", TOLERATIONS, {}),
    ("broker.affinity", NODE_AFFINITY, {}),
    ("broker.podDisruptionBudget.enabled", True, {}),
    ("worker.command", ["sh", "-c", "render $WORKQUEUE_PAYLOAD"], {}),
    ("worker.handler", "frames.render:one", {}),
    ("worker.parallelism", 8, {}),
    ("worker.maxPods", 500, {}),
    ("worker.maxAttempts", 5, {}),
    ("worker.leaseSeconds", 120, {}),
    ("worker.batchSize", 10, {}),
    ("worker.batchSeconds", 0.5, {}),
    ("worker.seedTimeoutSeconds", 60, {}),
    ("worker.taskTimeoutSeconds", 600, {}),
    ("worker.brokerOutageSeconds", 60, {}),
    ("worker.onDead", "succeed", {}),
    ("worker.retryDelaySeconds", 30, {}),
    ("worker.retryDelayMaxSeconds", 60, {}),
    ("worker.captureResult", True, {}),
    ("worker.terminationGracePeriodSeconds", 90, {}),
    ("worker.activeDeadlineSeconds", 7200, {}),
    ("worker.backoffLimit", 2, {}),
    ("worker.ttlSecondsAfterFinished", 600, {}),
    ("worker.resources", RESOURCES, {}),
    ("worker.env", [{"name": "QUALITY", "value": "high"}], {}),
    ("worker.envFrom", [{"configMapRef": {"name": "render-settings"}}], {}),
    ("worker.serviceAccount.create", False, {"worker": {"serviceAccount": {"name": "render"}}}),
    ("worker.serviceAccount.name", "render", {}),
    ("worker.serviceAccount.annotations", {"iam.example/role": "render"}, {}),
    ("worker.serviceAccount.automountToken", True, {}),
    ("worker.extraVolumes", [{"name": "scratch", "emptyDir": {}}],
     {"worker": {"extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}}),
    ("worker.extraVolumeMounts", [{"name": "scratch", "mountPath": "/scratch"}],
     {"worker": {"extraVolumes": [{"name": "scratch", "emptyDir": {}}]}}),
    ("worker.nodeSelector", {"pool": "workers"}, {}),
    ("worker.tolerations", TOLERATIONS, {}),
    ("worker.affinity", NODE_AFFINITY, {}),
    ("seeder.batchSize", 50, {}),
    ("seeder.resources", RESOURCES, {}),
    ("seeder.backoffLimit", 1, {}),
    ("networkPolicy.enabled", False, {}),
    ("tools.enabled", False, {}),
    ("tools.idleSeconds", 300, {}),
    ("metrics.enabled", True, {}),
    ("metrics.port", 9500, METRICS),
    ("metrics.reportEverySeconds", 30, METRICS),
    ("metrics.resources", RESOURCES, METRICS),
    ("metrics.serviceMonitor.enabled", True, METRICS),
    ("metrics.serviceMonitor.interval", "1m", metrics_with("serviceMonitor")),
    ("metrics.serviceMonitor.labels", {"release": "kps"}, metrics_with("serviceMonitor")),
    ("metrics.workers.enabled", True, METRICS),
    ("metrics.workers.port", 9501, metrics_with("workers")),
    ("metrics.podMonitor.enabled", True, metrics_with("workers")),
    ("metrics.podMonitor.interval", "1m", metrics_with("workers", "podMonitor")),
    ("metrics.podMonitor.labels", {"release": "kps"}, metrics_with("workers", "podMonitor")),
    ("metrics.dashboard.enabled", True, METRICS),
    ("metrics.dashboard.labels.grafana_dashboard", "yes", metrics_with("dashboard")),
    ("metrics.prometheusRule.enabled", True, METRICS),
    ("metrics.prometheusRule.labels", {"release": "kps"}, metrics_with("prometheusRule")),
    ("metrics.prometheusRule.stalledFor", "30m", metrics_with("prometheusRule")),
    ("metrics.prometheusRule.brokerDownFor", "10m", metrics_with("prometheusRule")),
    ("metrics.prometheusRule.deadline", 1900000000, metrics_with("prometheusRule")),
    ("testFramework.enabled", False, {}),
]
NEW_VALUE = {path: value for path, value, _needs in CHANGES}
MUTABLE_JOB_VALUES = ("worker.parallelism", "worker.backoffLimit", "worker.activeDeadlineSeconds",
                      "worker.ttlSecondsAfterFinished", "seeder.backoffLimit")
"""Values that only feed fields a Job may change in place: the running Job keeps its pods."""


def at(path: str, value: object) -> dict:
    out: object = value
    for key in reversed(path.split(".")):
        out = {key: out}
    return out  # type: ignore[return-value]


def leaf_paths(values: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and not path.endswith(("resources", "affinity")):
            paths += leaf_paths(value, f"{path}.")
        else:
            paths.append(path)
    return paths


def update_violations(old: dict, new: dict) -> list[str]:
    """Why the API server would refuse updating ``old`` to ``new`` (empty: it accepts)."""
    kind, old_spec, new_spec = old["kind"], old.get("spec", {}), new.get("spec", {})
    if kind == "Job":
        return [f"Job spec.{field} is immutable" for field in JOB_IMMUTABLE
                if old_spec.get(field) != new_spec.get(field)]
    if kind == "StatefulSet":
        changed = {key for key in {*old_spec, *new_spec} - STATEFULSET_MUTABLE
                   if old_spec.get(key) != new_spec.get(key)}
        return [f"StatefulSet spec.{key} is forbidden to change" for key in sorted(changed)]
    if kind == "PersistentVolumeClaim" and old_spec != new_spec:
        return ["PersistentVolumeClaim spec is immutable"]
    if old.get("immutable") and old.get("data") != new.get("data"):
        return [f"{kind} is immutable"]
    return []


MONITORING_APIS = ("monitoring.coreos.com/v1/ServiceMonitor",
                   "monitoring.coreos.com/v1/PodMonitor",
                   "monitoring.coreos.com/v1/PrometheusRule")
"""Served by the cluster in these renders, so that the monitoring objects can be turned on."""


@cache
def rendered(helm_name: str, values_yaml: str) -> tuple[dict, ...]:
    return tuple(render_chart(yaml.safe_load(values_yaml), helm_name=helm_name,
                              api_versions=MONITORING_APIS))


def render_pair(helm_name: str, before: dict, after: dict) -> tuple[dict, dict]:
    """(before, after) as {(kind, name): object}, with real names (digest suffixes kept)."""
    def objects(values: dict) -> dict:
        return {(o["kind"], o["metadata"]["name"]): o
                for o in rendered(helm_name, yaml.safe_dump(values, sort_keys=True))}

    return objects(before), objects(after)


def check_upgrade(old: dict, new: dict) -> list[str]:
    """Every refusal, for the objects both renders hold under one (kind, name)."""
    return [f"{key[1]}: {why}" for key in sorted(old.keys() & new.keys())
            for why in update_violations(old[key], new[key])]


def test_the_matrix_changes_every_value_in_values_yaml():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    covered = {path for path, _value, _needs in CHANGES}
    missing = [path for path in leaf_paths(defaults) if path not in covered]
    assert not missing, f"add these values to CHANGES: {missing}"


INDEXED_REFUSED = {"retryDead", "worker.onDead"}
"""Values the schema refuses in indexed mode (test_schema.py checks that it does)."""


MODE_CHANGES = [(mode, *change) for mode in ("fine", "coarse", "indexed") for change in CHANGES
                if not (mode == "indexed" and change[0] in INDEXED_REFUSED)]


@pytest.mark.parametrize("helm_name", HELM_NAMES)
@pytest.mark.parametrize(("mode", "path", "value", "needs"), MODE_CHANGES,
                         ids=[f"{c[0]}-{c[1]}" for c in MODE_CHANGES])
def test_every_value_change_is_an_update_the_api_server_accepts(helm_name, mode, path, value,
                                                                 needs):
    before = merged({"mode": mode}, needs)
    after = merged(before, at(path, value))
    old, new = render_pair(helm_name, before, after)
    assert not check_upgrade(old, new)


CLUSTER = CLUSTER_VALUES
CLUSTER_CHANGES = [(path, value) for path, value, needs in CHANGES
                   if path.startswith(("broker.rabbitmq.", "broker.persistence.",
                                       "broker.podDisruptionBudget.", "broker.auth."))
                   and path != "broker.rabbitmq.replicas"]


@pytest.mark.parametrize("helm_name", HELM_NAMES)
@pytest.mark.parametrize(("path", "value"), CLUSTER_CHANGES, ids=[c[0] for c in CLUSTER_CHANGES])
def test_every_broker_value_change_on_a_cluster_is_an_update_the_api_server_accepts(
        helm_name, path, value):
    old, new = render_pair(helm_name, CLUSTER, merged(CLUSTER, at(path, value)))
    assert not check_upgrade(old, new)


def test_a_clusters_claim_templates_carry_no_label_a_chart_upgrade_changes():
    # volumeClaimTemplates may never change: the chart's version label would change them
    [statefulset] = [o for o in render_chart(CLUSTER) if o["kind"] == "StatefulSet"]
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert not {"helm.sh/chart", "app.kubernetes.io/version"} & set(claim["metadata"]["labels"])


@pytest.mark.parametrize("helm_name", HELM_NAMES)
def test_the_rules_catch_what_the_api_server_refuses(helm_name):
    # A check that cannot fail proves nothing: fixed Job names, as the chart had them before,
    # turn a maxAttempts change into the "field is immutable" error seen on a real cluster
    old, new = render_pair(helm_name, {}, at("worker.maxAttempts", 5))
    pinned = {(kind, render.job_base_name(obj)): obj for (kind, _name), obj in new.items()}
    pinned_old = {(kind, render.job_base_name(obj)): obj for (kind, _name), obj in old.items()}
    assert "demo-workqueue-job-worker: Job spec.template is immutable" in check_upgrade(
        pinned_old, pinned)
    # And so would a storage change under a fixed claim name
    old, new = render_pair(helm_name, {}, at("broker.persistence.size", "5Gi"))
    claims = [obj for (kind, _name), obj in new.items() if kind == "PersistentVolumeClaim"]
    [old_claim] = [obj for (kind, _name), obj in old.items() if kind == "PersistentVolumeClaim"]
    assert update_violations(old_claim, claims[0]) == ["PersistentVolumeClaim spec is immutable"]


@pytest.mark.parametrize("helm_name", HELM_NAMES)
@pytest.mark.parametrize("mode", ["fine", "coarse"])
@pytest.mark.parametrize("path", MUTABLE_JOB_VALUES)
def test_fields_a_job_may_change_update_the_running_job(helm_name, mode, path):
    old, new = render_pair(helm_name, {"mode": mode},
                           merged({"mode": mode}, at(path, NEW_VALUE[path])))
    jobs = sorted(name for kind, name in old if kind == "Job")
    assert jobs == sorted(name for kind, name in new if kind == "Job")
    assert any(old[("Job", name)]["spec"] != new[("Job", name)]["spec"] for name in jobs)


RUN_AND_WORKER_VALUES = [path for path, _v, needs in CHANGES if not needs and path.startswith(
    ("tasks", "rerun", "retryDead", "mode", "worker.", "seeder.", "image."))]


@pytest.mark.parametrize("helm_name", HELM_NAMES)
@pytest.mark.parametrize("path", RUN_AND_WORKER_VALUES)
def test_run_and_worker_changes_never_restart_the_broker(helm_name, path):
    # A broker restart on an emptyDir is a wiped queue: only broker values may cause one
    old, new = render_pair(helm_name, {}, at(path, NEW_VALUE[path]))
    key = ("StatefulSet", "demo-workqueue-job-broker")
    assert old[key]["spec"] == new[key]["spec"]
    assert [k for k in old if k[0] == "PersistentVolumeClaim"] == [
        k for k in new if k[0] == "PersistentVolumeClaim"]


def _env(job: dict) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("helm_name", HELM_NAMES)
@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_a_changed_task_list_is_a_new_run_on_a_new_queue(helm_name, mode):
    old, new = render_pair(helm_name, {"mode": mode},
                           {"mode": mode, "tasks": ["frame-a", "frame-b"]})
    old_jobs = {render.job_base_name(o): o for (kind, _n), o in old.items() if kind == "Job"}
    new_jobs = {render.job_base_name(o): o for (kind, _n), o in new.items() if kind == "Job"}
    for base in ("demo-workqueue-job-seeder", "demo-workqueue-job-worker"):
        assert old_jobs[base]["metadata"]["name"] != new_jobs[base]["metadata"]["name"]
        before, after = _env(old_jobs[base]), _env(new_jobs[base])
        assert before["WORKQUEUE_QUEUE"] != after["WORKQUEUE_QUEUE"]
        assert after["WORKQUEUE_QUEUE"] == f"jobs.demo-workqueue-job.{after['WORKQUEUE_RUN_ID']}"
    seeder = new_jobs["demo-workqueue-job-seeder"]["spec"]["template"]["spec"]["containers"][0]
    assert seeder["args"][-2:] == ["--supersede", "jobs.demo-workqueue-job"]
    if mode == "coarse":
        assert new_jobs["demo-workqueue-job-worker"]["spec"]["completions"] == 2


@pytest.mark.parametrize("helm_name", HELM_NAMES)
def test_the_same_values_render_the_same_jobs_and_claim(helm_name):
    first = render_chart(helm_name=helm_name)
    second = render_chart(helm_name=helm_name)

    def names(objects: list[dict]) -> list[tuple[str, str]]:
        return sorted((o["kind"], o["metadata"]["name"]) for o in objects)
    assert names(first) == names(second)
    assert [o for o in first if o["kind"] == "Job"] == [o for o in second if o["kind"] == "Job"]


@pytest.mark.parametrize("helm_name", HELM_NAMES)
def test_a_chart_version_bump_is_an_update_the_api_server_accepts(helm_name, tmp_path,
                                                                   monkeypatch):
    bumped = render.bumped_chart(tmp_path)
    pinned = {"image": {"tag": "0.1.0"}}
    old = {(o["kind"], o["metadata"]["name"]): o
           for o in render_chart(pinned, helm_name=helm_name)}
    monkeypatch.setattr(render, "CHART", bumped)
    new = {(o["kind"], o["metadata"]["name"]): o
           for o in render_chart(pinned, helm_name=helm_name)}
    assert not check_upgrade(old, new)
    # The same Jobs: a finished run stays finished across a chart upgrade
    assert sorted(k for k in old if k[0] == "Job") == sorted(k for k in new if k[0] == "Job")


@pytest.mark.parametrize("helm_name", HELM_NAMES)
def test_gitops_renders_are_identical_with_an_existing_secret(helm_name):
    # The README's GitOps setup: Argo CD and Flux render with `helm template`, where `lookup`
    # finds nothing, so a generated password would change on every render
    gitops = {"broker": {"auth": {"existingSecret": "frames-broker"}}}
    first = template(gitops, helm_name, reuse=False)
    second = template(gitops, helm_name, reuse=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    objects = [o for o in yaml.safe_load_all(first.stdout) if o]
    assert not [o for o in objects if o["kind"] == "Secret"]
    secret_volumes = {v["secret"]["secretName"] for _obj, spec in render.pod_specs(objects)
                      for v in spec.get("volumes", []) if "secret" in v}
    assert secret_volumes == {"frames-broker"}
    # A cluster's Erlang cookie comes from that Secret too
    cluster = merged(CLUSTER, gitops)
    first, second = (template(cluster, helm_name, reuse=False) for _ in range(2))
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "kind: Secret" not in first.stdout
    # Without it, two renders disagree: that is why the README asks for it
    plain = [template({}, helm_name, reuse=False).stdout for _ in range(2)]
    assert plain[0] != plain[1]
