"""Values a first-time user reaches for, on every pod they concern; names and tasks the chart
must refuse at render time; and the notes helm prints after install."""

from __future__ import annotations

import pytest

from render import (
    CHART,
    HELMS,
    by_kind_name,
    helm,
    pod_metadata,
    pod_specs,
    render_chart,
    template,
)
from workqueue.brokers import SCHEMES
from workqueue.cli import build_parser

EVERYWHERE = {
    "imagePullSecrets": [{"name": "registry"}],
    "priorityClassName": "batch-low",
    "podAnnotations": {"sidecar.istio.io/inject": "false"},
    "podLabels": {"team": "render"},
    "nodeSelector": {"pool": "batch"},
    "tolerations": [{"key": "batch", "operator": "Exists"}],
}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_release_wide_pod_values_reach_every_pod(broker):
    objects = render_chart({**EVERYWHERE, "broker": {"type": broker}})
    pods = list(pod_specs(objects))
    assert {obj["kind"] for obj, _ in pods} == {"Job", "StatefulSet", "Pod", "CronJob"}
    for obj, spec in pods:
        name = obj["metadata"]["name"]
        assert spec["imagePullSecrets"] == [{"name": "registry"}], name
        assert spec["priorityClassName"] == "batch-low", name
        assert spec["nodeSelector"] == {"pool": "batch"}, name
        assert spec["tolerations"] == EVERYWHERE["tolerations"], name
        # PID 1 is the pause container, which reaps orphans and leaves our signals alone
        assert spec["shareProcessNamespace"] is True, name
        meta = pod_metadata(obj)
        assert meta["labels"]["team"] == "render", name
        assert meta["annotations"]["sidecar.istio.io/inject"] == "false", name


def test_a_components_own_scheduling_wins():
    objects = by_kind_name(render_chart({
        **EVERYWHERE, "worker": {"nodeSelector": {"pool": "gpu"}},
        "broker": {"nodeSelector": {"pool": "stateful"}}}))
    worker = objects[("Job", "demo-workqueue-job-worker")]["spec"]["template"]["spec"]
    broker = objects[("StatefulSet", "demo-workqueue-job-broker")]["spec"]["template"]["spec"]
    seeder = objects[("Job", "demo-workqueue-job-seeder")]["spec"]["template"]["spec"]
    assert worker["nodeSelector"] == {"pool": "gpu"}
    assert broker["nodeSelector"] == {"pool": "stateful"}
    assert seeder["nodeSelector"] == {"pool": "batch"}


def test_workers_can_use_workload_identity_and_env_from():
    objects = by_kind_name(render_chart({"worker": {
        "serviceAccount": {"annotations": {"iam.gke.io/gcp-service-account": "x@y"}},
        "envFrom": [{"secretRef": {"name": "bucket-creds"}}]}}))
    account = objects[("ServiceAccount", "demo-workqueue-job-worker")]
    assert account["metadata"]["annotations"] == {"iam.gke.io/gcp-service-account": "x@y"}
    spec = objects[("Job", "demo-workqueue-job-worker")]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "demo-workqueue-job-worker"
    assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "bucket-creds"}}]


