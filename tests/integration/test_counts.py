"""The counts add up after any history. Random histories of lease, finish, fail, give back,
crash (a worker process SIGKILLed while it holds a group), retry-dead and re-run, on every
broker version; after every step, `status` and the report are checked against a model kept
here, apart from the broker code. A failure names the seed and the steps so far.

The model is exact for what a worker decides (done, failed, given back) and bounded for what a
crash leaves to the broker: a crashed group's tasks come back, uncharged or charged at most once
per crash, and may be dead-lettered only with the error that says their worker died.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest

from conftest import kind_of, write_tasks
from workqueue import connect, seed
from workqueue.broker import Broker, Consumer, Delivery, Outcome
from workqueue.message import item_id

pytestmark = pytest.mark.slow

FORK = multiprocessing.get_context("fork")
TASKS = 12
STEPS = 60
MAX_ATTEMPTS = 3
CRASHED_LEASE_SECONDS = 1.0
"""A crashed worker's lease: short, so that its tasks come back within the history."""
HISTORIES = (1, 2, 3)
"""Seeds of the random histories, each run on every broker version."""


@dataclass
class Task:
    """What the model knows of one task."""

    payload: str
    state: str = "pending"
    """pending, leased (by a live consumer here), done, dead, or crashed: held by a worker that
    was killed, on its way back to pending (or, charged enough, to dead)."""
    charged: int = 0
    """Runs charged since the last retry-dead: failures, and at most one per crash."""
    runs: int = 0
    """Runs that ended here in done or failed, every round."""
    crashes: int = 0
    """Crashes it was held in, every round: each may have been charged as a run."""
    settled_runs: int | None = None
    """``runs`` when it was last done or dead: a task retry-dead put back keeps that record,
    outcome pending, until it settles again (workqueue/report.py)."""


@dataclass
class Model:
    tasks: dict[str, Task]
    held: dict[str, list[Delivery]] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)

    def count(self, state: str) -> int:
        return sum(1 for task in self.tasks.values() if task.state == state)

    def ids(self, state: str) -> set[str]:
        return {tid for tid, task in self.tasks.items() if task.state == state}


def lease_and_die(url: str, password: str, queue: str, count: int, ids) -> None:
    """A worker that leases a group and reports the ids, then waits to be killed."""
    broker = connect(url, queue, password)
    consumer = broker.consumer(f"doomed-{os.getpid()}", count, CRASHED_LEASE_SECONDS,
                               MAX_ATTEMPTS)
    fetched = consumer.fetch(count)
    ids.send([d.item.id for d in fetched.deliveries])
    signal.pause()


