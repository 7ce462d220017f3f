"""Real broker servers for the tests, one per version: Debian bookworm's on this machine (Redis
7.0, RabbitMQ 3.10) and Debian trixie's in the root `make setup` builds (Redis 8.0, RabbitMQ
4.0.5, the version the chart ships), each on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pika
import pika.exceptions
import redis

from workqueue.local import LocalRedis, free_port, wait_for_port

BOOT_TIMEOUT = 90.0
"""RabbitMQ boots in ~5 s here; a loaded CI machine gets room."""
TRIXIE_ROOT = Path(__file__).resolve().parents[1] / ".tools" / "trixie"
"""Debian trixie, built by `make setup` (scripts/setup.sh) with debootstrap."""


READY_PROBE = "wq-test-ready"
"""The queues a node's readiness check declares, one pair per node (a cluster's start in
parallel), and deletes once it has seen a message move."""


def node_name() -> str:
    """A node name of this test process's own: epmd is shared by every process and root."""
    return f"wqtest{os.getpid()}{secrets.token_hex(2)}@localhost"


def _dead_letter_round_trip(channel, deadline: float, node: str) -> bool:
    """Publish a message with a short TTL to a quorum queue that dead-letters at least once to
    another, as the runtime's waiting rooms do; True once it has arrived there."""
    waiting, arrived = f"{READY_PROBE}.{node}.wait", f"{READY_PROBE}.{node}.arrived"
    channel.queue_declare(arrived, durable=True, arguments={"x-queue-type": "quorum"})
    channel.queue_declare(waiting, durable=True, arguments={
        "x-queue-type": "quorum", "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": arrived, "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish"})
    channel.basic_publish("", waiting, b"ready?", pika.BasicProperties(expiration="50"))
    while time.monotonic() < deadline:
        method, _props, _body = channel.basic_get(arrived, auto_ack=True)
        if method is not None:
            channel.queue_delete(waiting)
            channel.queue_delete(arrived)
            return True
        time.sleep(0.05)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def in_root(root: Path | None, argv: list[str]) -> list[str]:
    """``argv`` run inside ``root`` with /proc mounted there, in a mount namespace of its own
    so that the mount ends with the process; as it is when ``root`` is None."""
    if root is None:
        return argv
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind /proc "$0/proc" && exec chroot "$0" "$@"', str(root), *argv]


def inner(root: Path | None, path: Path) -> Path:
    """``path`` as a process inside ``root`` sees it."""
    return path if root is None else Path("/") / path.relative_to(root)


def _account(root: Path | None, user: str) -> tuple[int, int]:
    """uid and gid of ``user`` in the root's /etc/passwd (or this machine's)."""
    passwd = (root or Path("/")) / "etc" / "passwd"
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise FileNotFoundError(f"no user {user} in {passwd}; run `make setup`")


def _require(root: Path | None, binary: str) -> str:
    if root is None:
        found = shutil.which(binary, path=os.environ["PATH"] + ":/usr/sbin:/sbin")
        if found is None:
            raise FileNotFoundError(f"{binary} not found; run `make setup` to install it")
        return found
    path = Path("/usr/sbin" if binary == "rabbitmq-server" else "/usr/bin") / binary
    if not (root / path.relative_to("/")).exists():
        raise FileNotFoundError(f"{root} has no {binary}; run `make setup` to build it")
    return str(path)


