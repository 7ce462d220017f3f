"""Report records: the broker's compact form, the jsonl and csv exports, and the status lines
built from them."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import replace

import pytest

from workqueue.broker import Delivery, Status, record_text
from workqueue.brokers.rabbitmq.records import latest_per_task
from workqueue.message import Item
from workqueue.progress import overall_rate, pace, summary_table
from workqueue.report import FIELDS, TaskRecord, durations, write_csv, write_jsonl

DONE = TaskRecord("00000001", "done", 1, 0.25, 0, "pod-a-1-ab12cd", 1795999142.123,
                  result="s3://out/1.exr")
DEAD = TaskRecord("00000002", "dead", 3, 1.5, 9, "pod-b-1-ef34ab", 1795999143.5,
                  error='exit code 9: "boom", ü', payload="frame 2, \"quoted\"\nnewline")


@pytest.mark.parametrize("record", [DONE, DEAD, TaskRecord("00000003", "dead", 2)])
def test_the_brokers_form_reads_back_without_the_payload(record):
    text = record.encode()
    assert '"id"' not in text and "payload" not in text
    back = TaskRecord.decode(record.id, text)
    assert back == TaskRecord(**{**record.__dict__, "payload": None})


def test_jsonl_and_csv_name_every_field_and_survive_any_text():
    rows = [json.loads(line) for line in write_jsonl([DONE, DEAD])]
    assert [list(row) for row in rows] == [list(FIELDS)] * 2
    assert rows[1]["payload"] == DEAD.payload and rows[1]["error"] == DEAD.error
    table = list(csv.DictReader(io.StringIO("".join(write_csv([DONE, DEAD])))))
    assert [row["id"] for row in table] == ["00000001", "00000002"]
    assert table[1]["payload"] == DEAD.payload and table[0]["error"] == ""
    assert "".join(write_csv([])) == ",".join(FIELDS) + "\n"


def test_percentiles_are_nearest_rank():
    records = [TaskRecord(str(i), "done", 1, float(i)) for i in range(1, 101)]
    times = durations(records)
    assert (times.count, times.p50, times.p95) == (100, 50.0, 95.0)
    assert durations([TaskRecord("1", "dead", 1)]) is None


def test_status_adds_pace_and_a_per_outcome_table():
    status = Status(seeded=True, total=100, pending=56, leased=4, done=30, dead=10,
                    seeded_at=1000.0)
    rate = overall_rate(status, now=1020.0)
    assert rate == 2.0
    assert pace(status, rate) == "throughput 2.00 tasks/s, about 30 s left"
    # Nothing leased: no worker runs a task (the Job may be over), so no pace is promised
    assert pace(replace(status, pending=60, leased=0), rate) is None
    assert overall_rate(Status(seeded=True, total=1, pending=1, leased=0, done=0, dead=0,
                               seeded_at=1000.0), now=1020.0) is None
    table = summary_table([DONE, DEAD], settled=40)
    assert "sample of 2 of the 40 settled" in table
    assert [line.split()[:3] for line in table.splitlines()[2:]] == [
        ["done", "1", "1"], ["dead", "1", "3"]]


def test_a_bare_settle_after_a_retry_dead_round_is_the_tasks_latest_record():
    # Given a task retry-dead put back a second ago (its "pending" record is timed), then
    # settled through the Python API without a record of its run
    put_back = TaskRecord("00000001", "pending", 0, finished=time.time() - 1)
    delivery = Delivery(Item("00000001", "task-1", 1), handle=1)
    settled = TaskRecord.decode("00000001", record_text(delivery, "done"))
    # When the two are merged, in either order (RabbitMQ's report queue is not in time order)
    for pair in ([put_back, settled], [settled, put_back]):
        [latest] = latest_per_task(pair)
        # Then the task is done, with the runs of both
        assert (latest.outcome, latest.attempts) == ("done", 1)


def test_a_record_met_twice_counts_its_runs_once():
    # Given a task's records as a report merge leaves them when its reader dies after
    # publishing the merged chunk and before settling what it read: the done record twice,
    # around the record of an earlier retry-dead round
    first = TaskRecord("00000001", "dead", 3, finished=100.0)
    done = TaskRecord("00000001", "done", 2, finished=200.0)
    # When they are merged
    [latest] = latest_per_task([done, first, done])
    # Then the task is done, with the runs of the two rounds only
    assert (latest.outcome, latest.attempts) == ("done", 5)
