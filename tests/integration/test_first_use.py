"""What a new user meets first: the command runner, run-local, the CLI's errors and the Python
API, each against a real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import WORKQUEUE, broker_env, write_tasks
from workqueue import seed
from workqueue.errors import EXIT_CONFIG, EXIT_DEAD, EXIT_STOPPED


def cli(*args: str, env: dict[str, str], timeout: float = 60, **kwargs):
    return subprocess.run([*WORKQUEUE, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env}, **kwargs)


def seed_one(broker, tmp_path: Path, payload: str) -> None:
    (tmp_path / "t.jsonl").write_text(f'"{payload}"\n')
    seed(broker, str(tmp_path / "t.jsonl"))


def test_a_200_kb_task_reaches_the_command_on_stdin(redis_broker, server_for, tmp_path):
    # Given one task of 200,000 bytes: above Linux's 128 KiB cap on one variable or argument
    seed_one(redis_broker, tmp_path, "x" * 200_000)
    env = broker_env(redis_broker, server_for)
    # When a command reads it from stdin
    out = tmp_path / "out"
    result = cli("work", "--", "sh", "-c", f'test -z "${{WORKQUEUE_PAYLOAD+set}}" && '
                 f'wc -c > {out}', env=env)
    # Then it ran once, with every byte (and the newline), and $WORKQUEUE_PAYLOAD unset
    assert result.returncode == 0, result.stderr
    assert out.read_text().strip() == "200001"
    assert "is 200000 bytes" in result.stderr and "passed on stdin only" in result.stderr


def test_a_200_kb_task_in_braces_fails_with_the_reason(redis_broker, server_for, tmp_path):
    seed_one(redis_broker, tmp_path, "y" * 200_000)
    result = cli("work", "--max-attempts", "1", "--on-dead", "succeed", "--", "echo", "{}",
                 env=broker_env(redis_broker, server_for))
    assert result.returncode == 0
    (dead,) = redis_broker.dead_items(5)
    assert "is 200000 bytes" in dead.error and "`{}`" in dead.error and "stdin" in dead.error


def test_a_task_with_a_nul_character_reaches_the_command_on_stdin(redis_broker, server_for,
                                                                  tmp_path):
    (tmp_path / "t.jsonl").write_text('"a\\u0000b"\n')
    seed(redis_broker, str(tmp_path / "t.jsonl"))
    out = tmp_path / "out"
    env = broker_env(redis_broker, server_for)
    result = cli("work", "--", "sh", "-c", f"cat > {out}", env=env)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == b"a\x00b\n"
    assert "holds a NUL character" in result.stderr


@pytest.mark.parametrize("script", [
    'while read -r line; do printf "%s|" "$line" >> "$OUT"; done',
    'set -e; read -r t; printf "%s|" "$t" >> "$OUT"',
], ids=["while-read", "set-e-read"])
def test_shell_read_idioms_get_the_task(broker, server_for, tmp_path, script):
    write_tasks(tmp_path / "t.txt", 3)
    seed(broker, str(tmp_path / "t.txt"))
    env = {**broker_env(broker, server_for), "OUT": str(tmp_path / "out")}
    result = cli("work", "--max-attempts", "1", "--", "sh", "-c", script, env=env)
    assert result.returncode == 0, result.stderr
    assert sorted((tmp_path / "out").read_text().split("|")[:-1]) == [
        "task-0", "task-1", "task-2"]


def test_a_task_that_leaves_a_process_behind_does_not_hold_the_worker(
        redis_broker, server_for, tmp_path):
    # Given tasks that each start `sleep 15` in the background and exit (15 s and a fraction
    # of this test's own: the same test on another broker version, in another test process,
    # starts sleeps of its own)
    write_tasks(tmp_path / "t.txt", 3)
    seed(redis_broker, str(tmp_path / "t.txt"))
    sleep = f"15.{os.getpid()}"
    started = time.monotonic()
    result = cli("work", "--", "sh", "-c", f"sleep {sleep} & echo started",
                 env=broker_env(redis_broker, server_for))
    # Then the three tasks take seconds, not 45, and the sleeps are gone
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 12
    assert not [p for p in psutil.process_iter(["cmdline"])
                if p.info["cmdline"] == ["sleep", sleep]]


def test_sigterm_stops_a_command_and_its_children_within_the_grace_period(
        redis_broker, server_for, tmp_path):
    # Given a task whose command is a shell running a child that holds stderr for 30 s
    seed_one(redis_broker, tmp_path, "slow")
    proc = subprocess.Popen([*WORKQUEUE, "work", "--grace-seconds", "2", "--", "sh", "-c",
                             "sleep 30"], env={**os.environ,
                                               **broker_env(redis_broker, server_for)},
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while redis_broker.status().leased == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    # When the worker gets SIGTERM
    proc.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    code = proc.wait(30)
    # Then it exits after about the grace period, with the task given back unstarted
    assert code == EXIT_STOPPED
    assert time.monotonic() - stopped < 10
    status = redis_broker.status()
    assert (status.pending, status.leased) == (1, 0)


def _descendants_and_redis(proc: subprocess.Popen) -> list[psutil.Process]:
    return psutil.Process(proc.pid).children(recursive=True)


def _cmdline(process: psutil.Process) -> list[str]:
    """A task's `sleep` can end between listing and reading: a zombie or gone has no cmdline."""
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)],
                         ids=["sigterm", "ctrl-c"])
