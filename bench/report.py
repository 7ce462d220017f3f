"""Run every benchmark against one local Redis and one local RabbitMQ, print the ratio table."""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from workqueue import Runner, WorkerConfig, connect, defaults, seed
from workqueue.handlers import FunctionHandler

from . import baselines
from .measure import child, our_worker, parallel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from servers import TRIXIE_ROOT, RabbitCluster, RabbitNode, RootRedis  # noqa: E402  (the tests')

SERVERS = (("Redis 7.0", "redis", None), ("Redis 8.0", "redis", TRIXIE_ROOT),
           ("RabbitMQ 3.10", "rabbitmq", None), ("RabbitMQ 4.0", "rabbitmq", TRIXIE_ROOT))
"""Each broker at the version Debian bookworm has and at Debian trixie's (`make setup` builds
its root): the shipped RabbitMQ 4.0.5, and Redis 8.0 beside the shipped 7.4."""


DEFAULT_BATCH = (f"up to {defaults.BATCH_SIZE} items, about {defaults.BATCH_SECONDS:g} s of "
                 "work per lease")
"""What worker.batchSize and worker.batchSeconds lease by default."""


@dataclass(frozen=True)
class Sizes:
    redis_items: int
    rabbit_items: int
    seed_counts: tuple[int, ...]
    push_sample: int
    generator_counts: tuple[int, ...]
    runner_items: int
    batches: tuple[int, ...]
    report_items: int


# Large enough that connecting and the drain check at the end (fixed costs per worker) stay a
# small part of each run.
FULL = Sizes(50_000, 40_000, (100_000, 1_000_000), 100_000, (10_000, 100_000, 1_000_000), 1_000,
             (10, 100, 500), 100_000)
SMOKE = Sizes(300, 200, (2_000,), 2_000, (1_000, 10_000), 50, (10,), 1_000)


@dataclass
class Row:
    what: str
    ours: str
    baseline: str
    ratio: float | None = None
    target: float | None = None

    @property
    def verdict(self) -> str:
        if self.target is None or self.ratio is None:
            return ""
        return "met" if self.ratio >= self.target else "MISSED"

    def markdown(self) -> str:
        if self.ratio is None:
            ratio = ""
        else:
            ratio = f"{self.ratio:.1f}x" if self.ratio >= 0.1 else f"{self.ratio:.4f}x"
        target = f"≥ {self.target:g}x" if self.target is not None else ""
        return (f"| {self.what} | {self.ours} | {self.baseline} | {ratio} | {target} "
                f"| {self.verdict} |")


