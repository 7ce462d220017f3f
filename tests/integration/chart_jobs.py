"""The chart's worker Job as the Job controller model (tests/jobcontroller.py) runs it on this
machine: its rendered command and environment, pointed at a test's own queue."""

from __future__ import annotations

from conftest import WORKQUEUE, broker_env
from jobcontroller import LocalJob
from render import by_kind_name, render_chart

TIME_SCALE = 0.1
"""The controller's backoff runs ten times faster here (1 s first wait, 60 s cap)."""
LEASE_SECONDS = "5"
"""Shorter than the chart's 60 s, so that a killed worker's leases come back within the test."""
CONNECT_SECONDS = "120"
"""A pod that starts while a test restarts the broker waits this long for it (the chart's
15 minutes would only slow a failing test): RabbitMQ may take over 10 s to boot on a busy
machine, and a pod that gives up fails the Job (exit 5)."""
CHART_ENV_KEPT_OUT = ("WORKQUEUE_BROKER_URL", "WORKQUEUE_BROKER_PASSWORD_FILE",
                      "WORKQUEUE_QUEUE", "WORKQUEUE_RUN_ID")
"""What points a rendered pod at its broker in the cluster; the test points it at its own."""


def chart_job(broker, server_for, tmp_path, script: str, tasks: list[str],
              mode: str = "fine", parallelism: int = 4, time_scale: float = TIME_SCALE,
              **worker: object) -> LocalJob:
    """The chart's worker Job at its defaults (but ``worker`` values), its pods running the
    rendered container's command and environment against ``broker``'s queue, with ``script``
    (sh) as the task's command. ``tasks`` are the list seeded (coarse completions count them)."""
    values = {"mode": mode, "tasks": tasks, "worker": {"parallelism": parallelism, **worker}}
    job = by_kind_name(render_chart(values))[("Job", "demo-workqueue-job-worker")]
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]
           if "value" in e and e["name"] not in CHART_ENV_KEPT_OUT}
    env |= broker_env(broker, server_for) | {"WORKQUEUE_LEASE_SECONDS": LEASE_SECONDS,
                                             "WORKQUEUE_CONNECT_TIMEOUT": CONNECT_SECONDS,
                                             "WORKQUEUE_LOG_LEVEL": "INFO"}
    argv = [*WORKQUEUE, *container["command"][1:], "--", "sh", "-c", script]
    return LocalJob(job, argv, env, tmp_path / "pods", time_scale=time_scale)
