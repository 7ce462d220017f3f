"""Indexed mode: no broker. Kubernetes' Indexed Job runs one pod per index of the task list
(JOB_COMPLETION_INDEX), counts each index's failures and retries it up to
backoffLimitPerIndex; this runs the task at the pod's index and exits with its verdict.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from .errors import EXIT_ERROR, EXIT_OK, EXIT_STOPPED, ConfigError, TaskSourceError
from .handlers import Handler
from .message import Item, item_id
from .supervisor import run_one
from .taskfile import iter_tasks, no_tasks_error

log = logging.getLogger(__name__)

INDEX_ENV = "JOB_COMPLETION_INDEX"
"""Set by the Job controller in every pod of an Indexed Job."""
FAILURES_ENV = "WORKQUEUE_INDEX_FAILURES"
"""The chart sets it from the pod's batch.kubernetes.io/job-index-failure-count annotation,
which the Job controller writes on each pod it creates when backoffLimitPerIndex is set."""


def task_at(path: str, index: int, fmt: str = "auto", expect_count: int | None = None) -> str:
    """The payload at 0-based ``index`` of the list. The whole list is read: a chunk missing
    or changed would shift every index after it, so its count must be ``expect_count``."""
    payload = None
    count = 0
    for count, task in enumerate(iter_tasks(path, fmt), 1):
        if count == index + 1:
            payload = task
    if count == 0:
        raise no_tasks_error(path)
    if expect_count is not None and count != expect_count:
        raise TaskSourceError(
            f"{path} holds {count} tasks but the Job has {expect_count} indexes: a tasksFrom "
            "ConfigMap is missing or changed. Apply the generator's ConfigMaps as written "
            "(kubectl apply --server-side -f NAME-tasks.yaml), then install again")
    if payload is None:
        raise ConfigError(f"index {index} is past the end of the task list ({count} tasks); "
                          "indexes count from 0")
    return payload


def attempt_from_env(env: Mapping[str, str]) -> int:
    """This run's attempt (from 1), from the index's failures so far. Outside a pod (the
    variable unset) it is the first."""
    failures = env.get(FAILURES_ENV)
    if failures is None:
        return 1
    if not failures.isdigit():
        raise ConfigError(
            "the pod has no batch.kubernetes.io/job-index-failure-count annotation, so the "
            "cluster did not apply the Job's backoffLimitPerIndex (Kubernetes 1.29 or later "
            "has it): upgrade the cluster, or use mode coarse")
    return int(failures) + 1


class IndexedRun:
    """Runs one item with ``handler``; after SIGTERM (``request_stop``) the item gets
    ``grace_seconds`` before it is cancelled."""

    def __init__(self, handler: Handler, grace_seconds: float) -> None:
        self.handler = handler
        self.grace_seconds = grace_seconds
        self._stopping: threading.Timer | None = None

    def request_stop(self) -> None:
        """Signal-safe: starts the grace period once."""
        if self._stopping is None:
            self._stopping = threading.Timer(self.grace_seconds, self.handler.cancel)
            self._stopping.daemon = True
            self._stopping.start()

    def run(self, index: int, payload: str, attempt: int, max_attempts: int) -> int:
        """Run the task; the exit code says how it went (see `workqueue --help`)."""
        item = Item(item_id(index), payload, attempt)
        log.info("index %d: running its task (attempt %d of %d)", index, attempt, max_attempts)
        error = run_one(self.handler, item).error
        stopping = self._stopping
        if stopping is not None:
            stopping.cancel()
        if error is None:
            log.info("index %d: done", index)
            return EXIT_OK
        if stopping is not None:
            log.info("index %d: stopped by SIGTERM: %s", index, error)
            return EXIT_STOPPED
        if attempt >= max_attempts:
            log.error("index %d failed its last attempt (%d of %d): %s. The Job lists it in "
                      "status.failedIndexes", index, attempt, max_attempts, error)
        else:
            log.warning("index %d failed (attempt %d of %d): %s; the Job runs it again",
                        index, attempt, max_attempts, error)
        return EXIT_ERROR

