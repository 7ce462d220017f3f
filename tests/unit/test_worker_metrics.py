"""A worker's own metrics cost nothing unless served (worker_metrics.py)."""

from __future__ import annotations

import subprocess
import sys


def test_a_worker_without_a_metrics_port_does_not_load_prometheus_client():
    # Given the modules a worker pod loads: the CLI and a broker's client
    code = ("import sys, workqueue.cli, workqueue.brokers.redis, workqueue.brokers.rabbitmq; "
            "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))")
    # When they are loaded, as for `workqueue work` without --metrics-port
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True).stdout.strip()
    # Then prometheus_client (75 ms of every worker's start) is not among them
    assert loaded == "[]"
