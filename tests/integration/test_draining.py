"""Both brokers x both modes drain real queues with forked worker processes."""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from conftest import kind_of, write_tasks
from jobs import ForkedJob, WorkerSpec, results
from workqueue import WorkerConfig, run_worker, seed
from workqueue.errors import EXIT_DEAD, TaskFailed
from workqueue.message import Item

pytestmark = pytest.mark.slow


def spec_for(broker, server_for, out_dir, **config) -> WorkerSpec:
    url, password = server_for(kind_of(broker))
    out_dir.mkdir(exist_ok=True)
    return WorkerSpec(url, password, broker.queue, out_dir,
                      WorkerConfig(poll_seconds=0.05, **config))


COARSE_TASKS = 2_000
"""Tasks for the coarse runs: one process and one broker connection per task, as one pod per
task. What they check (each completion takes exactly one task, none is lost) shows at 2,000 as
at 10,000. 10,000 forks took 9-10 minutes on 2 cores with another test process running, past
pytest's 600 s bound (CI, RabbitMQ 3.10); RabbitMQ 4.0.5 opens a connection in about 200 ms
when four arrive at once (3.10: 7 ms). Throughput at scale is `make bench`'s job."""


@pytest.mark.parametrize("mode", ["fine", "coarse"])
def test_four_workers_drain_the_queue(broker, server_for, tmp_path, mode):
    # Given 10,000 seeded tasks (fine) or 2,000 (coarse: a process per task)
    count = COARSE_TASKS if mode == "coarse" else 10_000
    tasks = write_tasks(tmp_path / "tasks.txt", count)
    seed(broker, str(tmp_path / "tasks.txt"))
    # When 4 worker processes run as a Job (coarse: one completion per task)
    spec = spec_for(broker, server_for, tmp_path / "out", mode=mode,
                    batch_size=20 if mode == "fine" else 1)
    job = ForkedJob(spec, parallelism=4, completions=len(tasks) if mode == "coarse" else None)
    job.run(timeout=900)
    # Then every task was done, each worker exited 0, and the queue reports drained
    assert set(results(tmp_path / "out")) == set(tasks)
    assert set(job.exit_codes) == {0}
    status = broker.status()
    assert status.drained and status.done == len(tasks) and status.dead == 0


def test_coarse_workers_leave_the_verdict_to_the_one_that_drains_the_queue(broker, caplog,
                                                                          tmp_path):
    # Given three tasks, the first of which fails for good on its one attempt
    write_tasks(tmp_path / "tasks.txt", 3)
    seed(broker, str(tmp_path / "tasks.txt"))
    config = WorkerConfig(poll_seconds=0.05, mode="coarse", batch_size=1, max_attempts=1)

    def handle(item: Item) -> None:
        if item.payload == "task-0":
            raise TaskFailed("fails for good")

    # When coarse workers run one after another, a task each
    codes = []
    for _ in range(3):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="workqueue.runner"):
            codes.append(run_worker(handle, broker, config))
        assert "settled its one item" in caplog.text
        if len(codes) < 3:
            # Then each while tasks still wait exits 0 saying so, with no count of what is done
            assert f"Queue: {3 - len(codes)} waiting" in caplog.text, caplog.text
    # And the one that settled the last gives the run's verdict: a task is dead (exit 3)
    assert "Queue: 2 done, 1 dead of 3" in caplog.text, caplog.text
    assert codes == [0, 0, EXIT_DEAD]


def test_waiting_counts_queued_and_delayed_tasks_not_leased_ones(broker, tmp_path):
    # Given four seeded tasks, one of them leased
    write_tasks(tmp_path / "tasks.txt", 4)
    seed(broker, str(tmp_path / "tasks.txt"))
    consumer = broker.consumer("counter", 1, 60, 3)
    (leased,) = consumer.fetch(1).deliveries
    # Then three wait, as status counts them
    assert broker.waiting() == broker.status().pending == 3
    # And a task waiting out its retry delay waits too
    consumer.fail(leased, "failed once", 3, retry_delay=60)
    status = broker.status()
    assert broker.waiting() == status.pending == 4 and status.delayed == 1
    consumer.close()