class History:
    """One random history against one real queue."""

    def __init__(self, broker: Broker, url: str, password: str, seed_number: int) -> None:
        self.broker, self.url, self.password = broker, url, password
        self.pick = random.Random(seed_number)
        self.consumers: dict[str, Consumer] = {}
        self.model = Model({})

    def step(self) -> None:
        held = [name for name, deliveries in self.model.held.items() if deliveries]
        choices = ["lease"] * 4 + ["crash"]
        if held:
            choices += ["finish"] * 3 + ["fail"] * 4 + ["give_back"]
        if self.model.count("dead"):
            choices += ["retry_dead"] * 2
        if self.model.count("crashed"):
            choices.append("wait_for_crashed_leases")
        getattr(self, self.pick.choice(choices))()

    def consumer(self) -> tuple[str, Consumer]:
        name = self.pick.choice(["a", "b"])
        if name not in self.consumers:
            self.consumers[name] = self.broker.consumer(f"worker-{name}", 5, 600, MAX_ATTEMPTS)
            self.model.held[name] = []
        return name, self.consumers[name]

    def lease(self) -> None:
        name, consumer = self.consumer()
        count = self.pick.randint(1, 4)
        deliveries = consumer.fetch(count).deliveries
        self.model.log.append(f"{name} leased {[d.item.id for d in deliveries]}")
        for delivery in deliveries:
            task = self.model.tasks[delivery.item.id]
            assert task.state in ("pending", "crashed"), (delivery.item.id, task)
            assert task.charged - task.crashes <= delivery.item.attempt - 1 <= task.charged, (
                f"{delivery.item.id} leased as attempt {delivery.item.attempt} after "
                f"{task.charged} charged runs at most, {task.crashes} of them crashes")
            task.state = "leased"
            self.model.held[name].append(delivery)

    def settle_one(self) -> tuple[str, Consumer, Delivery]:
        name = self.pick.choice([n for n, held in self.model.held.items() if held])
        delivery = self.model.held[name].pop(self.pick.randrange(len(self.model.held[name])))
        return name, self.consumers[name], delivery

    def finish(self) -> None:
        name, consumer, delivery = self.settle_one()
        assert consumer.ack(delivery) == Outcome.DONE
        self.model.log.append(f"{name} finished {delivery.item.id}")
        task = self.model.tasks[delivery.item.id]
        task.state, task.runs = "done", task.runs + 1
        task.settled_runs = task.runs

    def fail(self) -> None:
        name, consumer, delivery = self.settle_one()
        outcome = consumer.fail(delivery, "exit code 1", MAX_ATTEMPTS)
        self.model.log.append(f"{name} failed {delivery.item.id}: {outcome}")
        task = self.model.tasks[delivery.item.id]
        task.runs += 1
        task.charged = delivery.item.attempt
        expected = Outcome.DEAD if delivery.item.attempt >= MAX_ATTEMPTS else Outcome.RETRY
        assert outcome == expected, f"attempt {delivery.item.attempt} of {MAX_ATTEMPTS}"
        task.state = "dead" if outcome == Outcome.DEAD else "pending"
        if outcome == Outcome.DEAD:
            task.settled_runs = task.runs

    def give_back(self) -> None:
        name, consumer = self.pick.choice([(n, self.consumers[n])
                                           for n, held in self.model.held.items() if held])
        deliveries, self.model.held[name] = self.model.held[name], []
        consumer.release(deliveries)
        self.model.log.append(f"{name} gave back {[d.item.id for d in deliveries]}")
        for delivery in deliveries:
            self.model.tasks[delivery.item.id].state = "pending"

    def crash(self) -> None:
        receive, send = FORK.Pipe(duplex=False)
        count = self.pick.randint(1, 4)
        proc = FORK.Process(target=lease_and_die, args=(self.url, self.password,
                                                        self.broker.queue, count, send))
        proc.start()
        try:
            assert receive.poll(60), "the doomed worker leased nothing within 60 s"
            ids = receive.recv()
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)
        self.model.log.append(f"a worker leased {ids} and was killed")
        for tid in ids:
            task = self.model.tasks[tid]
            assert task.state in ("pending", "crashed"), (tid, task)
            task.state, task.crashes, task.charged = "crashed", task.crashes + 1, task.charged + 1

    def wait_for_crashed_leases(self) -> None:
        time.sleep(CRASHED_LEASE_SECONDS + 0.2)
        self.model.log.append("waited for the crashed leases to run out")

    def retry_dead(self) -> None:
        moved = self.broker.retry_dead()
        self.model.log.append(f"retry-dead moved {moved}")
        assert moved == self.model.count("dead")
        for task in self.model.tasks.values():
            if task.state == "dead":
                task.state, task.charged = "pending", 0

    def check(self) -> None:
        """status and the report against the model; crashed tasks resolved as they land."""
        model = self.model
        dead = {item.id: item for item in self.broker.dead_items(TASKS)}
        for tid in model.ids("crashed") & set(dead):
            assert "worker died" in dead[tid].error, dead[tid]
            model.tasks[tid].state = "dead"
            model.tasks[tid].settled_runs = model.tasks[tid].runs
        status = self.broker.status()
        in_flight = model.count("pending") + model.count("leased") + model.count("crashed")
        assert status.total == TASKS
        assert (status.done, status.dead) == (model.count("done"), model.count("dead"))
        assert status.pending + status.leased == in_flight
        assert status.leased >= model.count("leased")
        assert status.done + status.dead + status.pending + status.leased == status.total
        assert set(dead) == model.ids("dead")
        assert all(item.payload == model.tasks[tid].payload for tid, item in dead.items())
        records = {record.id: record for record in self.broker.report()}
        assert set(records) == {tid for tid, task in model.tasks.items()
                                if task.settled_runs is not None}
        outcomes = Counter(record.outcome for record in records.values())
        assert (outcomes["done"], outcomes["dead"]) == (status.done, status.dead)
        for tid, record in records.items():
            task = model.tasks[tid]
            expected = task.state if task.state in ("done", "dead") else "pending"
            assert record.outcome == expected, (tid, record, task)
            ran = task.runs if record.outcome != "pending" else task.settled_runs
            assert ran <= record.attempts <= task.runs + task.crashes, (tid, record, task)
        assert sum(record.attempts for record in records.values()) >= len(records)

    def run(self, steps: int) -> None:
        for number in range(steps):
            try:
                self.step()
                self.check()
            except AssertionError as exc:
                history = "\n  ".join(self.model.log)
                raise AssertionError(f"step {number + 1}: {exc}\nhistory:\n  {history}") from exc

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()


@pytest.mark.parametrize("seed_number", HISTORIES)
def test_counts_add_up_after_a_random_history(broker, server_for, tmp_path, seed_number):
    # Given a seeded queue and a model of it
    payloads = write_tasks(tmp_path / "tasks.txt", TASKS)
    seed(broker, str(tmp_path / "tasks.txt"))
    url, password = server_for(kind_of(broker))
    history = History(broker, url, password, seed_number)
    assert list(broker.report()) == []
    history.model.tasks = {item_id(index): Task(payload) for index, payload in enumerate(payloads)}
    # When a random history runs, then every step is checked against the model
    try:
        history.run(STEPS)
    finally:
        history.close()
