"""A private rabbitmq-server node for the tests (Redis comes from workqueue.local.LocalRedis)."""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from workqueue.local import free_port, wait_for_port

BOOT_TIMEOUT = 90.0
"""RabbitMQ boots in ~5 s here; a loaded CI machine gets room."""


def _server_binary() -> str | None:
    return shutil.which("rabbitmq-server", path=os.environ["PATH"] + ":/usr/sbin:/sbin")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class RabbitNode:
    """One rabbitmq-server node with its own name, ports, data dir and a generated password."""

    user = "wq"

    def __init__(self, extra_conf: str = "") -> None:
        binary = _server_binary()
        if binary is None:
            raise FileNotFoundError("rabbitmq-server not found; run `make setup` to install it")
        self.binary = binary
        self.dir = Path(tempfile.mkdtemp(prefix="wq-rabbit-"))
        self.port, self.dist_port = free_port(), free_port()
        self.name = f"wqtest{os.getpid()}{secrets.token_hex(2)}@localhost"
        self.password = secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None
        for sub in ("mnesia", "log"):
            (self.dir / sub).mkdir()
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"default_user = {self.user}\ndefault_pass = {self.password}\n"
            "loopback_users = none\n" + extra_conf)
        if os.geteuid() == 0:
            # Started as root, rabbitmq-server drops to the rabbitmq user, which must own these.
            account = pwd.getpwnam("rabbitmq")
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)

    @property
    def url(self) -> str:
        return f"amqp://{self.user}@127.0.0.1:{self.port}/%2F"

    def start(self) -> RabbitNode:
        env = {**os.environ, "RABBITMQ_NODENAME": self.name,
               "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
               "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
               "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
               "RABBITMQ_PID_FILE": str(self.pid_file),
               "RABBITMQ_LOG_BASE": str(self.dir / "log"),
               "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins")}
        self.process = subprocess.Popen([self.binary], env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for_port(self.process, self.port, BOOT_TIMEOUT,
                      f"rabbitmq-server (logs: {self.dir}/log)")
        return self

    @property
    def pid_file(self) -> Path:
        return self.dir / "mnesia" / "node.pid"

    def _node_pid(self) -> int | None:
        # `su` starts the Erlang VM in a session of its own, and the node name is only in its
        # environment, so the VM is found by the pid file it writes at boot.
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def stop(self, hard: bool = False) -> None:
        """Stop the node: SIGTERM shuts Erlang down cleanly; ``hard`` kills it like a crash."""
        # Taken once: the node deletes its pid file early in a clean shutdown, while it runs on.
        pid = self._node_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if hard else signal.SIGTERM)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process:
            # The wrapper script and `su` do not always exit with the VM.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
