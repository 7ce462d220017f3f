"""Running a whole job on this machine: a private redis-server, the real seeder, and N worker
processes started, restarted and counted the way a Kubernetes Job would."""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import defaults, tethered
from .broker import Broker
from .brokers import connect
from .errors import (
    EXIT_DEAD,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STOPPED,
    ConfigError,
    WorkqueueError,
)
from .progress import dead_report, plural, status_line, verdict
from .taskfile import source_files

CLI = [sys.executable, "-m", "workqueue"]
"""The workqueue command, run with this interpreter."""
STOP_MARGIN_SECONDS = 10.0
"""After the grace period, how long a stopped worker has to give its leases back."""
BACKOFF_LIMIT = 6
"""Failed worker processes replaced before run-local gives up, as a Job's backoffLimit."""


LISTEN_PORTS_FROM = 15000
"""Lowest port a private server is given; they are drawn from here up to the kernel's
ephemeral range."""
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago, below the kernel's ephemeral range:
    a port from that range can be taken as the local end of any outgoing connection while its
    server restarts, and the server then cannot listen again (a RabbitMQ node restarted
    mid-test exited at start that way while another test process made connections)."""
    pick, below = random.SystemRandom(), _ephemeral_start()
    for _ in range(100):
        port = pick.randrange(LISTEN_PORTS_FROM, below)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def wait_for_port(process: subprocess.Popen[bytes], port: int, timeout: float, what: str) -> None:
    """Wait until ``process`` listens on loopback ``port``; ``what`` names it in errors."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise WorkqueueError(f"{what} exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise WorkqueueError(f"{what} did not listen on port {port} within {timeout:.0f}s")


class LocalRedis:
    """A private redis-server on a free loopback port, with a random password and AOF on."""

    def __init__(self, workdir: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError("redis-server not found: install it (apt-get install "
                              "redis-server, brew install redis) or pass --broker-url")
        self.binary = binary
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="workqueue-redis-")
        self.dir = Path(workdir or self._tmp.name)  # type: ignore[union-attr]
        self.port = free_port()
        self.password = secrets.token_hex(16)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL without the password (pass ``password`` separately)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> LocalRedis:
        """Start the server and wait until it answers."""
        # The password goes in a file, not on the command line where `ps` would show it.
        (self.dir / "redis.conf").write_text(f"requirepass {self.password}\n")
        self.process = subprocess.Popen(self.server_argv(self.dir), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, **tethered.popen_options())
        wait_for_port(self.process, self.port, 20, f"redis-server (log: {self.dir}/redis.log)")
        return self

    def server_argv(self, folder: Path) -> list[str]:
        """The server's command line, its files in ``folder`` as the server sees it."""
        return [self.binary, str(folder / "redis.conf"), "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes",
                "--save", "", "--protected-mode", "yes", "--logfile", str(folder / "redis.log")]

    def stop(self) -> None:
        """Stop the server (SIGTERM, so AOF is flushed) and wait for it."""
        if self.process and self.process.poll() is None:
            stop_process(self.process)

    def restart(self) -> None:
        """Stop and start again on the same port and data (AOF), as after a broker restart."""
        self.stop()
        self.start()

    def kill(self) -> None:
        """Stop the server abruptly, as a crash would."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def cleanup(self) -> None:
        """Stop the server and remove its data."""
        self.stop()
        if self._tmp:
            self._tmp.cleanup()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@dataclass(frozen=True)
class LocalRun:
    """What run-local was asked to do."""

    tasks: str
    command: Sequence[str]
    parallelism: int
    mode: str
    queue: str
    worker_args: Sequence[str]
    fail_on_dead: bool
    grace_seconds: float = defaults.GRACE_SECONDS
    verbose: bool = False
    metrics: bool = False
    """Serve the queue's metrics (`workqueue exporter`) on a free loopback port meanwhile."""


class _Interrupted(Exception):
    """Ctrl-C or SIGTERM reached run-local: stop every worker."""


