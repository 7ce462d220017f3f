"""The per-task report: after a run with a killed worker, retries and a dead task, `workqueue
report` lists every task exactly once with its outcome, runs, exit code, worker, error and
result; retry-dead rounds add up. Real servers, every shipped version."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
from datetime import datetime

from cli_workers import cli, wait_until
from conftest import WORKQUEUE, broker_env, kind_of
from workqueue.errors import EXIT_DEAD, EXIT_OK
from workqueue.message import item_id

# slow: its first run hangs (its worker is killed then); flaky: fails its first run with exit 7;
# poison: fails every run with exit 9 until $MARKER exists; the rest succeed. Each success
# prints its result as the last stdout line.
COMMAND = ('case "$WORKQUEUE_PAYLOAD" in '
           'slow) test -e "$DIR/slow" || { echo $$ > "$DIR/slow"; exec sleep 120; };; '
           'flaky) test -e "$DIR/flaky" || { touch "$DIR/flaky"; exit 7; };; '
           'poison) test -e "$DIR/fixed" || { echo "boom: $WORKQUEUE_PAYLOAD" >&2; exit 9; };; '
           'esac; echo "progress"; echo "result of $WORKQUEUE_PAYLOAD"')
TASKS = ["slow", "flaky", "poison", *(f"ok {i}" for i in range(7))]


def _env(broker, server_for, tmp_path, attempts: int) -> dict[str, str]:
    env = {**broker_env(broker, server_for), "WORKQUEUE_MAX_ATTEMPTS": str(attempts),
           "WORKQUEUE_LEASE_SECONDS": "3", "WORKQUEUE_CAPTURE_RESULT": "true",
           "DIR": str(tmp_path)}
    (tmp_path / "tasks.txt").write_text("".join(f"{task}\n" for task in TASKS))
    seeded = cli("seed", "--tasks", str(tmp_path / "tasks.txt"), env=env)
    assert seeded.returncode == 0, seeded.stderr
    return env


def _report(env: dict[str, str]) -> dict[str, dict]:
    out = cli("report", "--format", "jsonl", env=env)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    by_id = {row["id"]: row for row in rows}
    assert len(by_id) == len(rows), "a task is in the report twice"
    return {TASKS[int(task_id)]: row for task_id, row in by_id.items()}


def test_report_has_every_task_once_after_kills_retries_and_a_dead_task(broker, server_for,
                                                                        tmp_path):
    env = _env(broker, server_for, tmp_path, attempts=3)
    # A worker killed outright during the slow task's first run
    first = subprocess.Popen([*WORKQUEUE, "work", "--", "sh", "-c", COMMAND],
                             env={**os.environ, **env}, stderr=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL)
    wait_until(lambda: (tmp_path / "slow").exists() and (tmp_path / "slow").read_text(), 60,
               "the slow task to start")
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    # Its task's process lives on in a session of its own, as on a node that lost its kubelet
    os.kill(int((tmp_path / "slow").read_text()), signal.SIGKILL)
    # Another worker then drains the queue
    second = cli("work", "--", "sh", "-c", COMMAND, env=env, timeout=180)
    assert second.returncode == EXIT_DEAD, second.stderr
    report = _report(env)
    assert sorted(report) == sorted(TASKS)
    poison = report["poison"]
    assert (poison["outcome"], poison["attempts"], poison["exit_code"]) == ("dead", 3, 9)
    assert "boom: poison" in poison["error"] and poison["payload"] == "poison"
    assert (report["flaky"]["outcome"], report["flaky"]["attempts"]) == ("done", 2)
    # The slow task ran twice, the second time to the end. Redis counts the killed run: the
    # task was leased alone (a first group is one task), so its expired lease charged it.
    # RabbitMQ cannot tell a task that ran alone from one that waited in its worker's
    # prefetch window, so it charges neither: the task came back and ran alone, uncharged.
    killed_run_charged = kind_of(broker) == "redis"
    assert (report["slow"]["outcome"], report["slow"]["attempts"]) == (
        "done", 2 if killed_run_charged else 1)
    for task in ("slow", "flaky", *TASKS[3:]):
        row = report[task]
        assert row["outcome"] == "done" and row["exit_code"] == 0, row
        assert row["result"] == f"result of {task}"
        assert row["worker"] and row["seconds"] >= 0
        assert datetime.fromisoformat(row["finished"]).year >= 2026
        assert row["error"] is None
    assert report["ok 0"]["attempts"] == 1
    # The same, as CSV
    out = cli("report", "--format", "csv", "-o", str(tmp_path / "report.csv"), env=env)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO((tmp_path / "report.csv").read_text())))
    assert sorted(row["id"] for row in rows) == [item_id(i) for i in range(len(TASKS))]
    assert {row["outcome"] for row in rows if row["id"] == item_id(2)} == {"dead"}
    # status shows the per-task table
    status = cli("status", env=env)
    assert "outcome" in status.stdout and "p95" in status.stdout, status.stdout


def test_retry_dead_rounds_add_up_in_the_report(broker, server_for, tmp_path):
    env = _env(broker, server_for, tmp_path, attempts=1)
    (tmp_path / "slow").touch()
    (tmp_path / "flaky").touch()
    first = cli("work", "--", "sh", "-c", COMMAND, env=env, timeout=120)
    assert first.returncode == EXIT_DEAD, first.stderr
    assert _report(env)["poison"]["outcome"] == "dead"
    # Fixed, and put back: the report shows the task done, after two runs in all
    (tmp_path / "fixed").touch()
    assert cli("retry-dead", env=env).returncode == 0
    again = cli("work", "--", "sh", "-c", COMMAND, env=env, timeout=120)
    assert again.returncode == EXIT_OK, again.stderr
    report = _report(env)
    assert len(report) == len(TASKS)
    assert (report["poison"]["outcome"], report["poison"]["attempts"]) == ("done", 2)
    assert report["poison"]["result"] == "result of poison"
    assert all(report[task]["attempts"] == 1 for task in TASKS if task != "poison")


def test_report_of_a_queue_that_holds_nothing_says_so(broker, server_for, tmp_path):
    out = cli("report", "--format", "csv", "-o", str(tmp_path / "r.csv"),
              env=broker_env(broker, server_for))
    assert out.returncode != 0
    assert "holds nothing" in out.stderr and "WORKQUEUE_QUEUE" in out.stderr
    assert not (tmp_path / "r.csv").exists()


def test_report_rows_carry_the_payloads_of_the_seeded_list(broker, server_for, tmp_path):
    # Given a list with unicode, repeated tasks, a 200 KB task and a line separator (JSON Lines)
    tasks = ["ünïcode ✓", "same", "same", "x" * 200_000, "a\u2028b", '{"json": 1}']
    source = tmp_path / "tasks.jsonl"
    source.write_text("".join(json.dumps(task, ensure_ascii=False) + "\n" for task in tasks))
    env = broker_env(broker, server_for)
    assert cli("seed", "--tasks", str(source), env=env).returncode == 0
    assert cli("work", "--", "true", env=env).returncode == EXIT_OK
    # When the report is read with the list (as the chart's tools pod reads it)
    out = cli("report", "--tasks", str(source), env=env)
    assert out.returncode == 0, out.stderr
    # Then every row carries its task's payload, as seeded
    # (split on newlines only: str.splitlines() would also split at the U+2028 in a row)
    rows = [json.loads(line) for line in out.stdout.split("\n") if line]
    assert {row["id"]: row["payload"] for row in rows} == {
        f"{i:08d}": task for i, task in enumerate(tasks)}


def test_a_report_cut_short_by_its_reader_is_not_a_broker_error(broker, server_for, tmp_path):
    env = broker_env(broker, server_for)
    (tmp_path / "t.txt").write_text("".join(f"task {i}\n" for i in range(3000)))
    assert cli("seed", "--tasks", str(tmp_path / "t.txt"), env=env).returncode == 0
    assert cli("work", "--", "true", env=env, timeout=120).returncode == EXIT_OK
    # `| head -1` closes the pipe long before 3,000 rows are written
    piped = subprocess.run(["bash", "-c", f"{' '.join(WORKQUEUE)} report | head -1; "
                                          'echo "exit ${PIPESTATUS[0]}" >&2'],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, **env})
    assert len(piped.stdout.splitlines()) == 1
    assert "exit 0" in piped.stderr and "lost the broker" not in piped.stderr, piped.stderr
