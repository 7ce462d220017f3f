"""Redis broker: every queue move is one Lua script (lua/*.lua), so each is atomic."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import resources
from typing import TypeVar
from urllib.parse import urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..broker import (
    Broker,
    Consumer,
    DeadItem,
    Delivery,
    Fetch,
    Outcome,
    SeedState,
    Status,
    record_text,
)
from ..defaults import CONNECT_TIMEOUT_SECONDS, HEARTBEAT_FRACTION, OUTAGE_SECONDS
from ..errors import (
    BrokerAuthError,
    BrokerFull,
    ConfigError,
    OtherRun,
    SeedConflict,
    StateLost,
    WorkqueueError,
    lost_state_message,
    other_run_message,
)
from ..message import ITEM_ID_FORMAT, Item
from ..report import TaskRecord
from .outage import Outage, retry_until, unreachable_fix

log = logging.getLogger(__name__)
T = TypeVar("T")

_LUA = resources.files(__package__) / "lua"
_PRELUDE = (_LUA / "common.lua").read_text()
_SCRIPTS = ("enqueue", "fetch", "ack", "nack", "release", "extend", "retry_dead")
_KEY_NAMES = ("state", "pending", "leases", "owners", "attempts", "items", "errors", "dead",
              "refused", "delayed", "report", "suspects", "alone")


def _queue_keys(queue: str) -> list[str]:
    return [f"wq:{{{queue}}}:{name}" for name in _KEY_NAMES]


def _server_name(url: str) -> str:
    parts = urlsplit(url)
    return f"redis at {parts.hostname}:{parts.port or 6379}"


class RedisBroker(Broker):
    """A queue kept in the keys lua/common.lua lists, sharing the hash tag ``{queue}``."""

    def __init__(self, url: str, queue: str, password: str | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
                 outage_seconds: float = OUTAGE_SECONDS) -> None:
        self.queue = queue
        self.server = _server_name(url)
        self.outage_seconds = outage_seconds
        self.password_given = bool(password)
        self.tls = urlsplit(url).scheme == "rediss"
        # A TLS client facing a plaintext server waits for a handshake that never comes: the
        # socket timeout bounds that, and no call of ours should take half a minute anyway.
        self.client = redis.Redis.from_url(
            url, password=password or None, decode_responses=True, socket_connect_timeout=5,
            socket_timeout=min(30.0, connect_timeout), health_check_interval=15,
            # No retry of the client's own: `call` rides out every outage, however short, and
            # logs it (a broker restart was silent in the workers' logs otherwise).
            retry=Retry(NoBackoff(), 0),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            redis_connect_func=self._on_connect,
        )
        self._server_run: str | None = None
        self.keys = _queue_keys(queue)
        self._key = dict(zip(_KEY_NAMES, self.keys, strict=True))
        self._scripts = {
            name: self.client.register_script(_PRELUDE + (_LUA / f"{name}.lua").read_text())
            for name in _SCRIPTS
        }
        tls_fix = ("with rediss://, check that the server speaks TLS; else that the broker is "
                   "running and this pod may reach it")
        retry_until(self._ping, connect_timeout, self.server, transient=(redis.TimeoutError,),
                    fix=tls_fix if self.tls else None)

    def _on_connect(self, connection: redis.Connection) -> None:
        """Each new connection (redis-py makes one again, silently, when the server closed the
        last): a server that restarted between two commands has a new run id, and that is
        logged, so that no broker restart goes unseen."""
        connection.on_connect()
        connection.send_command("INFO", "server", check_health=False)
        info = dict(line.split(":", 1) for line in connection.read_response().splitlines()
                    if ":" in line)
        run, uptime = info.get("run_id"), info.get("uptime_in_seconds", "?")
        if self._server_run is not None and run != self._server_run:
            log.warning("%s restarted %ss ago: workers carry on with the queue as it kept it "
                        "(AOF); a lease that expired meanwhile runs its task again", self.server,
                        uptime)
        self._server_run = run

    def _ping(self) -> None:
        wants_password = BrokerAuthError(
            f"{self.server} wants a password: set WORKQUEUE_BROKER_PASSWORD or "
            "WORKQUEUE_BROKER_PASSWORD_FILE")
        try:
            self.client.ping()
        except redis.AuthenticationError as exc:
            if not self.password_given:
                raise wants_password from exc
            raise BrokerAuthError(
                f"{self.server} refused the password: check WORKQUEUE_BROKER_PASSWORD(_FILE) "
                "(in the chart, the broker Secret)"
            ) from exc
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise wants_password from exc
            if "DB index is out of range" in str(exc):
                db = self.client.connection_pool.connection_kwargs.get("db")
                raise ConfigError(
                    f"{self.server} has no database {db}: use one below its `databases` "
                    "setting (16 by default), e.g. redis://HOST:6379/0"
                ) from exc
            raise

    def call(self, action: Callable[[], T]) -> T:
        """Run ``action`` against the server, riding out an outage of up to
        ``outage_seconds`` (a broker pod rescheduled), and turn the server's refusals into
        errors that say what to do."""
        outage: Outage | None = None
        while True:
            try:
                result = action()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # BusyLoadingError (a restarted server replaying its AOF) is a ConnectionError.
                if outage is None:
                    outage = Outage(self.server, self.outage_seconds, unreachable_fix(self.server))
                outage.wait(exc)
                continue
            except redis.ResponseError as exc:
                refusal = self._refusal(exc)
                if refusal is None:
                    raise
                raise refusal from exc
            if outage is not None:
                outage.ended()
            return result

    def _refusal(self, exc: redis.ResponseError) -> WorkqueueError | None:
        text = str(exc)
        if "NOSTATE" in text:
            return StateLost(lost_state_message(self.queue, self.server))
        if isinstance(exc, redis.exceptions.OutOfMemoryError):
            return BrokerFull(
                f"{self.server} is out of memory (maxmemory) and refused the write: raise "
                "broker.redis.resources.limits.memory, or seed fewer or smaller tasks")
        return None

    def run(self, script: str, *args: object) -> object:
        """Run one of the Lua scripts with the queue's keys."""
        return self.call(lambda: self._scripts[script](keys=self.keys, args=list(args)))

    def seed_state(self) -> SeedState:
        raw = self.call(lambda: self.client.hgetall(self._key["state"]))
        return SeedState(
            cursor=int(raw.get("cursor", 0)),
            fingerprint=raw.get("fingerprint"),
            total=int(raw["total"]) if "total" in raw else None,
            complete=raw.get("complete") == "1",
            run=raw.get("run"),
        )

    def seed_batch(self, state: SeedState, payloads: Sequence[str]) -> SeedState:
        args = (state.cursor, state.fingerprint, state.total, state.run or "",
                json.dumps(payloads, ensure_ascii=False), ITEM_ID_FORMAT)
        try:
            cursor = int(self.run("enqueue", *args))
        except redis.ResponseError as exc:
            if "SEEDCONFLICT" in str(exc):
                raise SeedConflict(
                    f"queue {self.queue!r} was already seeded from a different task list: use a "
                    "new release name (or `workqueue purge`) to run a different list"
                ) from exc
            if "SEEDCURSOR" not in str(exc):
                raise
            raise WorkqueueError(
                f"another seeder is writing queue {self.queue!r} ({exc}); run one seeder at a time"
            ) from exc
        return SeedState(cursor, state.fingerprint, state.total, complete=False, run=state.run)

    def mark_seeded(self, state: SeedState) -> SeedState:
        def mark() -> None:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self._key["state"], "complete", "1")
                pipe.hsetnx(self._key["state"], "seeded_at", f"{time.time():.3f}")
                pipe.execute()

        self.call(mark)
        return SeedState(state.cursor, state.fingerprint, state.total, complete=True,
                         run=state.run)

    def consumer(self, worker_id: str, prefetch: int, lease_seconds: float,
                 max_attempts: int, run_id: str | None = None) -> Consumer:
        return _RedisConsumer(self, worker_id, lease_seconds, max_attempts, run_id)

    def status(self) -> Status:
        k = self._key

        def read() -> list:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hgetall(k["state"]).llen(k["pending"]).zcard(k["leases"])
                pipe.hlen(k["dead"]).zcard(k["delayed"])
                return pipe.execute()

        state, pending, leased, dead, delayed = self.call(read)
        return Status(
            seeded=state.get("complete") == "1",
            total=int(state["total"]) if "total" in state else None,
            pending=pending + delayed, leased=leased, done=int(state.get("done", 0)), dead=dead,
            retried=int(state.get("retried", 0)), delayed=delayed, run=state.get("run"),
            exists=bool(state),
            seeded_at=float(state["seeded_at"]) if "seeded_at" in state else None,
        )

    def waiting(self) -> int:
        def read() -> list[int]:
            with self.client.pipeline(transaction=True) as pipe:
                return pipe.llen(self._key["pending"]).zcard(self._key["delayed"]).execute()

        return sum(self.call(read))

    def dead_items(self, limit: int) -> list[DeadItem]:
        def read() -> list[DeadItem]:
            found = []
            for item, raw in self.client.hscan_iter(self._key["dead"], count=max(limit, 100)):
                entry = json.loads(raw)
                found.append(DeadItem(item, entry["payload"], int(entry["attempts"]),
                                      entry["error"]))
            return found

        return sorted(self.call(read), key=lambda d: d.id)[:limit]

    def records(self) -> Iterator[TaskRecord]:
        for task_id, raw in self.client.hscan_iter(self._key["report"], count=1000):
            yield TaskRecord.decode(task_id, raw)

    def record_sample(self, size: int) -> list[TaskRecord]:
        flat = self.call(lambda: self.client.hrandfield(self._key["report"], size,
                                                        withvalues=True))
        return [TaskRecord.decode(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def purge(self) -> None:
        self.call(lambda: self.client.delete(*self.keys))

    def retry_dead(self, round_number: int = 0) -> int | None:
        moved = int(self.run("retry_dead", round_number))
        return None if moved < 0 else moved

    def retry_round(self) -> int:
        return int(self.call(lambda: self.client.hget(self._key["state"], "retry_round")) or 0)

    def set_seed_refusal(self, reason: str | None) -> None:
        key = self._key["refused"]
        self.call(lambda: self.client.set(key, reason) if reason else self.client.delete(key))

    def seed_refusal(self) -> str | None:
        return self.call(lambda: self.client.get(self._key["refused"]))

    def replace_previous(self, family: str) -> str | None:
        # Delete before recording: a seeder killed in between finds the same pointer again
        # and deletes nothing twice, so no run's state is ever left unrecorded.
        pointer = f"wq:{{{family}}}:current"
        previous = self.call(lambda: self.client.get(pointer))
        if previous == self.queue:
            return None
        if previous:
            self.call(lambda: self.client.delete(*_queue_keys(previous)))
        self.call(lambda: self.client.set(pointer, self.queue))
        return previous

    def close(self) -> None:
        self.client.close()


class _RedisConsumer(Consumer):
    def __init__(self, broker: RedisBroker, worker_id: str, lease_seconds: float,
                 max_attempts: int, run_id: str | None) -> None:
        self.broker = broker
        self.worker = worker_id
        self.lease_ms = int(lease_seconds * 1000)
        self.max_attempts = max_attempts
        self.run_id = run_id
        self.keep_alive_seconds = lease_seconds / HEARTBEAT_FRACTION
        self.saw_state = False

    def fetch(self, count: int) -> Fetch:
        return self.ack_and_fetch((), count)[1]

    def ack_and_fetch(self, done: Sequence[Delivery],
                      count: int) -> tuple[list[Outcome], Fetch]:
        acked, kind, *rest = self.broker.run("fetch", self.worker, count, self.lease_ms,
                                             self.max_attempts, self.run_id or "",
                                             *_done_pairs(done))
        if kind == "nostate":
            if self.saw_state:
                raise StateLost(lost_state_message(self.broker.queue, self.broker.server))
            return [], Fetch(seeded=False)
        if kind == "otherrun":
            raise OtherRun(other_run_message(self.broker.queue, rest[0], self.run_id or ""))
        self.saw_state = True
        outcomes = [Outcome.DONE if ok else Outcome.LOST for ok in acked]
        if kind == "drained":
            return outcomes, Fetch(drained=True)
        if kind == "empty":
            return outcomes, Fetch(seeded=rest[0] == 1)
        flat = rest[0]
        return outcomes, Fetch([
            Delivery(Item(flat[i], flat[i + 1], int(flat[i + 2])))
            for i in range(0, len(flat), 3)
        ])

    def ack(self, delivery: Delivery) -> Outcome:
        return self.ack_many([delivery])[0]

    def ack_many(self, deliveries: Sequence[Delivery]) -> list[Outcome]:
        if not deliveries:
            return []
        done = self.broker.run("ack", self.worker, *_done_pairs(deliveries))
        return [Outcome.DONE if ok else Outcome.LOST for ok in done]

    def fail(self, delivery: Delivery, error: str, max_attempts: int,
             retry_delay: float = 0.0) -> Outcome:
        return Outcome(self.broker.run("nack", self.worker, max_attempts, delivery.item.id, error,
                                       int(retry_delay * 1000), record_text(delivery, "dead")))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self.broker.run("release", self.worker, *(d.item.id for d in deliveries))

    def keep_alive(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            lost = self.broker.run("extend", self.worker, self.lease_ms,
                                   *(d.item.id for d in deliveries))
            for item in lost:
                log.warning("lease on item %s was lost; another worker may run it too", item)

    def stop(self) -> None:
        """Nothing to do: items are leased only when fetched."""

    def close(self) -> None:
        """The broker owns the connection; leases left behind expire on their own."""


def _done_pairs(deliveries: Sequence[Delivery]) -> list[str]:
    """id, record, id, record, ... as ack.lua and fetch.lua take them."""
    return [text for d in deliveries for text in (d.item.id, record_text(d, "done"))]