def test_run_local_stops_cleanly_on_a_signal(tmp_path, signum, code):
    # Given run-local with its private Redis and two workers busy on slow tasks
    write_tasks(tmp_path / "t.txt", 20)
    proc = subprocess.Popen([*WORKQUEUE, "run-local", "--tasks", str(tmp_path / "t.txt"),
                             "--parallelism", "2", "--grace-seconds", "2", "--", "sleep", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = [p for p in _descendants_and_redis(proc) if "work" in _cmdline(p)]
        if len(workers) == 2:
            break
        time.sleep(0.1)
    time.sleep(1)
    family = _descendants_and_redis(proc)
    assert any("redis-server" in p.name() for p in family)
    # When it gets SIGTERM, or Ctrl-C (SIGINT)
    proc.send_signal(signum)
    _out, err = proc.communicate(timeout=60)
    # Then it exits with the signal's code and one summary line, leaving nothing behind
    assert proc.returncode == code, err
    assert err.count("interrupted") == 1 and "stopped 2 workers" in err
    assert "Traceback" not in err
    _gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, [_cmdline(p) for p in alive]
    assert not list(tmp_path.glob("workqueue-redis-*")), "the private Redis folder is left"


@pytest.mark.parametrize("presses", [1, 3], ids=["ctrl-c", "ctrl-c-again-while-stopping"])
def test_ctrl_c_on_run_local_with_a_broker_gives_every_lease_back(redis_broker, server_for,
                                                                  tmp_path, presses):
    """Signals are recorded and acted on where run-local waits, not raised where they land:
    raised inside Popen.poll(), one would leave its lock held and hang every later wait; so
    Ctrl-C pressed again while the workers stop changes nothing."""
    write_tasks(tmp_path / "t.txt", 20)
    url, password = server_for("redis")
    proc = subprocess.Popen([*WORKQUEUE, "run-local", "--broker-url", url, "--queue",
                             redis_broker.queue, "--tasks", str(tmp_path / "t.txt"),
                             "--parallelism", "2", "--grace-seconds", "1", "--", "sleep", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WORKQUEUE_BROKER_PASSWORD": password})
    deadline = time.monotonic() + 30
    while redis_broker.status().leased < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    # When Ctrl-C comes, once or again while the workers are being stopped
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
    _out, err = proc.communicate(timeout=60)
    # Then it stops once, cleanly, and every lease is back
    assert proc.returncode == 130, err
    assert err.count("interrupted") == 1 and "Traceback" not in err
    status = redis_broker.status()
    assert status.leased == 0 and status.pending == 20


def test_run_local_checks_the_task_file_before_starting_redis(tmp_path):
    started = time.monotonic()
    result = cli("run-local", "--tasks", str(tmp_path / "missing.txt"), "--", "true", env={})
    assert result.returncode == 4
    assert "missing.txt: no such file" in result.stderr
    assert "redis-server" not in result.stdout
    assert time.monotonic() - started < 10


def test_run_local_verdict_is_said_once_without_a_hint_at_a_gone_broker(tmp_path):
    (tmp_path / "t.txt").write_text("good\nbad\n")
    result = cli("run-local", "--tasks", str(tmp_path / "t.txt"), "--parallelism", "2",
                 "--max-attempts", "1", "--", "sh", "-c", 'test "$WORKQUEUE_PAYLOAD" = good',
                 env={})
    assert result.returncode == EXIT_DEAD
    assert result.stdout.count("finished with failures: 1 done, 1 dead-lettered") == 1
    assert "workqueue status --dead" not in result.stdout
    assert "Exiting 3" not in result.stderr


@pytest.mark.parametrize("url, message", [
    ("redis://127.0.0.1:99999/0", "Port out of range"),
    ("redis://127.0.0.1:{redis}/99", "has no database 99"),
    ("amqp://u@127.0.0.1:{redis}/%2F", "did not answer as RabbitMQ within 3s"),
    ("rediss://127.0.0.1:{redis}/0", "check that the server speaks TLS"),
], ids=["port", "db", "amqp-at-redis", "tls-at-plaintext"])
def test_bad_broker_urls_are_one_line_within_the_connect_timeout(redis_server, url, message):
    started = time.monotonic()
    result = cli("status", "--broker-url", url.format(redis=redis_server.port),
                 "--connect-timeout", "3", env={"WORKQUEUE_BROKER_PASSWORD":
                                                redis_server.password})
    assert result.returncode in (2, 5)
    assert message in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert time.monotonic() - started < 15


def test_no_password_is_said_as_such(redis_server):
    result = cli("status", "--broker-url", redis_server.url, env={})
    assert result.returncode == EXIT_CONFIG
    assert "wants a password" in result.stderr


def test_status_of_a_misspelled_queue_is_an_error(redis_server, redis_broker, tmp_path):
    seed_one(redis_broker, tmp_path, "a")
    env = {"WORKQUEUE_BROKER_URL": redis_server.url,
           "WORKQUEUE_BROKER_PASSWORD": redis_server.password}
    wrong = cli("status", "--queue", redis_broker.queue + "x", env=env)
    assert wrong.returncode == 1
    assert "holds nothing" in wrong.stdout and "WORKQUEUE_QUEUE" in wrong.stdout
    right = cli("status", "--queue", redis_broker.queue, env=env)
    assert right.returncode == 0
    assert right.stdout.count("pending 1") == 1, right.stdout


def test_an_unreachable_broker_is_reported_while_waiting(tmp_path):
    result = cli("status", "--broker-url", "redis://127.0.0.1:1/0", "--connect-timeout", "2",
                 env={})
    assert "cannot reach redis at 127.0.0.1:1 yet" in result.stderr
    assert result.returncode == 5


PY_WORKER = textwrap.dedent("""
    import sys
    from workqueue import run_worker

    def handle(item):
        if item.payload == "bad":
            raise ValueError("bad task")

    sys.exit(run_worker(handle))
""")


def test_the_readme_python_worker_takes_its_settings_from_the_environment(
        redis_broker, server_for, tmp_path):
    # Given a poison task and WORKQUEUE_MAX_ATTEMPTS=1 in the environment
    (tmp_path / "t.txt").write_text("good\nbad\n")
    seed(redis_broker, str(tmp_path / "t.txt"))
    env = {**os.environ, **broker_env(redis_broker, server_for), "WORKQUEUE_MAX_ATTEMPTS": "1"}
    # When the README's worker runs
    result = subprocess.run([sys.executable, "-c", PY_WORKER], env=env, capture_output=True,
                            text=True, timeout=60)
    # Then the task is dead after one attempt and the process exits 3
    assert result.returncode == EXIT_DEAD, result.stderr
    (dead,) = redis_broker.dead_items(5)
    assert dead.attempts == 1 and "bad task" in dead.error


def test_the_python_worker_without_a_broker_says_what_to_set():
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKQUEUE_")}
    result = subprocess.run([sys.executable, "-c", PY_WORKER], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "no broker given: set WORKQUEUE_BROKER_URL" in result.stderr
    assert "KeyError" not in result.stderr


def test_work_calls_a_python_handler(redis_broker, server_for, tmp_path):
    (tmp_path / "handlers.py").write_text(
        "def handle(item):\n    open(item.payload, 'w').write(item.id)\n")
    (tmp_path / "t.txt").write_text(f"{tmp_path / 'done-a'}\n")
    seed(redis_broker, str(tmp_path / "t.txt"))
    result = cli("work", "--handler", "handlers:handle",
                 env={**broker_env(redis_broker, server_for), "PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "done-a").read_text() == "00000000"
    missing = cli("work", "--handler", "nosuchmodule:handle",
                  env=broker_env(redis_broker, server_for))
    assert missing.returncode == EXIT_CONFIG and "cannot import 'nosuchmodule'" in missing.stderr


def _busy(proc: subprocess.Popen, tasks: int) -> list[psutil.Process]:
    """run-local's processes once ``tasks`` of its `sleep` tasks run (or after 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        family = _descendants_and_redis(proc)
        running = [p for p in family if _cmdline(p)[:1] == ["sleep"]]
        if len(running) == tasks or time.monotonic() > deadline:
            return family
        time.sleep(0.1)


def test_ctrl_c_in_a_terminal_stops_run_local_and_its_redis_in_seconds(tmp_path):
    """A terminal sends Ctrl-C's SIGINT to its whole foreground process group, not to one pid:
    run-local leads a group here, as a shell job does, and the signal goes to that group."""
    # Given run-local, its private Redis and four workers busy on slow tasks
    write_tasks(tmp_path / "t.txt", 40)
    proc = subprocess.Popen([*WORKQUEUE, "run-local", "--tasks", str(tmp_path / "t.txt"),
                             "--parallelism", "4", "--grace-seconds", "2", "--", "sleep", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)}, start_new_session=True)
    try:
        family = _busy(proc, 4)
        assert any("redis-server" in p.name() for p in family)
        # When Ctrl-C is pressed: SIGINT to the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
        pressed = time.monotonic()
        _out, err = proc.communicate(timeout=60)
        took = time.monotonic() - pressed
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Then it stops within the grace period and a little more, saying only what happened
    assert proc.returncode == 130, err
    assert took < 10, f"took {took:.1f}s: {err}"
    assert err.count("interrupted") == 1, err
    assert "stopped 4 workers; 4 gave back what they had not finished" in err, err
    assert "Traceback" not in err and "lost the connection" not in err, err
    _gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, [_cmdline(p) for p in alive]
    assert not list(tmp_path.glob("workqueue-redis-*")), "the private Redis folder is left"


def test_workers_and_redis_end_when_run_local_is_killed(tmp_path):
    """The issue's OOM kill of run-local left 141 workers retrying a dead Redis."""
    # Given run-local with its private Redis and two workers busy
    write_tasks(tmp_path / "t.txt", 20)
    proc = subprocess.Popen([*WORKQUEUE, "run-local", "--tasks", str(tmp_path / "t.txt"),
                             "--parallelism", "2", "--grace-seconds", "1", "--", "sleep", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TMPDIR": str(tmp_path)})
    family = _busy(proc, 2)
    assert any("redis-server" in p.name() for p in family)
    # When run-local is SIGKILLed, as the OOM killer does
    proc.kill()
    proc.wait()
    # Then the workers, their tasks and the server end within the grace period and a margin
    _gone, alive = psutil.wait_procs(family, timeout=15)
    for leftover in alive:
        leftover.kill()
    assert not alive, [_cmdline(p) for p in alive]


def test_run_local_with_metrics_serves_the_queue_while_it_runs_and_stops_the_exporter(tmp_path):
    # Given run-local asked for metrics, on tasks that wait until the test lets them end
    write_tasks(tmp_path / "t.txt", 3)
    release = tmp_path / "release"
    proc = subprocess.Popen(
        [*WORKQUEUE, "run-local", "--tasks", str(tmp_path / "t.txt"), "--parallelism", "1",
         "--metrics", "--", "sh", "-c", f"while [ ! -e {release} ]; do sleep 0.1; done"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # When it prints where the metrics are
        line = ""
        while "metrics are at" not in line:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
        url = line.rsplit(" ", 1)[1].strip()
        # Then they are the queue's: three tasks in the run, once seeded
        deadline = time.monotonic() + 30
        samples: dict = {}
        while samples.get("workqueue_seeded_tasks") != 3.0 and time.monotonic() < deadline:
            with urllib.request.urlopen(url, timeout=10) as answer:
                samples = {sample.name: sample.value for family in
                           text_string_to_metric_families(answer.read().decode())
                           for sample in family.samples}
            time.sleep(0.2)
        assert samples.get("workqueue_seeded_tasks") == 3.0, samples
        exporter = [p for p in _descendants_and_redis(proc) if "exporter" in _cmdline(p)]
        assert len(exporter) == 1
        # And once the run ends, so does the exporter
        release.touch()
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        _gone, alive = psutil.wait_procs(exporter, timeout=10)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
