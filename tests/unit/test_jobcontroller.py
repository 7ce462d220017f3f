"""The Job controller model (tests/jobcontroller.py) against the rules it cites, with `sh`
processes standing in for worker pods, so that the churn tests built on it can be trusted."""

from __future__ import annotations

import time

from jobcontroller import LocalJob

FINE = {"spec": {  # as the chart renders fine mode (test_pod_churn.py renders the real one)
    "parallelism": 2, "backoffLimit": 1, "completionMode": "Indexed", "completions": 50,
    "successPolicy": {"rules": [{"succeededIndexes": "0"}]},
    "podFailurePolicy": {"rules": [
        {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2, 3]}},
        {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [137, 143]}}]}}}


def job(tmp_path, script: str, spec: dict = FINE, scale: float = 0.01) -> LocalJob:
    return LocalJob(spec, ["sh", "-c", script], {}, tmp_path / "logs", time_scale=scale)


def test_rules_decide_in_order_and_unmatched_codes_count(tmp_path):
    model = job(tmp_path, "true")
    assert model.action(3) == ("FailJob", 0)
    assert model.action(143) == ("Ignore", 1)
    assert model.action(1) == ("Count", None)


def test_an_ignored_failure_still_delays_the_next_pod_until_a_success(tmp_path):
    # kubernetes#119434: ignored failures count in the backoff, which only a success resets
    model = job(tmp_path, "true", scale=1.0)
    now = time.monotonic()
    model.failures_since_success, model.last_failure = 1, now
    assert 9 < model.backoff_left(now) <= 10
    model.failures_since_success = 7
    assert model.backoff_left(now) == 600  # 10 s doubling, capped at 10 minutes
    model._ended(type("P", (), {"index": 3, "process": None})(), 0, now)
    assert model.backoff_left(now) == 0


def test_index_0_succeeding_ends_the_job_and_stops_the_others(tmp_path):
    # Index 0 finishes; the others would run for a minute: the success policy stops them
    model = job(tmp_path, 'test "$JOB_COMPLETION_INDEX" = 0 && exit 0; sleep 60')
    started = time.monotonic()
    verdict = model.run(timeout=30)
    assert verdict.state == "complete" and verdict.reason == "SuccessPolicy"
    assert time.monotonic() - started < 25
    assert (0, 0) in model.exits and not model.pods


def test_a_failjob_code_fails_at_once_and_counted_failures_past_the_limit_fail(tmp_path):
    verdict = job(tmp_path / "a", "exit 3").run(timeout=30)
    assert (verdict.state, verdict.reason) == ("failed", "PodFailurePolicy")
    assert "exit code 3" in verdict.message
    crashing = job(tmp_path / "b", "exit 1")
    verdict = crashing.run(timeout=30)
    assert (verdict.state, verdict.reason) == ("failed", "BackoffLimitExceeded")
    assert crashing.counted_failures == 2  # backoffLimit 1: the second counted failure ends it


def test_stopped_pods_that_succeed_free_their_index_at_once(tmp_path):
    # A pod at an index above 0 that exits 0 is never run again; the next index starts
    model = job(tmp_path, 'test "$JOB_COMPLETION_INDEX" -ge 5 && exit 0; '
                          'test "$JOB_COMPLETION_INDEX" = 0 && sleep 1 && exit 0; exit 0')
    verdict = model.run(timeout=30)
    assert verdict.state == "complete"
    assert {index for index, code in model.exits if code == 0} >= {0, 1}
    assert model.failures_since_success == 0
