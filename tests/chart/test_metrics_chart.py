"""The chart's metrics: `workqueue exporter` in a Deployment of its own with the workers' broker
settings, its Service, a NetworkPolicy that opens its port alone, a ServiceMonitor only where
the Prometheus Operator's API is served, and the Grafana dashboard's ConfigMap. (The alerts:
test_metrics_rules.py; the dashboard's queries against a real Prometheus: test_metrics.py.)"""

from __future__ import annotations

import json

import pytest
import yaml

from render import CHART, HELMS, by_kind_name, helm, render_chart, validate_strictly

EXPORTER = ("Deployment", "demo-workqueue-job-metrics")
SERVICE = ("Service", "demo-workqueue-job-metrics")
POLICY = ("NetworkPolicy", "demo-workqueue-job-metrics")
MONITOR_API = "monitoring.coreos.com/v1/ServiceMonitor"


def metrics_objects(values: dict) -> dict:
    return by_kind_name(render_chart({"metrics": {"enabled": True}, **values}))


def worker_env(objects: dict) -> dict:
    worker = next(o for (kind, name), o in objects.items()
                  if kind == "Job" and name == "demo-workqueue-job-worker")
    return {e["name"]: e for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]}


def test_metrics_are_off_by_default():
    objects = by_kind_name(render_chart())
    assert not [key for key in objects if key[1].endswith("-metrics")]


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_the_exporter_reads_the_workers_queue_and_serves_on_the_metrics_port(broker):
    objects = metrics_objects({"broker": {"type": broker}, "metrics": {
        "enabled": True, "port": 9500, "reportEverySeconds": 30}})
    validate_strictly([objects[EXPORTER], objects[SERVICE], objects[POLICY]])
    pod = objects[EXPORTER]["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["command"] == ["workqueue", "exporter", "--port", "9500",
                                    "--report-every", "30"]
    env = {e["name"]: e for e in container["env"]}
    workers = worker_env(objects)
    for name in ("WORKQUEUE_BROKER_URL", "WORKQUEUE_BROKER_PASSWORD_FILE", "WORKQUEUE_QUEUE",
                 "WORKQUEUE_RUN_ID"):
        assert env[name] == workers[name]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9500, "protocol": "TCP"}]
    # The Service finds the pod, on the named port
    service = objects[SERVICE]["spec"]
    assert service["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["ports"] == [{"name": "metrics", "port": 9500, "targetPort": "metrics",
                                 "protocol": "TCP"}]
    # The broker's NetworkPolicy lets the exporter in (it is one of the broker's clients)
    broker_policy = objects[("NetworkPolicy", "demo-workqueue-job-broker")]["spec"]
    allowed = broker_policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= pod["metadata"]["labels"].items()


def test_the_metrics_policy_opens_the_metrics_port_alone():
    objects = metrics_objects({})
    policy = objects[POLICY]["spec"]
    pod_labels = objects[EXPORTER]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["ingress"] == [{"ports": [{"port": 9400, "protocol": "TCP"}]}]
    # The release's other policies select the exporter and let nothing in: the port is the
    # only way in
    others = [o["spec"] for (kind, name), o in objects.items()
              if kind == "NetworkPolicy" and name != POLICY[1]
              and o["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()]
    assert others and all(spec["ingress"] == [] for spec in others)


def test_indexed_mode_has_no_queue_and_no_exporter():
    objects = metrics_objects({"mode": "indexed"})
    assert EXPORTER not in objects and SERVICE not in objects


@pytest.mark.parametrize("helm_name", sorted(HELMS))
def test_a_service_monitor_needs_the_operators_api_and_says_so(helm_name):
    flags = ["--set", "metrics.enabled=true", "--set", "metrics.serviceMonitor.enabled=true",
             "--set", "metrics.serviceMonitor.labels.release=kube-prometheus-stack"]
    # Without the API: one message that names the value and the way out
    refused = helm(helm_name, "template", "demo", str(CHART), *flags)
    assert refused.returncode != 0
    assert "metrics.serviceMonitor.enabled needs the Prometheus Operator" in refused.stderr
    assert "--api-versions monitoring.coreos.com/v1/ServiceMonitor" in refused.stderr
    # With it: a ServiceMonitor that selects the metrics Service and scrapes its port
    out = helm(helm_name, "template", "demo", str(CHART), *flags, "--namespace", "jobs",
               "--api-versions", MONITOR_API)
    assert out.returncode == 0, out.stderr
    objects = by_kind_name([doc for doc in yaml.safe_load_all(out.stdout) if doc])
    monitor = objects[("ServiceMonitor", "demo-workqueue-job-metrics")]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    service = objects[SERVICE]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["jobs"]}
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics",
                                             "interval": "30s"}]