class Bench:
    def __init__(self, sizes: Sizes, servers: dict[str, RootRedis | RabbitNode]) -> None:
        self.sizes, self.servers = sizes, servers
        self.redis = servers[SERVERS[0][0]]
        self.rabbit = servers[SERVERS[2][0]]
        self.rows: list[Row] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="wq-bench-"))

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(row.markdown(), flush=True)

    def server(self, kind: str, label: str | None = None) -> tuple[str, str]:
        """(url, password) of ``label``'s server (a cluster: one URL per node), or of the
        bookworm one of ``kind``."""
        node = self.servers[label] if label else self.redis if kind == "redis" else self.rabbit
        if isinstance(node, RabbitCluster):
            return ",".join(node.urls), node.password
        return node.url, node.password

    def task_file(self, count: int) -> Path:
        path = self.tmp / f"tasks-{count}.txt"
        if not path.exists():
            # Written line by line: a big string here would swell this process, and children
            # forked from it report its peak RSS as theirs.
            with path.open("w") as out:
                for i in range(count):
                    out.write(f"s3://bucket/frames/{i:07d}.exr\n")
        return path

    def seeded_queue(self, kind: str, count: int, label: str | None = None) -> str:
        url, password = self.server(kind, label)
        queue = f"bench-{secrets.token_hex(4)}"
        broker = connect(url, queue, password)
        seed(broker, str(self.task_file(count)))
        broker.close()
        return queue

    def ours(self, kind: str, label: str, workers: int, batch: int | None, count: int) -> float:
        url, password = self.server(kind, label)
        queue = self.seeded_queue(kind, count, label)
        return count / parallel(our_worker, (url, password, queue, batch), workers)

    def fine_mode(self, label: str, kind: str) -> None:
        """At the chart's default (batch 1) and at the best batch, against the baseline."""
        count = self.sizes.redis_items if kind == "redis" else self.sizes.rabbit_items
        url, password = self.server(kind, label)
        name = "docs protocol" if kind == "redis" else "one get per item"
        # The issue's targets for the defaults: one round trip per item where the docs' take
        # five (Redis); a consumer with prefetch where the plainest takes one get each.
        default_target = 4 if kind == "redis" else 1.5
        for workers in (1, 2, 4):
            queue = f"bench-base-{secrets.token_hex(4)}"
            if kind == "redis":
                baselines.redis_fill(url, password, queue, count)
                base = count / parallel(baselines.redis_docs_worker, (url, password, queue),
                                        workers)
            else:
                baselines.rabbit_fill(url, password, queue, count)
                base = count / parallel(baselines.rabbit_get_worker, (url, password, queue),
                                        workers)
                baselines.rabbit_delete(url, password, queue)
            default = self.ours(kind, label, workers, None, count)
            best_batch, best = max(((b, self.ours(kind, label, workers, b, count))
                                    for b in self.sizes.batches), key=lambda pair: pair[1])
            four = workers == 4
            self.add(Row(f"{label} fine, {workers} workers, the defaults: {DEFAULT_BATCH} "
                         f"(vs {name})", f"{default:,.0f} items/s", f"{base:,.0f} items/s",
                         default / base, default_target if four else None))
            if four:
                # What a fixed batch of 1 (batchSize 1) costs; measured at 4 workers only.
                one = self.ours(kind, label, workers, 1, count)
                self.add(Row(f"{label} fine, {workers} workers, batch 1 (vs {name})",
                             f"{one:,.0f} items/s", f"{base:,.0f} items/s", one / base))
            self.add(Row(f"{label} fine, {workers} workers, batch {best_batch} (vs {name})",
                         f"{best:,.0f} items/s", f"{base:,.0f} items/s", best / base,
                         5 if four else None))

    def seeding(self) -> None:
        url, password = self.server("redis")
        sample = [f"s3://bucket/frames/{i:07d}.exr" for i in range(self.sizes.push_sample)]
        start = time.perf_counter()
        baselines.redis_push_per_item(url, password, f"bench-push-{secrets.token_hex(4)}", sample)
        per_task = (time.perf_counter() - start) / len(sample)
        env = {**os.environ, "WORKQUEUE_BROKER_URL": url, "WORKQUEUE_BROKER_PASSWORD": password}
        for count in self.sizes.seed_counts:
            env["WORKQUEUE_QUEUE"] = f"bench-seed-{secrets.token_hex(4)}"
            seconds, rss = child([sys.executable, "-m", "workqueue", "seed", "--tasks",
                                  str(self.task_file(count))], env)
            base = per_task * count
            note = "" if count <= len(sample) else f", from {len(sample):,}"
            self.add(Row(f"Redis seeding {count:,} tasks (vs one RPUSH per task{note})",
                         f"{seconds:.1f} s, peak {rss:.0f} MB", f"{base:.1f} s",
                         base / seconds, 20 if count >= 1_000_000 else None))

    def generator(self) -> None:
        times = {}
        for count in self.sizes.generator_counts:
            out = self.tmp / f"values-{count}"
            out.mkdir(exist_ok=True)
            seconds, rss = child([sys.executable, "-m", "generator",
                                  str(self.task_file(count)), "-o", str(out / "values.yaml")])
            times[count] = seconds
            self.add(Row(f"Generator, {count:,} tasks", f"{seconds:.2f} s, peak {rss:.0f} MB",
                         ""))
        counts = sorted(times)
        for small, big in itertools.pairwise(counts):
            growth = times[big] / times[small]
            # Linear means 10x the tasks costs at most 12x the time; shown as headroom.
            self.add(Row(f"Generator scaling {small:,} → {big:,} (time x{growth:.1f})",
                         "", "", 12 / growth, 1))

    def runner_cost(self) -> None:
        url, password = self.server("redis")
        count = self.sizes.runner_items
        env = {**os.environ, "WORKQUEUE_BROKER_URL": url, "WORKQUEUE_BROKER_PASSWORD": password}
        runs = {}
        # Two queue sizes: their difference leaves out what a worker pays once (starting
        # Python, connecting), which the chart's pods pay once per pod, not per task.
        for items in (count // 5, count):
            env["WORKQUEUE_QUEUE"] = self.seeded_queue("redis", items)
            runs[items] = child([sys.executable, "-m", "workqueue", "work", "--", "true"], env)
        per_item = (runs[count][0] - runs[count // 5][0]) / (count - count // 5)
        queue = self.seeded_queue("redis", count)
        start = time.perf_counter()
        our_worker(url, password, queue, None)
        in_process = (time.perf_counter() - start) / count
        self.add(Row("Worker process peak RSS (command runner)", f"{runs[count][1]:.0f} MB", ""))
        self.add(Row("Cost per item: command runner, spawning `true` (vs the 1 ms target)",
                     f"{1000 * per_item:.2f} ms", "1 ms", 0.001 / per_item, 1))
        # How many times dearer an item is when it spawns a process (a cost, not a goal).
        self.add(Row("Cost per item: command runner vs in-process Python API",
                     f"{1000 * per_item:.2f} ms", f"{1000 * in_process:.3f} ms",
                     per_item / in_process))

    def report_memory(self) -> None:
        """Redis memory a settled task's report record takes, against a queued task's."""
        url, password = self.server("redis")
        count = self.sizes.report_items
        client = redis.Redis.from_url(url, password=password)
        before = client.info("memory")["used_memory"]
        queue = self.seeded_queue("redis", count)
        seeded = client.info("memory")["used_memory"]
        broker = connect(url, queue, password)
        # A worker name as long as a pod's, as the records carry it
        Runner(broker, FunctionHandler(lambda item: None),
               WorkerConfig(batch_size=500, poll_seconds=0.05),
               worker_id="frames-workqueue-job-worker-1a2b3c4d-x7k2p-7-0f3a9c").run()
        settled = client.info("memory")["used_memory"]
        client.delete(f"wq:{{{queue}}}:report")
        bare = client.info("memory")["used_memory"]
        broker.close()
        client.close()
        self.add(Row("Redis memory per task: its report record, once settled (vs queued)",
                     f"{(settled - bare) / count:.0f} B", f"{(seeded - before) / count:.0f} B"))

    def replication(self) -> None:
        """The defaults at 4 workers on a 3-node cluster, every queue replicated to all three
        (broker.rabbitmq.replicas: 3), against the one node: the price of surviving a lost
        node. The cluster runs beside the one node, which this measures again meanwhile."""
        count = self.sizes.rabbit_items
        for label, kind, root in SERVERS:
            if kind != "rabbitmq":
                continue
            cluster = RabbitCluster(3, root).start()
            try:
                self.servers[f"{label} cluster"] = cluster  # type: ignore[assignment]
                clustered = self.ours(kind, f"{label} cluster", 4, None, count)
                one = self.ours(kind, label, 4, None, count)
            finally:
                del self.servers[f"{label} cluster"]
                cluster.cleanup()
            self.add(Row(f"{label} fine, 4 workers, the defaults, on 3 replicated nodes "
                         "(vs 1 node)", f"{clustered:,.0f} items/s", f"{one:,.0f} items/s",
                         clustered / one))

    def ceiling(self) -> None:
        url, password = self.server("redis")
        port = url.rsplit(":", 1)[1].split("/")[0]
        out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", port, "-a", password,
                              "-t", "set", "-P", "16", "-n", "200000", "-q", "--csv"],
                             capture_output=True, text=True, timeout=120)
        line = next(line for line in out.stdout.splitlines() if line.startswith('"SET"'))
        ops = float(line.split(",")[1].strip('"'))
        best = max((float(r.ours.split()[0].replace(",", "")) for r in self.rows
                    if r.what.startswith("Redis") and " fine," in r.what), default=0)
        self.add(Row("Ceiling: redis-benchmark SET, pipelined x16 (vs our best Redis fine)",
                     f"{best:,.0f} items/s", f"{ops:,.0f} ops/s", best / ops))


NOTES = """
How to read it:
- Baselines, written in `bench/baselines.py`: the Kubernetes docs' Redis work queue (per item
  LLEN, BRPOPLPUSH, SETEX, LREM, DEL: five round trips), RabbitMQ basic.get + ack per item with no
  prefetch on a quorum queue like ours, and seeding with one RPUSH per task (the 1,000,000 figure
  is extrapolated from the 100,000-task sample).
- Ours keeps what the baselines do not: leases that expire, heartbeats, attempt counts, dead
  letters, results recorded exactly once, and an exact "drained". On RabbitMQ each batch's
  receipt and acks are one AMQP transaction; the baseline's acks are fire-and-forget.
- Ours runs the real worker loop in-process with a no-op Python function, so the figures are
  the queue's overhead per item; the command-runner row shows what a process per item adds.
- Each broker runs at two versions, side by side: Debian bookworm's (Redis 7.0, RabbitMQ 3.10)
  and Debian trixie's (Redis 8.0, RabbitMQ 4.0, the version the chart ships). "The defaults" is
  what `worker.batchSize` (100) and `worker.batchSeconds` (1) lease: about a second of work per
  lease, judged by the last batch, so no-op items soon go 100 at a time. "Batch 1" (at 4
  workers) is `batchSize: 1`, one item per round trip; the last row of each group is the best
  of the fixed batch sizes tried. Targets apply at 4 workers: the defaults at 4x the docs'
  Redis protocol and 1.5x one RabbitMQ get per item, the best batch at 5x.
- The command-runner cost per item is the difference between two runs of `workqueue work --
  true` at the defaults (1,000 and 200 items), which leaves out starting Python and connecting,
  paid once per pod. It includes the queue's own cost per item (the Python API row, also at
  the defaults).
- The replication rows run the defaults on a 3-node RabbitMQ cluster started beside the one
  node (`broker.rabbitmq.replicas: 3`): every queue is a quorum queue on all three nodes, and
  each commit waits for a majority of them. On this machine the three nodes share its cores
  with the workers, so the ratio is a floor for nodes on machines of their own.
- The report row is Redis memory: what a settled task's record takes (with a worker name as
  long as a pod's), beside what a queued 30-byte task takes. On RabbitMQ the records are
  messages of a version-2 classic queue, which keeps them on disk.
- Peak RSS is the kernel's high-water mark for the child process, which starts from the size of
  the benchmark process it was forked from (about 45 MB); equal figures at that floor mean
  "no more than this".
- Generator scaling shows headroom: 12 divided by the time growth for 10x the tasks (1x or more
  means linear by the issue's definition).
"""

HEADER = ("| Measurement | Ours | Baseline | Ratio | Target | |\n"
          "|---|---|---|---|---|---|")


def machine(servers: dict[str, RootRedis | RabbitNode]) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    return (f"{os.cpu_count()} x {cpu}, Python {platform.python_version()}; "
            + ", ".join(f"{label}: {server_version(node)}" for label, node in servers.items()))


def server_version(node: RootRedis | RabbitNode) -> str:
    """The version the running server reports."""
    if isinstance(node, RootRedis):
        client = redis.Redis.from_url(node.url, password=node.password)
        try:
            return str(client.info("server")["redis_version"])
        finally:
            client.close()
    broker = connect(node.url, f"bench-version-{secrets.token_hex(4)}", node.password)
    try:
        properties = broker.link.connection._impl.server_properties  # type: ignore[attr-defined]
        return properties["version"].decode() if isinstance(properties["version"], bytes) \
            else str(properties["version"])
    finally:
        broker.purge()
        broker.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    parser.add_argument("--write", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    servers: dict[str, RootRedis | RabbitNode] = {}
    started = time.perf_counter()
    try:
        for label, kind, root in SERVERS:
            servers[label] = (RootRedis(root) if kind == "redis" else RabbitNode(root=root))
            servers[label].start()
        bench = Bench(sizes, servers)
        machine_line = machine(servers)
        print(HEADER, flush=True)
        for label, kind, _root in SERVERS:
            bench.fine_mode(label, kind)
        bench.seeding()
        bench.generator()
        bench.runner_cost()
        bench.report_memory()
        bench.replication()
        bench.ceiling()
    finally:
        for node in servers.values():
            node.cleanup()
    minutes = (time.perf_counter() - started) / 60
    missed = [row.what for row in bench.rows if row.verdict == "MISSED"]
    print(f"bench: {len(bench.rows)} rows in {minutes:.1f} min; "
          + (f"targets missed: {'; '.join(missed)}" if missed else "every target met"))
    if args.write:
        table = "\n".join([HEADER, *(row.markdown() for row in bench.rows)])
        args.write.write_text(
            "# Benchmarks\n\nWritten by `make bench` (`python -m bench --write "
            f"docs/benchmarks.md`), {time.strftime('%Y-%m-%d')}, in {minutes:.1f} min.\n\n"
            f"Machine: {machine_line}.\n\n"
            "Every ratio compares two runs made side by side in one session, against the same "
            "local server, with no-op work. Absolute numbers are noisy on shared machines; the "
            "ratios are what we track.\n\n" + table + "\n" + NOTES)
    return 0
