"""Re-running only what failed: `workqueue dead` exports the dead-lettered tasks as a task file,
and `retry-dead` (or the chart's retryDead, through the seeder) puts them back with fresh
attempts while everything done stays done. Real servers, every shipped version."""

from __future__ import annotations

import json
import secrets
import subprocess
import time

from cli_workers import Workers, cli, wait_until
from conftest import broker_env, write_tasks
from workqueue.errors import EXIT_DEAD

# Fails until the marker file exists: a cause the user fixes between the two runs.
POISON = ('case "$WORKQUEUE_PAYLOAD" in *poison*) test -e "$MARKER" || exit 9;; esac; '
          'echo "ran $WORKQUEUE_PAYLOAD" >> "$OUT"')
TASKS = ["a 1", "poison 1", "b 2", 'poison "two" — ü', "c 3"]


def _run(env: dict[str, str], tmp_path):
    return cli("work", "--", "sh", "-c", POISON, env=env, timeout=120)


def _seeded_with_two_dead(broker, server_for, tmp_path) -> dict[str, str]:
    env = {**broker_env(broker, server_for), "WORKQUEUE_MAX_ATTEMPTS": "2",
           "MARKER": str(tmp_path / "fixed"), "OUT": str(tmp_path / "ran.txt")}
    (tmp_path / "tasks.jsonl").write_text(
        "".join(json.dumps(task, ensure_ascii=False) + "\n" for task in TASKS))
    assert cli("seed", "--tasks", str(tmp_path / "tasks.jsonl"), env=env).returncode == 0
    first = _run(env, tmp_path)
    assert first.returncode == EXIT_DEAD, first.stderr
    return env


def test_dead_exports_the_failed_tasks_as_they_were_seeded(broker, server_for, tmp_path):
    env = _seeded_with_two_dead(broker, server_for, tmp_path)
    exported = cli("dead", "--format", "jsonl", env=env)
    assert exported.returncode == 0, exported.stderr
    assert sorted(json.loads(line) for line in exported.stdout.splitlines()) == sorted(
        ["poison 1", 'poison "two" — ü'])
    # The export is a task file: seeding it elsewhere gives the same payloads
    (tmp_path / "dead.txt").write_text("")
    text = cli("dead", "--format", "text", "-o", str(tmp_path / "dead.txt"), env=env)
    assert text.returncode == 0, text.stderr
    assert sorted((tmp_path / "dead.txt").read_text().splitlines()) == sorted(
        ["poison 1", 'poison "two" — ü'])
    # And status shows them as written, not as Python reprs
    status = cli("status", "--dead", "5", env=env)
    assert 'task: poison "two" — ü' in status.stdout


def test_retry_dead_runs_only_the_failed_tasks_again(broker, server_for, tmp_path):
    env = _seeded_with_two_dead(broker, server_for, tmp_path)
    (tmp_path / "fixed").touch()
    # Put back while a worker already waits on the queue: safe while workers run
    retried = cli("retry-dead", env=env)
    assert retried.returncode == 0, retried.stderr
    assert "put 2 dead tasks back" in retried.stderr
    assert cli("retry-dead", env=env).stderr.count("put 0 dead tasks back") == 1
    second = _run(env, tmp_path)
    assert second.returncode == 0, second.stderr
    ran = (tmp_path / "ran.txt").read_text().splitlines()
    assert sorted(ran) == sorted(f"ran {task}" for task in TASKS)
    assert broker.status().done == 5 and broker.status().dead == 0


def test_the_chart_s_retry_round_is_applied_once_and_workers_wait_for_it(
        broker, server_for, tmp_path):
    env = _seeded_with_two_dead(broker, server_for, tmp_path)
    (tmp_path / "fixed").touch()
    # The new worker Job of `--set retryDead=1` starts with the new seeder: its workers find
    # the queue "drained" with two dead, and must wait for the round instead of exiting 3
    round_env = {**env, "WORKQUEUE_RETRY_DEAD_ROUND": "1"}
    workers = Workers(round_env, tmp_path / "logs", 1, "sh", "-c", POISON)
    wait_until(lambda: "waiting for the seeder" in workers.text(), what="a waiting worker")
    seeder = cli("seed", "--tasks", str(tmp_path / "tasks.jsonl"), env=round_env)
    assert seeder.returncode == 0, seeder.stderr
    assert "put 2 dead tasks back" in seeder.stderr
    assert workers.wait() == [0], workers.text()
    # A seeder pod re-created for the same round puts nothing back, not even new failures
    again = cli("seed", "--tasks", str(tmp_path / "tasks.jsonl"), env=round_env)
    assert "retry round 1 was already applied" in again.stderr
    assert broker.status().done == 5 and broker.status().dead == 0


def test_text_export_refuses_what_a_text_line_cannot_hold(broker, server_for, tmp_path):
    env = {**broker_env(broker, server_for), "WORKQUEUE_MAX_ATTEMPTS": "1"}
    (tmp_path / "t.jsonl").write_text(json.dumps("two\nlines") + "\n")
    assert cli("seed", "--tasks", str(tmp_path / "t.jsonl"), env=env).returncode == 0
    assert cli("work", "--", "false", env=env).returncode == EXIT_DEAD
    refused = cli("dead", "--format", "text", "-o", str(tmp_path / "out.txt"), env=env)
    assert refused.returncode == 2
    assert "use --format jsonl" in refused.stderr and "Traceback" not in refused.stderr
    assert not (tmp_path / "out.txt").exists()


def test_a_task_past_its_timeout_is_stopped_with_its_children(redis_broker, server_for,
                                                              tmp_path):
    # A command that hangs, with a child that would outlive it
    env = {**broker_env(redis_broker, server_for), "WORKQUEUE_MAX_ATTEMPTS": "2",
           "WORKQUEUE_TASK_TIMEOUT": "1"}
    write_tasks(tmp_path / "t.txt", 1)
    assert cli("seed", "--tasks", str(tmp_path / "t.txt"), env=env).returncode == 0
    # A duration of this test's own: the same test on another broker version may run in
    # another test process at this moment, with sleeps that pgrep would find
    sleep = f"sleep 31.{secrets.randbelow(10**6):06d}"
    started = time.monotonic()
    worked = cli("work", "--", "sh", "-c", f"{sleep} & {sleep}", env=env, timeout=60)
    # Then each attempt ends after about a second, and the task is dead-lettered with why
    assert worked.returncode == EXIT_DEAD, worked.stderr
    assert time.monotonic() - started < 20
    [dead] = redis_broker.dead_items(5)
    assert dead.attempts == 2 and "timed out after 1s" in dead.error
    # And nothing of the command's process group is left running
    left = subprocess.run(["pgrep", "-f", sleep], capture_output=True, text=True)
    assert left.stdout == "", left.stdout


def test_a_timeout_with_a_handler_function_is_refused(redis_broker, server_for):
    env = {**broker_env(redis_broker, server_for), "WORKQUEUE_TASK_TIMEOUT": "5"}
    refused = cli("work", "--handler", "json:dumps", env=env)
    assert refused.returncode == 2
    assert "--task-timeout stops commands" in refused.stderr
