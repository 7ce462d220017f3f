"""The exporter's arithmetic: histogram buckets and the figures taken from the report."""

from __future__ import annotations

from workqueue.defaults import DURATION_BUCKETS
from workqueue.exporter import ReportFigures, histogram_buckets
from workqueue.report import TaskRecord


def test_buckets_are_cumulative_and_end_with_every_value_at_inf():
    buckets = dict(histogram_buckets([0.01, 0.3, 0.3, 5.0, 7200.0]))
    assert list(buckets) == [*map(repr, DURATION_BUCKETS), "+Inf"]
    # A value on a bound counts in that bucket (le: less than or equal)
    assert buckets["0.01"] == 1
    assert buckets["0.25"] == 1 and buckets["0.5"] == 3
    assert buckets["5.0"] == 4 and buckets["3600.0"] == 4
    assert buckets["+Inf"] == 5


def test_figures_count_runs_of_settled_tasks_and_time_only_timed_ones():
    figures = ReportFigures.of([
        TaskRecord("0", "done", 1, seconds=0.5), TaskRecord("1", "dead", 3, seconds=2.0),
        TaskRecord("2", "done", 2), TaskRecord("3", "pending", 0)])
    assert figures.runs == 6
    assert figures.durations == {"done": [0.5], "dead": [2.0]}