def test_the_dashboard_configmap_carries_the_charts_dashboard_for_grafanas_sidecar():
    objects = metrics_objects({"metrics": {"enabled": True, "dashboard": {"enabled": True}}})
    board = objects[("ConfigMap", "demo-workqueue-job-metrics-dashboard")]
    validate_strictly([board])
    assert board["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "dashboards" / "workqueue-job.json").read_text())
    assert json.loads(board["data"]["workqueue-job.json"]) == shipped
    assert ("ConfigMap", "demo-workqueue-job-metrics-dashboard") not in metrics_objects({})


@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_workers_serve_their_metrics_on_a_port_the_policy_opens(mode):
    values = {"mode": mode, "metrics": {"enabled": True, "workers": {"enabled": True}}}
    objects = by_kind_name(render_chart(values))
    worker = next(o for (kind, name), o in objects.items()
                  if kind == "Job" and name == "demo-workqueue-job-worker")
    validate_strictly([worker])
    pod = worker["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert worker_env(objects)["WORKQUEUE_METRICS_PORT"]["value"] == "9401"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9401, "protocol": "TCP"}]
    policy = objects[("NetworkPolicy", "demo-workqueue-job-metrics-workers")]["spec"]
    assert policy["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert policy["ingress"] == [{"ports": [{"port": 9401, "protocol": "TCP"}]}]
    # Off by default: the worker Job's spec (and so its name) is what it was
    plain = by_kind_name(render_chart({"mode": mode, "metrics": {"enabled": True}}))
    assert "WORKQUEUE_METRICS_PORT" not in worker_env(plain)
    assert ("NetworkPolicy", "demo-workqueue-job-metrics-workers") not in plain


@pytest.mark.parametrize("helm_name", sorted(HELMS))
def test_a_pod_monitor_scrapes_the_workers_and_needs_them_to_serve(helm_name):
    flags = ["--set", "metrics.enabled=true", "--set", "metrics.podMonitor.enabled=true",
             "--api-versions", "monitoring.coreos.com/v1/PodMonitor", "--namespace", "jobs"]
    refused = helm(helm_name, "template", "demo", str(CHART), *flags)
    assert refused.returncode != 0
    assert "set metrics.workers.enabled=true too" in refused.stderr
    out = helm(helm_name, "template", "demo", str(CHART), *flags,
               "--set", "metrics.workers.enabled=true")
    assert out.returncode == 0, out.stderr
    objects = by_kind_name([doc for doc in yaml.safe_load_all(out.stdout) if doc])
    monitor = objects[("PodMonitor", "demo-workqueue-job-metrics-workers")]["spec"]
    worker = next(o for (kind, name), o in objects.items()
                  if kind == "Job" and name == "demo-workqueue-job-worker")
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    assert monitor["podMetricsEndpoints"] == [{"port": "metrics", "path": "/metrics",
                                               "interval": "30s"}]
    without_api = helm(helm_name, "template", "demo", str(CHART), "--set",
                       "metrics.enabled=true", "--set", "metrics.podMonitor.enabled=true",
                       "--set", "metrics.workers.enabled=true")
    assert "metrics.podMonitor.enabled needs the Prometheus Operator" in without_api.stderr


def test_the_bundled_rabbitmqs_own_metrics_are_opened_without_restarting_it():
    values = {"broker": {"type": "rabbitmq"}}
    plain = by_kind_name(render_chart(values))
    objects = metrics_objects(values)
    service = objects[("Service", "demo-workqueue-job-broker")]["spec"]
    assert {"name": "prometheus", "port": 15692, "targetPort": 15692,
            "protocol": "TCP"} in service["ports"]
    policy = objects[("NetworkPolicy", "demo-workqueue-job-broker")]["spec"]
    assert policy["ingress"][1:] == [{"ports": [{"port": 15692, "protocol": "TCP"}]}]
    # The queue port stays the release's pods' alone
    assert policy["ingress"][0]["from"]
    # The broker's pod template is what it was: turning metrics on does not restart it
    broker = ("StatefulSet", "demo-workqueue-job-broker")
    assert objects[broker]["spec"]["template"] == plain[broker]["spec"]["template"]
    # Redis has no such endpoint
    redis = metrics_objects({"broker": {"type": "redis"}})
    ports = redis[("Service", "demo-workqueue-job-broker")]["spec"]["ports"]
    assert [port["name"] for port in ports] == ["redis"]


def test_a_service_monitor_scrapes_the_bundled_rabbitmq_too():
    out = helm("helm4", "template", "demo", str(CHART), "--namespace", "jobs",
               "--set", "broker.type=rabbitmq", "--set", "metrics.enabled=true",
               "--set", "metrics.serviceMonitor.enabled=true", "--api-versions", MONITOR_API)
    assert out.returncode == 0, out.stderr
    objects = by_kind_name([doc for doc in yaml.safe_load_all(out.stdout) if doc])
    monitor = objects[("ServiceMonitor", "demo-workqueue-job-broker")]["spec"]
    service = objects[("Service", "demo-workqueue-job-broker")]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == "prometheus"
