"""Errors a person may see, and the exit code of each way a process can end.

Each message names the problem and, where there is one, the fix. The chart's podFailurePolicy
maps the exit codes (``EXIT_CODES`` is the one table: `workqueue --help` and the README show it).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_DEAD = 3
EXIT_SEED_REFUSED = 4
EXIT_BROKER_UNREACHABLE = 5
EXIT_STATE_LOST = 6
EXIT_SEED_TIMEOUT = 7
EXIT_OTHER_RUN = 8
EXIT_INTERRUPTED = 130
EXIT_KILLED = 137
EXIT_STOPPED = 143


@dataclass(frozen=True)
class ExitCode:
    """One row of the exit-code table."""

    code: int
    meaning: str
    chart: str


EXIT_CODES = (
    ExitCode(EXIT_OK, "worker: the queue is drained (coarse: its task settled), or, at a fine-mode "
             "Job index above 0, stopped by SIGTERM with its leases given back; seeder: seeded; "
             "status --require-drained: every task done; run-index: the task is done",
             "pod succeeds; in fine mode, a stopped pod's index succeeds and the next index "
             "starts at once"),
    ExitCode(EXIT_ERROR, "run-index: the task failed; status --require-drained: tasks remain; "
             "otherwise any other error (a broker error that may pass, another seeder running, "
             "or a bug)", "counted against backoffLimit (indexed: against the index's "
             "maxAttempts); the pod is retried"),
    ExitCode(EXIT_CONFIG, "bad flag, environment variable or broker credentials",
             "FailJob at once"),
    ExitCode(EXIT_DEAD, "drained, but tasks were dead-lettered and onDead is fail",
             "FailJob at once"),
    ExitCode(EXIT_SEED_REFUSED, "seeder: the list cannot be seeded (bad task line, count "
             "mismatch, a missing tasksFrom ConfigMap, another list in the queue, broker full); "
             "worker and status: the seeder said so, with its reason; run-index: the list "
             "cannot be read, or does not hold the Job's count of tasks", "FailJob at once"),
    ExitCode(EXIT_BROKER_UNREACHABLE, "the broker stayed unreachable past the connect timeout "
             "or worker.brokerOutageSeconds", "FailJob at once"),
    ExitCode(EXIT_STATE_LOST, "the broker lost the queue (restarted without "
             "broker.persistence, or the queue was deleted)", "FailJob at once"),
    ExitCode(EXIT_SEED_TIMEOUT, "seeding did not complete within worker.seedTimeoutSeconds",
             "FailJob at once"),
    ExitCode(EXIT_OTHER_RUN, "the queue holds another run's state (a different task list)",
             "FailJob at once"),
    ExitCode(EXIT_INTERRUPTED, "interrupted (Ctrl-C)", "not used in pods"),
    ExitCode(EXIT_KILLED, "killed (SIGKILL: a forced deletion past its 2 s, an OOM kill, the grace "
             "period over); the queue gives the leased tasks to other workers and charges the "
             "one that was running", "ignored: the pod is replaced"),
    ExitCode(EXIT_STOPPED, "stopped by SIGTERM before the end (in fine mode, at Job index 0; "
             "seeder: before it finished); unstarted tasks were given back",
             "ignored: the pod is replaced"),
)


def exit_code_table() -> str:
    """The table as plain text, for `workqueue --help`."""
    rows = []
    for row in EXIT_CODES:
        text = textwrap.fill(f"{row.meaning}. Chart: {row.chart}.", width=92,
                             initial_indent=f"  {row.code:>3}  ", subsequent_indent=" " * 7)
        rows.append(text)
    return "exit codes:\n" + "\n".join(rows)


class WorkqueueError(Exception):
    """Base class: the CLI prints the message as one line and exits with ``exit_code``."""

    exit_code = EXIT_ERROR


class ConfigError(WorkqueueError):
    """Bad flags, environment or arguments."""

    exit_code = EXIT_CONFIG


class TaskSourceError(WorkqueueError):
    """A task file that cannot be read as tasks."""

    exit_code = EXIT_SEED_REFUSED


class BrokerUnavailable(WorkqueueError):
    """The broker could not be reached within the connect timeout or the outage tolerance."""

    exit_code = EXIT_BROKER_UNREACHABLE


class BrokerAuthError(WorkqueueError):
    """The broker refused our credentials."""

    exit_code = EXIT_CONFIG


class BrokerFull(WorkqueueError):
    """The broker refused a write because it reached its memory limit."""

    exit_code = EXIT_SEED_REFUSED


class SeedConflict(WorkqueueError):
    """The queue already holds a different task list."""

    exit_code = EXIT_SEED_REFUSED


class SeedRefused(WorkqueueError):
    """A worker or `status` found the seeder's note that it could not seed this queue."""

    exit_code = EXIT_SEED_REFUSED


class StateLost(WorkqueueError):
    """The queue's state vanished from the broker while this process was using it."""

    exit_code = EXIT_STATE_LOST


class SeedTimeout(WorkqueueError):
    """Seeding did not complete in time."""

    exit_code = EXIT_SEED_TIMEOUT


class OtherRun(WorkqueueError):
    """The queue belongs to another run (another task list)."""

    exit_code = EXIT_OTHER_RUN


class ConnectionLost(WorkqueueError):
    """The broker connection dropped; deliveries held on it will be redelivered to someone."""


class TaskFailed(Exception):
    """Raised by a handler to fail the current item with a short reason; a command's runner
    gives the exit code too (negative: killed by that signal), for the report."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def lost_state_message(queue: str, server: str) -> str:
    """What a worker or `status` says when the queue's state is gone."""
    return (f"queue {queue!r} on {server} lost its state mid-run: the broker restarted "
            "without its data or the queue was deleted. Turn on broker.persistence (the chart's "
            "default) and run the job again (helm upgrade --reuse-values --set rerun=N, or helm "
            "uninstall + install)")


def no_state_message(queue: str, server: str, run: str) -> str:
    """What `status` says when it was told the run but the broker holds no state at all."""
    return (f"queue {queue!r} on {server} holds no state for run {run}: the broker lost its "
            "data (it restarted without broker.persistence, the chart's default: turn it on and "
            "re-run the job), or, if the seeder Job has not completed, seeding has not started "
            "yet (see its pods)")


def seed_refused_message(queue: str, reason: str) -> str:
    """What a worker or `status` says when the seeder recorded why it could not seed."""
    return f"the seeder cannot seed queue {queue!r}, so there is nothing to run: {reason}"


def other_run_message(queue: str, found: str | None, expected: str) -> str:
    """What a worker, the seeder or `status` says when the queue holds another run."""
    return (f"queue {queue!r} holds run {found or '(unknown)'}, not this run {expected}: it was "
            "seeded from a different task list. Uninstall the old release (or `workqueue purge "
            "--yes`) or install under a new name")


def client_errors() -> tuple[type[BaseException], ...]:
    """What the broker clients raise that no layer of ours turned into a WorkqueueError."""
    import pika.exceptions
    import redis

    return redis.RedisError, pika.exceptions.AMQPError


def connection_errors() -> tuple[type[BaseException], ...]:
    """Of those, and of the system's, the ones that mean the broker could not be reached."""
    import pika.exceptions
    import redis

    return (redis.ConnectionError, redis.TimeoutError, pika.exceptions.AMQPConnectionError,
            ConnectionError, TimeoutError)


def broker_errors() -> tuple[type[BaseException], ...]:
    """Every way a broker call can fail for a reason outside this program."""
    return (WorkqueueError, OSError, *client_errors())
