"""What the chart does about the cluster's faults: exit codes mapped by podFailurePolicy, broker
data kept by default, drains held off, brokers capped below their limits, runs told apart.

Upstream facts relied on:
- podFailurePolicy `FailJob` on `onExitCodes` fails the Job at once and terminates its running
  pods (Kubernetes docs, "Handling retriable and non-retriable pod failures with Pod failure
  policy"); it needs `restartPolicy: Never`.
- A StatefulSet pod on an emptyDir loses the data when it is replaced (docs, "Volumes").
- Pod template labels that change force a rolling update of the StatefulSet, and are
  immutable in a Job (pkg/apis/batch/validation: "field is immutable" on spec.template).
"""

from __future__ import annotations

import pytest

import render
from render import BROKER, by_kind_name, rabbitmq_conf, render_chart, template
from workqueue.errors import EXIT_CODES

WORKER = ("Job", "demo-workqueue-job-worker")
SEEDER = ("Job", "demo-workqueue-job-seeder")


def _fail_job_codes(job: dict, container: str) -> set[int]:
    codes: set[int] = set()
    for rule in job["spec"]["podFailurePolicy"]["rules"]:
        on_exit = rule.get("onExitCodes")
        if rule["action"] == "FailJob" and on_exit:
            assert on_exit["containerName"] == container and on_exit["operator"] == "In"
            codes |= set(on_exit["values"])
    return codes


def _ignored(job: dict, container: str) -> tuple[set[int], set[str]]:
    """The exit codes and pod conditions the Job's podFailurePolicy ignores."""
    codes: set[int] = set()
    conditions: set[str] = set()
    for rule in job["spec"]["podFailurePolicy"]["rules"]:
        if rule["action"] != "Ignore":
            continue
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == container
            codes |= set(rule["onExitCodes"]["values"])
        conditions |= {c["type"] for c in rule.get("onPodConditions", [])
                       if c["status"] == "True"}
    return codes, conditions


def _env(job: dict) -> dict[str, str]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_every_final_exit_code_fails_the_job_at_once(broker):
    objects = by_kind_name(render_chart({"broker": {"type": broker}}))
    worker, seeder = objects[WORKER], objects[SEEDER]
    assert _fail_job_codes(worker, "worker") == {2, 3, 4, 5, 6, 7, 8}
    assert _fail_job_codes(seeder, "seeder") == {2, 4, 5}
    # The README's table says FailJob for exactly these codes; the Jobs map each of them.
    documented = {row.code for row in EXIT_CODES if row.chart.startswith("FailJob")}
    assert documented == _fail_job_codes(worker, "worker") | _fail_job_codes(seeder, "seeder")
    for job, container in ((worker, "worker"), (seeder, "seeder")):
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert _ignored(job, container) == ({137, 143}, {"DisruptionTarget"})


def test_workers_get_the_deadlines_and_run_identity():
    objects = by_kind_name(render_chart({"worker": {"seedTimeoutSeconds": 120,
                                                    "brokerOutageSeconds": 300}}))
    env = _env(objects[WORKER])
    assert env["WORKQUEUE_SEED_TIMEOUT"] == "120"
    assert env["WORKQUEUE_OUTAGE_SECONDS"] == env["WORKQUEUE_CONNECT_TIMEOUT"] == "300"
    test_pod = objects[("Pod", "demo-workqueue-job-test-drained")]
    test_env = {e["name"]: e.get("value") for e in test_pod["spec"]["containers"][0]["env"]}
    run_ids = {env["WORKQUEUE_RUN_ID"], _env(objects[SEEDER])["WORKQUEUE_RUN_ID"],
               test_env["WORKQUEUE_RUN_ID"]}
    assert len(run_ids) == 1 and len(run_ids.pop()) == 16


def _run_id(values: dict) -> str:
    return _env(by_kind_name(render_chart(values))[WORKER])["WORKQUEUE_RUN_ID"]


def test_the_run_id_changes_with_the_task_list_and_only_with_it():
    base = _run_id({"tasks": ["a", "b"]})
    assert _run_id({"tasks": ["a", "b"]}) == base
    assert _run_id({"tasks": ["a", "b"], "worker": {"parallelism": 9}}) == base
    assert _run_id({"tasks": ["a", "c"]}) != base
    chunked = {"tasksFrom": {"configMaps": ["t-00000"], "count": 2, "checksum": "ab12"}}
    changed = {"tasksFrom": {"configMaps": ["t-00000"], "count": 2, "checksum": "cd34"}}
    assert _run_id(chunked) != base
    assert _run_id(changed) != _run_id(chunked)