def test_killing_workers_loses_no_task(broker, server_for, tmp_path):
    # Given 3,000 short tasks and short leases, so a dead worker's items come back quickly
    tasks = write_tasks(tmp_path / "tasks.txt", 3000)
    seed(broker, str(tmp_path / "tasks.txt"))
    batch = 2
    spec = spec_for(broker, server_for, tmp_path / "out", batch_size=batch, lease_seconds=1.5,
                    max_attempts=50)
    spec = replace(spec, delay=0.004)
    # When a random worker is SIGKILLed every 0.5 s and replaced
    job = ForkedJob(spec, parallelism=4)
    job.run(timeout=600, kill_every=0.5)
    # Then the run ends with every task done, and repeats stay within kills x batch size
    done = results(tmp_path / "out")
    assert job.kills >= 3
    assert set(done) == set(tasks)
    assert len(done) - len(tasks) <= job.kills * batch
    assert broker.status().drained


@pytest.mark.parametrize("on_dead, expected_exit", [("fail", 3), ("succeed", 0)])
def test_poison_task_is_dead_lettered(broker, server_for, tmp_path, on_dead, expected_exit):
    # Given 50 tasks, one of which always fails
    tasks = write_tasks(tmp_path / "tasks.txt", 50)
    seed(broker, str(tmp_path / "tasks.txt"))
    spec = spec_for(broker, server_for, tmp_path / "out", max_attempts=3,
                    fail_on_dead=on_dead == "fail")
    spec = replace(spec, poison=frozenset({"task-7"}))
    # When two workers drain the queue
    job = ForkedJob(spec, parallelism=2)
    job.run(timeout=120)
    # Then the poison task is dead after exactly 3 attempts with its error, the rest are done
    assert set(results(tmp_path / "out")) == set(tasks) - {"task-7"}
    (dead,) = broker.dead_items(10)
    assert (dead.payload, dead.attempts) == ("task-7", 3)
    assert "poison task task-7" in dead.error
    status = broker.status()
    assert (status.done, status.dead, status.retried) == (49, 1, 2)
    assert expected_exit in job.exit_codes


def test_large_seed_batches_are_accepted(broker, tmp_path):
    # Redis's Lua unpack() fails beyond ~8,000 values; the script pushes in slices.
    tasks = write_tasks(tmp_path / "t.txt", 12_000)
    report = seed(broker, str(tmp_path / "t.txt"), batch_size=10_000)
    status = broker.status()
    assert report.written == len(tasks) and status.total == len(tasks)
    assert status.pending == len(tasks)


TRICKY_PAYLOADS = ["nul\x00byte", "tab\tand\nnewline", "line\u2028separator", "emoji 😀",
                   '"quoted" \\ backslash', "\\u0000 as text", "é ü ß", "  leading spaces",
                   "[1, 2]", "", "x" * 200_000]


def test_payloads_reach_workers_byte_for_byte(broker, tmp_path):
    # Given payloads that JSON, Lua and AMQP each treat specially, seeded as JSON Lines
    source = tmp_path / "tasks.jsonl"
    source.write_text("".join(json.dumps(p) + "\n" for p in TRICKY_PAYLOADS), encoding="utf-8")
    seed(broker, str(source), batch_size=4)
    # When one consumer leases them all
    consumer = broker.consumer("reader", 100, 60, 3)
    fetched: list = []
    for _ in range(50):
        fetched += consumer.fetch(100).deliveries
        if len(fetched) == len(TRICKY_PAYLOADS):
            break
    consumer.release(fetched)
    consumer.close()
    # Then each arrives unchanged, in order, with its own id
    assert [d.item.payload for d in fetched] == TRICKY_PAYLOADS
    assert len({d.item.id for d in fetched}) == len(TRICKY_PAYLOADS)