def test_workers_can_use_an_existing_service_account():
    objects = render_chart({"worker": {"serviceAccount": {"create": False, "name": "ci"}}})
    kinds = by_kind_name(objects)
    assert ("ServiceAccount", "demo-workqueue-job-worker") not in kinds
    spec = kinds[("Job", "demo-workqueue-job-worker")]["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "ci"
    out = template({"worker": {"serviceAccount": {"create": False}}})
    assert out.returncode != 0 and "worker.serviceAccount.name is required" in out.stderr


@pytest.mark.parametrize("broker, extra, url", [
    ("redis", {"tls": True, "redisUser": "jobs"}, "rediss://jobs@cache.example:6379/0"),
    ("rabbitmq", {"tls": True}, "amqps://workqueue@mq.example:5671/%2F"),
    ("rabbitmq", {"tls": True, "port": 5999}, "amqps://workqueue@mq.example:5999/%2F"),
])
def test_external_brokers_over_tls_and_with_a_redis_user(broker, extra, url):
    host = "cache.example" if broker == "redis" else "mq.example"
    objects = by_kind_name(render_chart({"broker": {
        "type": broker, "auth": {"existingSecret": "creds"},
        "external": {"enabled": True, "host": host, **extra}}}))
    container = objects[("Job", "demo-workqueue-job-worker")]["spec"]["template"]["spec"][
        "containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WORKQUEUE_BROKER_URL"] == url
    assert url.split("://")[0] in SCHEMES


def test_a_handler_replaces_the_command():
    objects = by_kind_name(render_chart({"worker": {"handler": "myjob.tasks:handle"}}))
    container = objects[("Job", "demo-workqueue-job-worker")]["spec"]["template"]["spec"][
        "containers"][0]
    assert container["args"] == ["--handler", "myjob.tasks:handle"]
    args = build_parser().parse_args(container["command"][1:] + container["args"])
    assert args.handler == "myjob.tasks:handle" and args.cmd == []


@pytest.mark.parametrize("helm_name", list(HELMS))
@pytest.mark.parametrize("name", ["1job", "my.job"])
def test_release_names_that_make_bad_service_names_fail_at_render(helm_name, name):
    out = template(helm_name=helm_name, name=name)
    assert out.returncode != 0
    assert f'the release name "{name}"' in out.stderr and "starting with a letter" in out.stderr


@pytest.mark.parametrize("helm_name", list(HELMS))
def test_unquoted_tasks_that_yaml_would_change_are_refused(helm_name, tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text("tasks:\n  - frame-1\n  - 0x1F\n  - yes\n  - 1.50\n")
    out = helm(helm_name, "template", "demo", str(CHART), "-f", str(values))
    assert out.returncode != 0
    assert "tasks/1" in out.stderr or "tasks.1" in out.stderr
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text('tasks:\n  - frame-1\n  - "0x1F"\n  - "yes"\n  - "1.50"\n')
    assert helm(helm_name, "template", "demo", str(CHART), "-f", str(quoted)).returncode == 0


def notes(*flags: str) -> str:
    out = helm("helm4", "install", "demo", str(CHART), "--dry-run=client", *flags)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("NOTES:", 1)[1]


def test_notes_follow_every_worker_and_the_seeder():
    text = notes("--set", "worker.parallelism=20")
    assert "--max-log-requests 25" in text
    assert "logs -f job/demo-workqueue-job-seeder" in text
    assert "make images" in text


def test_notes_say_what_uninstall_leaves_behind():
    custom = notes("--set", "image.repository=registry.example/render",
                   "--set", "tasksFrom.configMaps={t-00000,t-00001}", "--set", "tasksFrom.count=5",
                   "--set", "tasks=null")
    assert "make images" not in custom
    assert "kubectl -n default delete configmap t-00000 t-00001" in custom
    external = notes("--set", "broker.external.enabled=true", "--set",
                     "broker.external.host=redis.example", "--set",
                     "broker.auth.existingSecret=creds")
    assert "wq purge --yes" in external
    assert "the broker and its data included" not in external


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
@pytest.mark.parametrize("values, says", [
    ({"image": {"repository": "UPPER/Bad Image"}}, 'image.repository "UPPER/Bad Image" is not '
                                                   "an image name a cluster can pull"),
    ({"image": {"tag": "-rc1"}}, 'image.tag "-rc1" is not an image tag'),
    ({"broker": {"redis": {"image": {"repository": "Redis"}}}},
     'broker.redis.image.repository "Redis" is not an image name'),
    ({"broker": {"type": "rabbitmq", "rabbitmq": {"image": {"tag": "4.0 management"}}}},
     'broker.rabbitmq.image.tag "4.0 management" is not an image tag'),
    ({"worker": {"command": None}}, "worker.command is empty: set the program run once per task"),
    ({"worker": {"command": []}}, "worker.command is empty"),
    ({"worker": {"env": [{"name": "WORKQUEUE_QUEUE", "value": "elsewhere"}]}},
     "worker.env sets WORKQUEUE_QUEUE, which the chart sets from its values"),
    # A quorum of 4 survives one lost node, as one of 3 does, at a third more cost
    ({"broker": {"type": "rabbitmq", "rabbitmq": {"replicas": 4}}},
     "broker.rabbitmq.replicas is 4; use an odd number such as 1, 3 or 5"),
    ({"broker": {"rabbitmq": {"replicas": 3}}},
     "broker.rabbitmq.replicas is 3, but only RabbitMQ replicates queues"),
    ({"broker": {"type": "rabbitmq", "external": {"enabled": True, "host": "q.example",
                                                  "replicas": 2},
                 "auth": {"existingSecret": "s"}}},
     "broker.external.replicas is 2; use an odd number"),
])
def test_values_a_cluster_would_choke_on_are_refused_with_one_line(helm_name, values, says):
    # Pods with a bad image name wait in InvalidImageName for good, which no podFailurePolicy
    # rule ends; a null command rendered `args: ["--"]`; a second WORKQUEUE_QUEUE pointed the
    # workers at a queue the seeder never fills
    out = template(values, helm_name)
    assert out.returncode != 0
    assert says in out.stderr, out.stderr
    assert "goroutine" not in out.stderr and len(out.stderr.strip().splitlines()) <= 3


def test_image_names_with_a_registry_port_and_the_log_level_are_accepted():
    objects = by_kind_name(render_chart({
        "image": {"repository": "localhost:5000/team/render_x", "tag": "2026.12.05-rc_1"},
        "worker": {"env": [{"name": "WORKQUEUE_LOG_LEVEL", "value": "DEBUG"}]}}))
    worker = objects[("Job", "demo-workqueue-job-worker")]["spec"]["template"]["spec"]
    container = worker["containers"][0]
    assert container["image"] == "localhost:5000/team/render_x:2026.12.05-rc_1"
    assert {"name": "WORKQUEUE_LOG_LEVEL", "value": "DEBUG"} in container["env"]