def test_same_release_name_in_two_namespaces_gets_two_queues():
    queues = {_env(by_kind_name(render_chart(namespace=ns))[WORKER])["WORKQUEUE_QUEUE"]
              for ns in ("team-a", "team-b")}
    assert {queue.rsplit(".", 1)[0] for queue in queues} == {
        "team-a.demo-workqueue-job", "team-b.demo-workqueue-job"}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_broker_data_survives_its_pod_by_default(broker):
    objects = by_kind_name(render_chart({"broker": {"type": broker}}))
    sts = objects[BROKER]
    claims = [name for kind, name in objects if kind == "PersistentVolumeClaim"]
    assert len(claims) == 1
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "persistentVolumeClaim": {"claimName": claims[0]}}
    if broker == "redis":
        assert "--appendonly yes" in sts["spec"]["template"]["spec"]["containers"][0][
            "command"][2]


def test_persistence_off_is_an_emptydir():
    objects = by_kind_name(render_chart({"broker": {"persistence": {"enabled": False}}}))
    sts = objects[BROKER]
    assert not [kind for kind, _name in objects if kind == "PersistentVolumeClaim"]
    volumes = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}


def test_a_drain_waits_for_the_bundled_broker_only_when_asked():
    # Off by default: a PDB that never lets go blocks every drain of the node for the
    # release's life, while an evicted broker with persistence costs a pause
    assert not [o for o in render_chart() if o["kind"] == "PodDisruptionBudget"]
    on = {"broker": {"podDisruptionBudget": {"enabled": True}}}
    objects = by_kind_name(render_chart(on))
    pdb = objects[("PodDisruptionBudget", "demo-workqueue-job-broker")]
    assert pdb["spec"]["maxUnavailable"] == 0
    pod_labels = objects[BROKER]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    external = render_chart({"broker": {"external": {"enabled": True, "host": "redis.example"},
                                        "auth": {"existingSecret": "s"},
                                        "podDisruptionBudget": {"enabled": True}}})
    assert not [o for o in external if o["kind"] == "PodDisruptionBudget"]


def test_redis_is_capped_below_its_container_limit():
    sts = by_kind_name(render_chart({"broker": {"redis": {"resources": {
        "limits": {"memory": "1Gi"}}}}}))[BROKER]
    command = sts["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "--maxmemory 536870912 --maxmemory-policy noeviction" in command


def test_rabbitmq_takes_its_memory_from_the_container_limit():
    conf = rabbitmq_conf({"broker": {"rabbitmq": {"resources": {"limits": {"memory": "2G"}}}}})
    settings = dict(line.split(" = ") for line in conf.splitlines()
                    if " = " in line and not line.startswith("#"))
    assert settings["total_memory_available_override_value"] == "2000000000"
    assert settings["raft.wal_max_size_bytes"] == "250000000"
    sts = by_kind_name(render_chart({"broker": {"type": "rabbitmq"}}))[BROKER]
    probe = sts["spec"]["template"]["spec"]["containers"][0]["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 600


@pytest.mark.parametrize("memory", ["1.5Gi", "512m", "lots"])
def test_a_broker_memory_limit_the_chart_cannot_read_is_refused(memory):
    out = template({"broker": {"redis": {"resources": {"limits": {"memory": memory}}}}})
    assert out.returncode != 0
    assert "limits/memory" in out.stderr or "limits.memory" in out.stderr


def test_a_chart_version_bump_leaves_every_pod_template_alone(tmp_path, monkeypatch):
    # Given the chart as it is and a copy whose version and appVersion were bumped
    bumped = render.bumped_chart(tmp_path)
    pinned = {"image": {"tag": "0.1.0"}}
    before = by_kind_name(render_chart(pinned))
    monkeypatch.setattr(render, "CHART", bumped)
    after = by_kind_name(render_chart(pinned))
    # Then no pod template changes: no broker restart, no immutable-field error on the Jobs
    for key in (WORKER, SEEDER, BROKER):
        assert after[key]["spec"]["template"] == before[key]["spec"]["template"], key
        assert after[key]["metadata"]["labels"] != before[key]["metadata"]["labels"]


@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_the_exit_codes_the_readme_calls_ignored_are_the_ones_the_jobs_ignore(mode):
    objects = by_kind_name(render_chart({"mode": mode}))
    documented = {row.code for row in EXIT_CODES if row.chart.startswith("ignored")}
    assert _ignored(objects[WORKER], "worker")[0] == documented
    assert _ignored(objects[SEEDER], "seeder")[0] == documented
