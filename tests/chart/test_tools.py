"""The tools CronJob: a pod with the release's settings for `workqueue status/report/dead/
retry-dead/purge` once the workers are gone, and the `wq` shell function NOTES.txt defines
to use it. The function is run here against a kubectl stand-in that records its calls."""
import os
import stat
import subprocess
from pathlib import Path

import pytest

from e2e_api import wq_function
from render import CHART, by_kind_name, helm, render_chart

TOOLS = ("CronJob", "demo-workqueue-job-tools")


def _notes(*flags: str) -> str:
    out = helm("helm4", "install", "demo", str(CHART), "--dry-run=client", *flags)
    assert out.returncode == 0, out.stderr
    return out.stdout.split("NOTES:", 1)[1]


@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_tools_pod_has_the_workers_broker_settings_and_the_task_list(mode):
    objects = by_kind_name(render_chart({"mode": mode}))
    tools = objects[TOOLS]["spec"]
    assert tools["suspend"] is True
    job = tools["jobTemplate"]["spec"]
    # A forgotten tools pod ends on its own, and its Job is removed after.
    assert job["activeDeadlineSeconds"] == 900 and job["ttlSecondsAfterFinished"] == 60
    pod = job["template"]
    worker = next(o for (kind, name), o in objects.items()
                  if kind == "Job" and name == "demo-workqueue-job-worker")["spec"]["template"]
    tool_env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    worker_env = {e["name"]: e for e in worker["spec"]["containers"][0]["env"]}
    for name in ("WORKQUEUE_BROKER_URL", "WORKQUEUE_BROKER_PASSWORD_FILE", "WORKQUEUE_QUEUE",
                 "WORKQUEUE_RUN_ID"):
        assert tool_env[name] == worker_env[name]
    assert tool_env["WORKQUEUE_TASKS"]["value"] == "/tasks"
    assert {v["name"] for v in pod["spec"]["volumes"]} >= {"tasks", "tmp"}
    # The broker's NetworkPolicy lets in pods with the client label.
    client = [key for key in worker["metadata"]["labels"] if key.endswith("-broker-client")]
    assert client and all(pod["metadata"]["labels"].get(key) == "true" for key in client)


def test_tools_can_be_left_out_and_indexed_mode_has_none():
    assert TOOLS not in by_kind_name(render_chart({"tools": {"enabled": False}}))
    assert TOOLS not in by_kind_name(render_chart({"mode": "indexed"}))


def test_tools_idle_seconds_bound_the_pod():
    tools = by_kind_name(render_chart({"tools": {"idleSeconds": 120}}))[TOOLS]
    job = tools["spec"]["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 120
    assert job["template"]["spec"]["containers"][0]["command"] == ["sleep", "120"]


def _fake_kubectl(folder: Path, exec_status: int) -> Path:
    log = folder / "calls"
    script = folder / "kubectl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        'for a in "$@"; do [ "$a" = exec ] && { echo "queue report"; '
        f"exit {exec_status}; }}; done\n"
        "exit 0\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


@pytest.mark.parametrize("exec_status", [0, 3])
def test_the_notes_wq_function_runs_a_command_in_a_tools_pod_and_removes_it(tmp_path,
                                                                           exec_status):
    log = _fake_kubectl(tmp_path, exec_status)
    function = wq_function(_notes())
    out = subprocess.run(["bash", "-c", f"{function}\nwq report --format csv"],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert out.returncode == exec_status, out.stderr
    assert out.stdout == "queue report\n"
    create, wait, run, delete = log.read_text().splitlines()
    job = create.split()[4]
    assert job.startswith("demo-workqueue-job-tools-") and len(job) <= 63
    assert "--from=cronjob/demo-workqueue-job-tools" in create
    assert f"job/{job}" in wait and "--timeout=" in wait
    assert run.endswith(f"exec job/{job} -- workqueue report --format csv")
    assert delete.startswith("-n default delete job " + job)


def test_without_tools_the_notes_exec_into_a_running_worker(tmp_path):
    log = _fake_kubectl(tmp_path, 0)
    notes = _notes("--set", "tools.enabled=false")
    assert "tools.enabled=true" in notes
    out = subprocess.run(["bash", "-c", f"{wq_function(notes)}\nwq status"],
                         capture_output=True, text=True, timeout=30,
                         env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr
    (call,) = log.read_text().splitlines()
    assert call.startswith("-n default exec job/demo-workqueue-job-worker-")
    assert call.endswith("-- workqueue status")
