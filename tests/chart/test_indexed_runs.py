"""Indexed mode end to end, without a cluster: the generator's values, rendered by helm, and
the worker container run for every index as the Job controller would run it. The controller
sets JOB_COMPLETION_INDEX in each pod (KEP-2214, Indexed Job) and, with backoffLimitPerIndex,
writes the index's failures so far in the pod's batch.kubernetes.io/job-index-failure-count
annotation, which the chart passes on through the downward API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
import yaml

import generator.chunks
from generator import Options, generate
from render import by_kind_name, lay_out_tasks, render_chart
from workqueue.errors import EXIT_CONFIG, EXIT_ERROR, EXIT_OK, EXIT_STOPPED, TaskSourceError
from workqueue.indexed import FAILURES_ENV, INDEX_ENV
from workqueue.message import item_id

WORKER = "demo-workqueue-job-worker"
# Writes what the task got to OUT/<index>.<pid>: one file per run of an index.
RECORDER = ("import json, os; e = os.environ; "
            "open(os.path.join(e['OUT'], e['JOB_COMPLETION_INDEX'] + '.' + str(os.getpid())), "
            "'w', encoding='utf-8').write(json.dumps([e['WORKQUEUE_PAYLOAD'], "
            "e['WORKQUEUE_ITEM_ID'], e['WORKQUEUE_ATTEMPT']]))")
TASKS = ["frame-001", "ünïcødé ✓ 😀", "two  spaces ", '{"json": [1, 2]}', "yes", "- x",
         "same", "same", *(f"frame-{i:03d}" for i in range(2, 40))]


class IndexedJob:
    """The worker container of a rendered indexed-mode chart, with its /tasks volume laid out
    in a folder."""

    def __init__(self, tmp_path: Path, tasks: list[str], command: list[str],
                 inline_max_bytes: int | None = None, **values) -> None:
        source = tmp_path / "tasks.jsonl"
        source.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks),
                          encoding="utf-8")
        sizing = {"inline_max_bytes": inline_max_bytes} if inline_max_bytes else {}
        result = generate(Options(str(source), name="demo", mode="indexed",
                                  output=tmp_path / "values.yaml", **sizing))
        (tmp_path / "values.yaml").write_text(result.values, encoding="utf-8")
        self.out = tmp_path / "out"
        self.out.mkdir()
        worker = {"command": command, "env": [{"name": "OUT", "value": str(self.out)}],
                  **values}
        self.objects = render_chart({"worker": worker}, files=[tmp_path / "values.yaml"])
        self.manifest = (list(yaml.safe_load_all(result.manifest.read_text()))
                         if result.manifest else [])
        self.tasks = tmp_path / "tasks"
        self.tasks.mkdir()
        lay_out_tasks(self.objects, self.manifest, self.tasks, WORKER)
        job = by_kind_name(self.objects)[("Job", WORKER)]
        self.spec = job["spec"]
        self.container = self.spec["template"]["spec"]["containers"][0]

    def argv(self) -> list[str]:
        args = [str(self.tasks) if arg == "/tasks" else arg for arg in self.container["args"]]
        return [sys.executable, "-m", "workqueue", *self.container["command"][1:], *args]

    def env(self, index: int, failures: str | None) -> dict[str, str]:
        env = {**os.environ, INDEX_ENV: str(index)}
        env.update({e["name"]: e["value"] for e in self.container["env"] if "value" in e})
        if failures is not None:
            env[FAILURES_ENV] = failures
        return env

    def run(self, index: int, failures: str | None = "0") -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(), env=self.env(index, failures), capture_output=True,
                              text=True, timeout=120)

    def start(self, index: int) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(), env=self.env(index, "0"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def runs(self) -> dict[int, list[list[str]]]:
        """What each index's runs received, by index."""
        seen: dict[int, list[list[str]]] = {}
        for path in self.out.iterdir():
            index = int(path.name.split(".")[0])
            seen.setdefault(index, []).append(json.loads(path.read_text(encoding="utf-8")))
        return seen


@pytest.fixture
def small_chunks(monkeypatch):
    """ConfigMaps of 200 bytes, so that a short list spans several."""
    monkeypatch.setattr(generator.chunks, "CHUNK_MAX_BYTES", 200)


def _recorder() -> list[str]:
    return [sys.executable, "-c", RECORDER]


