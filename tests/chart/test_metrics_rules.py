"""The chart's alerts, checked and unit-tested by promtool (Debian's prometheus package): each
fires when it should and stays quiet when it should not, on series shaped like the exporter's
as a ServiceMonitor labels them."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from render import CHART, by_kind_name, helm

API = "monitoring.coreos.com/v1/PrometheusRule"
SEL = 'job="demo-workqueue-job-metrics",namespace="jobs"'
DEADLINE = 7200
"""Unix time 2 h: promtool's clock starts at 0."""
ALERT_LABELS = {"job": "demo-workqueue-job-metrics", "namespace": "jobs"}


def series(name: str, values: str, **labels: str) -> dict:
    extra = "".join(f',{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{SEL}{extra}}}", "values": values}


def alerts(at: str, name: str, firing: list[dict], value: str = "") -> dict:
    """At ``at``, alert ``name`` fires once per label set in ``firing``, its annotations
    filled in with ``value`` (filled in by the test, from the rendered rule)."""
    return {"eval_time": at, "alertname": name, "value": value,
            "exp_alerts": [{"exp_labels": labels} for labels in firing]}


def with_annotations(case: dict, annotations: dict[str, dict[str, str]]) -> dict:
    """``case`` with each expected alert's annotations as Prometheus fills them in."""
    tests = []
    for test in case["alert_rule_test"]:
        filled = {key: text.replace("{{ $labels.namespace }}", "jobs")
                  .replace("{{ $value | humanizeDuration }}", test["value"])
                  .replace("{{ $value }}", test["value"])
                  for key, text in annotations[test["alertname"]].items()}
        expected = [{**alert, "exp_annotations": filled} for alert in test["exp_alerts"]]
        tests.append({"eval_time": test["eval_time"], "alertname": test["alertname"],
                      "exp_alerts": expected})
    return {**case, "alert_rule_test": tests}


def queue(pending: str, done: str, dead: str = "0+0x60", up: str = "1+0x60",
          dead_now: str = "0+0x60") -> list[dict]:
    """The exporter's series, one sample a minute: tasks waiting, done and dead counters."""
    return [series("workqueue_tasks", pending, state="pending"),
            series("workqueue_tasks", "0+0x60", state="retry_wait"),
            series("workqueue_tasks", "0+0x60", state="leased"),
            series("workqueue_tasks", dead_now, state="dead"),
            series("workqueue_tasks_done_total", done),
            series("workqueue_tasks_dead_total", dead),
            series("workqueue_broker_up", up)]


CASES = [
    # Stalled: 5 tasks wait and nothing settles for 15 min; quiet while tasks get done
    {"interval": "1m", "input_series": queue("5+0x60", "3+0x60"),
     "alert_rule_test": [alerts("10m", "WorkqueueStalled", []),
                         alerts("20m", "WorkqueueStalled",
                                [{**ALERT_LABELS, "severity": "critical"}], "5")]},
    {"interval": "1m", "input_series": queue("500-1x60", "0+1x60"),
     "alert_rule_test": [alerts("20m", "WorkqueueStalled", [])]},
    # A drained queue is not stalled, however long it stays so
    {"interval": "1m", "input_series": queue("0+0x60", "9+0x60"),
     "alert_rule_test": [alerts("50m", "WorkqueueStalled", [])]},
    # Dead tasks: from the first one
    {"interval": "1m", "input_series": queue("0+0x60", "9+0x60", "1+0x60", dead_now="1+0x60"),
     "alert_rule_test": [alerts("1m", "WorkqueueDeadTasks",
                                [{**ALERT_LABELS, "state": "dead", "severity": "warning"}],
                                "1")]},
    {"interval": "1m", "input_series": queue("0+0x60", "9+0x60"),
     "alert_rule_test": [alerts("30m", "WorkqueueDeadTasks", [])]},
    # Broker unreachable: only once it has been so for brokerDownFor (5m)
    {"interval": "1m", "input_series": queue("5-0x60", "0+1x60", up="1 1 0 0 0 0 0 0 0 0 0"),
     "alert_rule_test": [alerts("4m", "WorkqueueBrokerUnreachable", []),
                         alerts("9m", "WorkqueueBrokerUnreachable",
                                [{**ALERT_LABELS, "severity": "critical"}])]},
    # Behind the deadline: 2,000 tasks at 6 a minute need 5.5 h, and 2 h are left
    {"interval": "1m", "input_series": queue("2000-6x60", "0+6x60"),
     "alert_rule_test": [alerts("40m", "WorkqueueBehindDeadline",
                                [{**ALERT_LABELS, "severity": "warning"}], "4h 53m 20s")]},
    # At 600 a minute they need 3 min: quiet
    {"interval": "1m", "input_series": queue("20000-600x30", "0+600x30"),
     "alert_rule_test": [alerts("31m", "WorkqueueBehindDeadline", [])]},
]


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is not installed: run `make setup` (Debian's prometheus package)")
    return found


def rendered_rules(*flags: str) -> dict:
    out = helm("helm4", "template", "demo", str(CHART), "--namespace", "jobs",
               "--set", "metrics.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
               "--set", "metrics.prometheusRule.labels.release=kube-prometheus-stack",
               "--api-versions", API, *flags)
    assert out.returncode == 0, out.stderr
    objects = by_kind_name([doc for doc in yaml.safe_load_all(out.stdout) if doc])
    return objects[("PrometheusRule", "demo-workqueue-job-metrics")]


def test_the_rules_pass_promtool_and_each_alert_fires_only_when_it_should(tmp_path):
    rule = rendered_rules("--set", f"metrics.prometheusRule.deadline={DEADLINE}")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    checked = subprocess.run([promtool(), "check", "rules", str(rules)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    names = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert names == {"WorkqueueStalled", "WorkqueueDeadTasks", "WorkqueueBrokerUnreachable",
                     "WorkqueueBehindDeadline"}
    tests = tmp_path / "tests.yml"
    annotations = {r["alert"]: r["annotations"] for group in rule["spec"]["groups"]
                   for r in group["rules"]}
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m",
                                     "tests": [with_annotations(case, annotations)
                                               for case in CASES]}))
    tested = subprocess.run([promtool(), "test", "rules", str(tests)], capture_output=True,
                            text=True, timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_without_a_deadline_there_is_no_deadline_alert():
    rule = rendered_rules()
    names = {r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]}
    assert "WorkqueueBehindDeadline" not in names and len(names) == 3


def test_a_prometheus_rule_needs_the_operators_api_and_says_so():
    refused = helm("helm4", "template", "demo", str(CHART), "--set", "metrics.enabled=true",
                   "--set", "metrics.prometheusRule.enabled=true")
    assert refused.returncode != 0
    assert "metrics.prometheusRule.enabled needs the Prometheus Operator" in refused.stderr