class _Signals:
    """Ctrl-C and SIGTERM, recorded when they come and acted on where run-local waits.

    Raised where they come (as KeyboardInterrupt is), they could land between Popen.poll()
    taking its lock and the try that releases it; every later wait for that worker then
    blocks for good, and run-local hangs instead of stopping."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _Signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def _record(self, signum: int, _frame: object) -> None:
        self.received = signum

    def check(self) -> None:
        if self.received is not None:
            raise _Interrupted

    def wait_for(self, proc: subprocess.Popen[bytes]) -> int:
        """``proc``'s exit code; on a signal meanwhile, it is stopped first."""
        while (code := proc.poll()) is None:
            if self.received is not None:
                proc.terminate()
                proc.wait()
                raise _Interrupted
            time.sleep(0.1)
        return code


def run_local(run: LocalRun, broker_url: str | None, password: str | None) -> int:
    """Seed and drain ``run.tasks`` with worker processes; returns the exit code.

    Ctrl-C or SIGTERM stops it cleanly: each worker gets SIGTERM and gives its unstarted tasks
    back (none is left leased), and the private redis-server and its folder are removed."""
    if run.tasks != "-":
        source_files(run.tasks)
    job: _LocalJob | None = None
    local: LocalRedis | None = None
    exporter: subprocess.Popen[bytes] | None = None
    with _Signals() as signals:
        try:
            local = None if broker_url else LocalRedis().start()
            if local:
                print(f"run-local: started a private redis-server on 127.0.0.1:{local.port}")
                broker_url, password = local.url, local.password
            # Several workers here: one metrics port each would be needed, so none serves.
            env = {**{k: v for k, v in os.environ.items() if k != "WORKQUEUE_METRICS_PORT"},
                   "WORKQUEUE_BROKER_URL": broker_url,
                   "WORKQUEUE_QUEUE": run.queue, "WORKQUEUE_BROKER_PASSWORD": password or "",
                   "WORKQUEUE_LOG_LEVEL": "INFO" if run.verbose else "WARNING"}
            if run.metrics:
                exporter = _start_exporter(env)
            worker = [*CLI, "work", "--mode", run.mode, *run.worker_args, "--", *run.command]
            job = _LocalJob(worker, env, run.parallelism, completions=None, signals=signals,
                            grace_seconds=run.grace_seconds)
            return _run(run, job, password, hint=local is None)
        except _Interrupted:
            stopped = job.stop_all() if job else _Stopped()
            print(f"run-local: interrupted; {stopped.summary(private=local is not None)}",
                  file=sys.stderr)
            return EXIT_INTERRUPTED if signals.received == signal.SIGINT else EXIT_STOPPED
        finally:
            if exporter:
                stop_process(exporter)
            if local:
                local.cleanup()