def test_every_index_runs_its_own_task_once_from_chunked_configmaps(tmp_path, small_chunks):
    # Given a list the generator splits into several ConfigMaps, duplicates and unicode included
    job = IndexedJob(tmp_path, TASKS, _recorder(), inline_max_bytes=200)
    assert len(job.manifest) >= 3, "the list was meant to span several ConfigMaps"
    assert job.spec["completions"] == len(TASKS)
    # When the controller runs every index, a few at a time
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(job.run, range(job.spec["completions"])))
    # Then each succeeded and ran exactly its own task, once, as its first attempt
    assert [r.returncode for r in results] == [EXIT_OK] * len(TASKS), results[0].stderr
    seen = job.runs()
    assert sorted(seen) == list(range(len(TASKS)))
    for index, task in enumerate(TASKS):
        assert seen[index] == [[task, item_id(index), "1"]]


def test_a_failing_task_fails_its_index_and_says_which_attempt(tmp_path):
    job = IndexedJob(tmp_path, ["ok", "bad"], ["sh", "-c", 'echo "broke on $1" >&2; exit 9',
                                                "_", "{}"], maxAttempts=2)
    first = job.run(1, failures="0")
    # Exit 1 counts against the index (backoffLimitPerIndex), never fails the whole Job
    assert first.returncode == EXIT_ERROR
    assert "attempt 1 of 2" in first.stderr and "broke on bad" in first.stderr
    assert "runs it again" in first.stderr
    last = job.run(1, failures="1")
    assert last.returncode == EXIT_ERROR
    assert "failed its last attempt (2 of 2)" in last.stderr
    assert "status.failedIndexes" in last.stderr
    assert "Traceback" not in first.stderr + last.stderr


def test_a_missing_configmap_fails_every_index_with_the_fix(tmp_path, small_chunks):
    job = IndexedJob(tmp_path, TASKS, _recorder(), inline_max_bytes=200)
    # The chunks are optional volume sources: one never applied is simply absent
    sorted(job.tasks.iterdir())[1].unlink()
    result = job.run(0)
    assert result.returncode == TaskSourceError.exit_code
    assert f"the Job has {len(TASKS)} indexes" in result.stderr
    assert "kubectl apply --server-side" in result.stderr
    assert not list(job.out.iterdir()), "a task ran from a list with a chunk missing"


def test_a_cluster_without_backoff_limit_per_index_is_refused(tmp_path):
    # The downward API gives an empty value for an annotation the pod does not have
    job = IndexedJob(tmp_path, ["a"], _recorder())
    result = job.run(0, failures="")
    assert result.returncode == EXIT_CONFIG
    assert "Kubernetes 1.29" in result.stderr and "mode coarse" in result.stderr
    assert not list(job.out.iterdir())


def test_no_index_or_an_index_past_the_end_is_a_clear_error(tmp_path):
    job = IndexedJob(tmp_path, ["a", "b"], _recorder())
    env = job.env(0, "0")
    del env[INDEX_ENV]
    unset = subprocess.run(job.argv(), env=env, capture_output=True, text=True, timeout=60)
    assert unset.returncode == EXIT_CONFIG
    assert INDEX_ENV in unset.stderr and "Indexed Job" in unset.stderr
    past = job.run(2)
    assert past.returncode == EXIT_CONFIG and "past the end" in past.stderr


def test_a_task_over_its_timeout_fails_its_attempt(tmp_path):
    job = IndexedJob(tmp_path, ["slow"], ["sleep", "60"], taskTimeoutSeconds=1)
    started = time.monotonic()
    result = job.run(0)
    assert result.returncode == EXIT_ERROR
    assert "timed out after 1s" in result.stderr
    assert time.monotonic() - started < 30


def test_sigterm_stops_the_task_after_the_grace_period(tmp_path):
    job = IndexedJob(tmp_path, ["slow"], ["sleep", "60"], terminationGracePeriodSeconds=11)
    assert job.env(0, "0")["WORKQUEUE_GRACE_SECONDS"] == "1"
    proc = job.start(0)
    deadline = time.monotonic() + 30
    while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == EXIT_STOPPED, err
    assert "stopped by SIGTERM" in err
    # 1 s of grace, then SIGTERM to the command's group
    assert time.monotonic() - stopped < 10
