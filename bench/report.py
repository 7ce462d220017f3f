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

from workqueue import connect, seed
from workqueue.local import LocalRedis

from . import baselines
from .measure import child, our_worker, parallel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from servers import RabbitNode  # noqa: E402  (the tests' private RabbitMQ node)


@dataclass(frozen=True)
class Sizes:
    redis_items: int
    rabbit_items: int
    seed_counts: tuple[int, ...]
    push_sample: int
    generator_counts: tuple[int, ...]
    runner_items: int
    batches: tuple[int, ...]


# Large enough that connecting and the drain check at the end (fixed costs per worker) stay a
# small part of each run.
FULL = Sizes(50_000, 40_000, (100_000, 1_000_000), 100_000, (10_000, 100_000, 1_000_000), 1_000,
             (10, 100, 500))
SMOKE = Sizes(300, 200, (2_000,), 2_000, (1_000, 10_000), 50, (10,))


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
    def __init__(self, sizes: Sizes, redis: LocalRedis, rabbit: RabbitNode) -> None:
        self.sizes, self.redis, self.rabbit = sizes, redis, rabbit
        self.rows: list[Row] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="wq-bench-"))

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(row.markdown(), flush=True)

    def server(self, kind: str) -> tuple[str, str]:
        node = self.redis if kind == "redis" else self.rabbit
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

    def seeded_queue(self, kind: str, count: int) -> str:
        url, password = self.server(kind)
        queue = f"bench-{secrets.token_hex(4)}"
        broker = connect(url, queue, password)
        seed(broker, str(self.task_file(count)))
        broker.close()
        return queue

    def ours(self, kind: str, workers: int, batch: int, count: int) -> float:
        url, password = self.server(kind)
        queue = self.seeded_queue(kind, count)
        return count / parallel(our_worker, (url, password, queue, batch), workers)

    def fine_mode(self, kind: str) -> None:
        count = self.sizes.redis_items if kind == "redis" else self.sizes.rabbit_items
        url, password = self.server(kind)
        name = "docs protocol" if kind == "redis" else "one get per item"
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
            one = self.ours(kind, workers, 1, count)
            best_batch, best = max(((b, self.ours(kind, workers, b, count))
                                    for b in self.sizes.batches), key=lambda pair: pair[1])
            four = workers == 4
            if kind == "redis":
                self.add(Row(f"Redis fine, {workers} workers, batch 1 (vs {name})",
                             f"{one:,.0f} items/s", f"{base:,.0f} items/s", one / base,
                             1.5 if four else None))
            self.add(Row(f"{kind.title() if kind == 'redis' else 'RabbitMQ'} fine, {workers} "
                         f"workers, batch {best_batch} (vs {name})", f"{best:,.0f} items/s",
                         f"{base:,.0f} items/s", best / base, 5 if four else None))

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
        queue = self.seeded_queue("redis", count)
        env = {**os.environ, "WORKQUEUE_BROKER_URL": url, "WORKQUEUE_BROKER_PASSWORD": password,
               "WORKQUEUE_QUEUE": queue}
        seconds, rss = child([sys.executable, "-m", "workqueue", "work", "--", "true"], env)
        queue = self.seeded_queue("redis", count)
        start = time.perf_counter()
        our_worker(url, password, queue, 1)
        in_process = (time.perf_counter() - start) / count
        self.add(Row("Worker process peak RSS (command runner)", f"{rss:.0f} MB", ""))
        # How many times dearer an item is when it spawns a process (this is a cost, not a goal).
        self.add(Row("Cost per item: command runner (spawn `true`) vs in-process Python API",
                     f"{1000 * seconds / count:.2f} ms", f"{1000 * in_process:.3f} ms",
                     (seconds / count) / in_process))

    def ceiling(self) -> None:
        url, password = self.server("redis")
        port = url.rsplit(":", 1)[1].split("/")[0]
        out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", port, "-a", password,
                              "-t", "set", "-P", "16", "-n", "200000", "-q", "--csv"],
                             capture_output=True, text=True, timeout=120)
        line = next(line for line in out.stdout.splitlines() if line.startswith('"SET"'))
        ops = float(line.split(",")[1].strip('"'))
        best = max((float(r.ours.split()[0].replace(",", "")) for r in self.rows
                    if r.what.startswith("Redis fine")), default=0)
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
- Peak RSS is the kernel's high-water mark for the child process, which starts from the size of
  the benchmark process it was forked from (about 45 MB); equal figures at that floor mean
  "no more than this".
- Generator scaling shows headroom: 12 divided by the time growth for 10x the tasks (1x or more
  means linear by the issue's definition).
"""

HEADER = ("| Measurement | Ours | Baseline | Ratio | Target | |\n"
          "|---|---|---|---|---|---|")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())
    redis_version = subprocess.run(["redis-server", "--version"], capture_output=True,
                                   text=True).stdout.split()[2]
    return (f"{os.cpu_count()} x {cpu}, Python {platform.python_version()}, "
            f"Redis {redis_version.removeprefix('v=')}, RabbitMQ (Debian package)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks it still runs")
    parser.add_argument("--write", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    redis, rabbit = LocalRedis().start(), RabbitNode().start()
    started = time.perf_counter()
    try:
        bench = Bench(sizes, redis, rabbit)
        print(HEADER, flush=True)
        bench.fine_mode("redis")
        bench.fine_mode("rabbitmq")
        bench.seeding()
        bench.generator()
        bench.runner_cost()
        bench.ceiling()
    finally:
        redis.stop()
        rabbit.cleanup()
    minutes = (time.perf_counter() - started) / 60
    missed = [row.what for row in bench.rows if row.verdict == "MISSED"]
    print(f"bench: {len(bench.rows)} rows in {minutes:.1f} min; "
          + (f"targets missed: {'; '.join(missed)}" if missed else "every target met"))
    if args.write:
        table = "\n".join([HEADER, *(row.markdown() for row in bench.rows)])
        args.write.write_text(
            "# Benchmarks\n\nWritten by `make bench` (`python -m bench --write "
            f"docs/benchmarks.md`), {time.strftime('%Y-%m-%d')}, in {minutes:.1f} min.\n\n"
            f"Machine: {machine()}.\n\n"
            "Every ratio compares two runs made side by side in one session, against the same "
            "local server, with no-op work. Absolute numbers are noisy on shared machines; the "
            "ratios are what we track.\n\n" + table + "\n" + NOTES)
    return 0