class RootRedis(LocalRedis):
    """LocalRedis whose server runs inside a Debian root (None: this machine's)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        binary = _require(root, "redis-server")
        workdir = None if root is None else tempfile.mkdtemp(prefix="wq-redis-", dir=root / "tmp")
        super().__init__(workdir)
        self.binary = binary

    def server_argv(self, folder: Path) -> list[str]:
        return in_root(self.root, super().server_argv(inner(self.root, folder)))

    def restart(self, wipe: bool = False) -> None:
        """Stop and start again; ``wipe`` first deletes its data (AOF), as a broker pod on an
        emptyDir comes back."""
        self.stop()
        if wipe:
            for path in self.dir.iterdir():
                if path.name != "redis.conf":
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        self.start()

    def close_connections(self) -> None:
        """Close every client connection, as a dropped link does (CLIENT KILL)."""
        client = redis.Redis(port=self.port, password=self.password)
        try:
            client.client_kill_filter(_type="normal", skipme=True)
        finally:
            client.close()

    def cleanup(self) -> None:
        super().cleanup()
        if self.root is not None:
            shutil.rmtree(self.dir, ignore_errors=True)


class RabbitNode:
    """One rabbitmq-server node with its own name, ports, data dir and a generated password,
    inside a Debian root (None: this machine's)."""

    user = "wq"

    def __init__(self, extra_conf: str = "", root: Path | None = None, name: str | None = None,
                 password: str | None = None) -> None:
        self.root = root
        self.binary = _require(root, "rabbitmq-server")
        self.dir = Path(tempfile.mkdtemp(prefix="wq-rabbit-",
                                         dir=None if root is None else root / "tmp"))
        self.port, self.dist_port = free_port(), free_port()
        self.name = name or node_name()
        self.password = password or secrets.token_hex(12)
        self.process: subprocess.Popen[bytes] | None = None
        self.boots = 0
        self.boots_checked = 1  # a first boot has no queues to recover, so nothing to trip
        for sub in ("mnesia", "log"):
            (self.dir / sub).mkdir()
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"default_user = {self.user}\ndefault_pass = {self.password}\n"
            "loopback_users = none\n" + extra_conf)
        if os.geteuid() == 0:
            # Started as root, rabbitmq-server drops to the rabbitmq user, which must own these.
            uid, gid = _account(root, "rabbitmq")
            for path in [self.dir, *self.dir.rglob("*")]:
                os.chown(path, uid, gid)

    @property
    def url(self) -> str:
        return f"amqp://{self.user}@127.0.0.1:{self.port}/%2F"

    def start(self) -> RabbitNode:
        here = inner(self.root, self.dir)
        env = {**os.environ, "RABBITMQ_NODENAME": self.name,
               "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
               "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
               "RABBITMQ_MNESIA_BASE": str(here / "mnesia"),
               "RABBITMQ_PID_FILE": str(here / "mnesia" / "node.pid"),
               "RABBITMQ_LOG_BASE": str(here / "log"),
               "RABBITMQ_CONFIG_FILE": str(here / "rabbitmq"),
               "RABBITMQ_ENABLED_PLUGINS_FILE": str(here / "enabled_plugins")}
        self.process = subprocess.Popen(in_root(self.root, [self.binary]), env=env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_for_port(self.process, self.port, BOOT_TIMEOUT,
                      f"rabbitmq-server (logs: {self.dir}/log)")
        self._wait_until_ready()
        self.boots += 1
        return self

    def _wait_until_ready(self) -> None:
        """Wait until the node does what the tests need of it: a connection, a channel, and a
        quorum queue whose message's TTL runs out and is dead-lettered (at least once) to
        another. After a hard stop it listens before its vhost has recovered its queues, and
        answers 541 INTERNAL_ERROR meanwhile (seen in a full run: every later test on that
        node then failed at setup); tests bounded by a lease then ran right after a restart in
        a parallel run, so readiness includes the lease's path (brokers/rabbitmq/broker.py)."""
        credentials = pika.PlainCredentials(self.user, self.password)
        params = pika.ConnectionParameters("127.0.0.1", self.port, credentials=credentials,
                                           connection_attempts=1, socket_timeout=5)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            try:
                connection = pika.BlockingConnection(params)
                try:
                    if _dead_letter_round_trip(connection.channel(), deadline, self.name):
                        return
                finally:
                    if connection.is_open:
                        connection.close()
            except pika.exceptions.AMQPError as exc:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"rabbitmq-server was not ready within {BOOT_TIMEOUT:.0f}s "
                        f"({exc!r}; logs: {self.dir}/log)") from exc
            if time.monotonic() > deadline:
                raise TimeoutError(f"rabbitmq-server did not dead-letter an expired message "
                                   f"within {BOOT_TIMEOUT:.0f}s (logs: {self.dir}/log)")
            time.sleep(0.2)

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
        # A node started again before epmd has dropped the old one's name exits at once as
        # "already running" (seen in CI after a hard stop).
        deadline = time.monotonic() + 30
        while self._registered() and time.monotonic() < deadline:
            time.sleep(0.1)

    def _registered(self) -> bool:
        """Whether the host's epmd (the chroot's nodes use it too) still lists this node."""
        names = subprocess.run(["epmd", "-names"], capture_output=True, text=True).stdout
        return f"name {self.name.split('@')[0]} at port" in names

    def restart(self, wipe: bool = False) -> None:
        """Stop and start the node; ``wipe`` first deletes its data, as a broker pod on an
        emptyDir comes back (the user is made again from rabbitmq.conf)."""
        self.stop()
        if wipe:
            shutil.rmtree(self.dir / "mnesia")
            (self.dir / "mnesia").mkdir()
            if os.geteuid() == 0:
                os.chown(self.dir / "mnesia", *_account(self.root, "rabbitmq"))
        self.start()

    def close_connections(self) -> None:
        """Close every client connection, as a broker restart or a dropped link does, without
        stopping the node."""
        self.ctl("close_all_connections 'test: connection reset'")

    def ctl(self, arguments: str) -> str:
        """rabbitmqctl's output for ``arguments`` on this node, run as the rabbitmq user, whose
        Erlang cookie it needs (the nodes of one root share it)."""
        command = f"{Path(self.binary).parent / 'rabbitmqctl'} -q -n {self.name} {arguments}"
        return subprocess.run(
            in_root(self.root, ["su", "rabbitmq", "-s", "/bin/sh", "-c", command]),
            check=True, capture_output=True, text=True, timeout=60).stdout

    def dead_lettering_runs(self) -> bool:
        """Whether the node's supervisor of quorum-queue dead-letter workers is up. A queue
        deleted while its worker registers (right after a restart, as its leader is elected)
        crash-loops the worker until that supervisor gives up for good (rabbitmq-server#16652,
        3.10 and 4.0): from then on every at-least-once queue declared answers 541 and exists
        without moving a message, so a run whose tasks wait in a waiting room never ends."""
        return self.ctl("eval 'whereis(rabbit_fifo_dlx_sup).'").strip() != "undefined"

    def stop_dead_lettering(self) -> None:
        """Stop the node's dead-letter supervisor for good, as reaching its restart intensity
        does (rabbitmq-server#16652)."""
        self.ctl("eval 'supervisor:terminate_child(rabbit_sup, rabbit_fifo_dlx_sup).'")

    def heal(self) -> bool:
        """After a restart, restart the node again if it has lost its dead-letter supervisor
        since (dead_lettering_runs); returns whether it did. Only restarts are checked: the
        check takes a second, and they are what trips it here."""
        if self.boots_checked == self.boots:
            return False
        self.boots_checked = self.boots
        if self.dead_lettering_runs():
            return False
        self.restart()
        self.boots_checked = self.boots
        return True

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RabbitCluster:
    """``size`` RabbitMQ nodes of one root that form one cluster as the chart's StatefulSet
    does: classic config peer discovery, listing every node (the shared Erlang cookie is the
    root's rabbitmq user's), all started at once (podManagementPolicy: Parallel). RabbitMQ 4.0
    waits for its peers at a first boot: a node started alone never opened its port."""

    def __init__(self, size: int, root: Path | None = None, extra_conf: str = "") -> None:
        names = [node_name() for _ in range(size)]
        discovery = "cluster_formation.peer_discovery_backend = classic_config\n" + "".join(
            f"cluster_formation.classic_config.nodes.{i} = {name}\n"
            for i, name in enumerate(names, start=1))
        # One password: a node that joins takes the cluster's users, not its own config's.
        password = secrets.token_hex(12)
        self.nodes = [RabbitNode(discovery + extra_conf, root, name, password)
                      for name in names]

    def start(self) -> RabbitCluster:
        try:
            with ThreadPoolExecutor(len(self.nodes)) as pool:
                list(pool.map(RabbitNode.start, self.nodes))
            members = self.nodes[0].ctl("cluster_status --formatter json")
            missing = [node.name for node in self.nodes if node.name not in members]
            if missing:
                raise RuntimeError(f"nodes {missing} did not join the cluster "
                                   f"(logs: {[str(node.dir / 'log') for node in self.nodes]})")
        except BaseException:
            self.cleanup()
            raise
        return self

    @property
    def password(self) -> str:
        return self.nodes[0].password

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def leader_of(self, queue: str) -> RabbitNode:
        """The node that leads quorum queue ``queue`` now."""
        for row in json.loads(self.running()[0].ctl("list_queues name leader --formatter json")):
            if row["name"] == queue:
                return next(node for node in self.nodes if node.name == row["leader"])
        raise LookupError(f"no quorum queue {queue!r} in the cluster")

    def queues(self) -> str:
        """Each queue's ready and unacknowledged messages and leader, for a failure message."""
        return self.running()[0].ctl("list_queues name messages_ready messages_unacknowledged "
                                     "leader")

    def running(self) -> list[RabbitNode]:
        return [node for node in self.nodes if node._node_pid() is not None]

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