def _start_exporter(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`workqueue exporter` for the run's queue on a free loopback port; prints its URL."""
    port = free_port()
    exporter = subprocess.Popen(
        [*CLI, "exporter", "--address", "127.0.0.1", "--port", str(port), "--report-every",
         "5"], env={**env, "WORKQUEUE_LOG_LEVEL": "WARNING"}, **tethered.popen_options())
    try:
        wait_for_port(exporter, port, 30, "workqueue exporter")
    except WorkqueueError:
        stop_process(exporter)
        raise
    print(f"run-local: the queue's metrics are at http://127.0.0.1:{port}/metrics", flush=True)
    return exporter


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if it has not ended 10 s later."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _run(run: LocalRun, job: _LocalJob, password: str | None, hint: bool) -> int:
    """Seed, then run the workers to the end and print the verdict."""
    seeder = subprocess.Popen([*CLI, "seed", "--tasks", run.tasks], env={
        **job.env, "WORKQUEUE_LOG_LEVEL": "INFO"})
    seeded = job.signals.wait_for(seeder)
    if seeded != 0:
        return seeded
    broker = connect(job.env["WORKQUEUE_BROKER_URL"], run.queue, password, connect_timeout=30)
    try:
        if run.mode == "coarse":
            job.completions = broker.status().total
        code = job.run(lambda: print(_progress(broker), flush=True))
        status = broker.status()
        print(f"run-local: {verdict(status, hint=hint)}")
        if status.dead:
            print(dead_report(broker.dead_items(20)))
        if code == EXIT_OK and status.drained and status.dead and run.fail_on_dead:
            return EXIT_DEAD
        return code
    finally:
        broker.close()


def _progress(broker: Broker) -> str:
    return "run-local: " + status_line(broker.status())


class _LocalJob:
    """Keeps ``parallelism`` worker processes running the way the Job controller does."""

    def __init__(self, argv: list[str], env: dict[str, str], parallelism: int,
                 completions: int | None, signals: _Signals, grace_seconds: float) -> None:
        self.argv, self.env, self.signals = argv, env, signals
        self.grace_seconds = grace_seconds
        self.parallelism, self.completions = parallelism, completions
        self.running: list[subprocess.Popen[bytes]] = []
        self.succeeded = self.failed = 0

    def _want_more(self) -> bool:
        if self.completions is None:
            return self.succeeded == 0
        return self.succeeded + len(self.running) < self.completions

    def run(self, report: Callable[[], None], every: float = 2.0) -> int:
        """Run to the end; returns 0, the first worker's fatal exit code, or 3 (dead items)."""
        last = 0.0
        while True:
            while len(self.running) < self.parallelism and self._want_more():
                self.running.append(subprocess.Popen(self.argv, env=self.env,
                                                     **tethered.popen_options()))
            for proc in list(self.running):
                code = proc.poll()
                if code is None:
                    continue
                self.running.remove(proc)
                if code == EXIT_OK:
                    self.succeeded += 1
                elif code == EXIT_DEAD:
                    self.stop_all()
                    return EXIT_DEAD
                else:
                    self.failed += 1
                    if self.failed > BACKOFF_LIMIT:
                        print(f"run-local: {self.failed} worker processes failed (last exit "
                              f"code {code}); giving up")
                        self.stop_all()
                        return code
            if not self.running and not self._want_more():
                return EXIT_OK
            if time.monotonic() - last >= every:
                report()
                last = time.monotonic()
            self.signals.check()
            time.sleep(0.1)

    def stop_all(self) -> _Stopped:
        """SIGTERM every running worker at once and wait for them together: each has the grace
        period for its running task, a little more to give its leases back, then SIGKILL."""
        for proc in self.running:
            proc.terminate()
        deadline = time.monotonic() + self.grace_seconds + STOP_MARGIN_SECONDS
        while any(proc.poll() is None for proc in self.running) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopped = _Stopped()
        for proc in self.running:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                stopped.killed += 1
            elif proc.returncode in (EXIT_OK, EXIT_STOPPED):
                stopped.clean += 1
            else:
                stopped.failed += 1
        self.running = []
        return stopped


@dataclass
class _Stopped:
    """How the workers running at an interrupt ended."""

    clean: int = 0
    """Exited 143 (or 0): their running tasks ended or were given back, none left leased."""
    killed: int = 0
    """Still running past the grace period: SIGKILLed, their leases left to run out."""
    failed: int = 0
    """Exited with another code (a broker error, say): what they held is not known."""

    def summary(self, private: bool) -> str:
        """One line that says only what happened."""
        total = self.clean + self.killed + self.failed
        parts = [f"stopped {plural(total, 'worker')}" if total else "no worker was running"]
        if self.clean:
            parts.append(f"{self.clean} gave back what they had not finished")
        if self.killed:
            parts.append(f"{self.killed} did not stop within the grace period and were killed; "
                         "their tasks go back to the queue when their leases run out")
        if self.failed:
            parts.append(f"{self.failed} exited with an error (see above)")
        if private:
            parts.append("the private redis-server and its queue are removed")
        return "; ".join(parts)
