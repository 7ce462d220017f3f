"""`workqueue` command line: seed, work, status, run-local, dead, retry-dead, purge, and
run-index (indexed mode, no broker).

Connection settings come from flags or, as in the chart's pods, from the environment:
WORKQUEUE_BROKER_URL, WORKQUEUE_BROKER_PASSWORD or WORKQUEUE_BROKER_PASSWORD_FILE (never a flag:
flags show in `ps`), WORKQUEUE_QUEUE.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version as package_version
from typing import NoReturn

from . import defaults, stopping, worker_metrics
from .broker import Broker, Status
from .brokers import connect, password_from_env
from .brokers.outage import reason
from .errors import (
    EXIT_BROKER_UNREACHABLE,
    EXIT_CONFIG,
    EXIT_DEAD,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    ConfigError,
    OtherRun,
    SeedRefused,
    StateLost,
    WorkqueueError,
    client_errors,
    connection_errors,
    exit_code_table,
    no_state_message,
    other_run_message,
    seed_refused_message,
)
from .handlers import (
    RESULT_MAX_CHARS,
    CommandHandler,
    FunctionHandler,
    Handler,
    import_handler,
)
from .indexed import INDEX_ENV, IndexedRun, attempt_from_env, task_at
from .local import LocalRun, run_local
from .progress import (
    dead_report,
    overall_rate,
    pace,
    plural,
    status_line,
    summary_table,
    verdict,
)
from .report import with_payloads, write_csv, write_jsonl
from .runner import MODES, Runner, WorkerConfig
from .seeding import seed
from .taskfile import FORMATS, TaskIndex, task_file

log = logging.getLogger(__name__)

SUMMARY_SAMPLE = 2000
"""Records `status` reads for its per-task table; `workqueue report` reads them all."""

EXAMPLES = """\
examples:
  workqueue run-local --tasks tasks.txt --parallelism 4 -- sh -c 'echo "Working on $1"' _ {}
  WORKQUEUE_BROKER_URL=redis://broker:6379/0 workqueue seed --tasks /tasks
  workqueue work --mode fine --max-attempts 3 -- ./process-one.sh {}
  workqueue status --watch 5
  workqueue dead --format text -o failed.txt && workqueue retry-dead

""" + exit_code_table()


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value} is too small; use {minimum} or more")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1, with a message that says so."""
    return _int_at_least(text, 1)


def local_parallelism(text: str) -> int:
    """argparse type for run-local: one process per worker, so at most LOCAL_WORKERS_PER_CPU
    per CPU of this machine. A hundred thousand once brought a machine to its knees."""
    value = positive_int(text)
    limit = defaults.LOCAL_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if value > limit:
        raise argparse.ArgumentTypeError(
            f"{value} worker processes on a machine with {os.cpu_count() or 1} CPUs: use at "
            f"most {limit} ({defaults.LOCAL_WORKERS_PER_CPU} per CPU), or run the chart on a "
            "cluster for more")
    return value


def whole_number(text: str) -> int:
    """argparse type: 0 or more."""
    return _int_at_least(text, 0)


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1 to 65535."""
    value = _int_at_least(text, 1)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port; use 1 to 65535")
    return value


def _seconds(text: str, allow_zero: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of seconds")
    if value < 0 or (value == 0 and not allow_zero):
        raise argparse.ArgumentTypeError(
            f"{value} must be {'0 or more' if allow_zero else 'above 0'}")
    return value


def _non_negative_float(text: str) -> float:
    return _seconds(text, allow_zero=True)


def _positive_float(text: str) -> float:
    return _seconds(text, allow_zero=False)


def _one_of(*choices: str) -> Callable[[str], str]:
    """argparse type: one of ``choices``; unlike argparse's own `choices`, it also checks a
    default taken from the environment."""
    def checked(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not one of {', '.join(choices)}")
        return text

    return checked


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"WORKQUEUE_{name}") or default


def _tunable(parser: argparse.ArgumentParser, flag: str, convert: Callable[[str], object],
             default: object, help_text: str) -> None:
    """An option that defaults to WORKQUEUE_<FLAG> (as the chart's pods set them), else to
    ``default``. argparse converts a string default like a typed value, so a bad variable gets
    the same one-line error as a bad flag, naming both."""
    env = "WORKQUEUE_" + flag.removeprefix("--").replace("-", "_").upper()

    def checked(text: str) -> object:
        try:
            return convert(text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (set by {flag} or {env})") from None

    parser.add_argument(flag, type=checked, default=os.environ.get(env) or str(default),
                        help=f"{help_text} (env {env}; default %(default)s)")


def _connection_args(parser: argparse.ArgumentParser, url_required: bool = True,
                     interactive: bool = False, patience: float | None = None) -> None:
    """Where the broker is and how long to wait for it. ``interactive`` commands (status,
    report, dead, retry-dead, purge) give up in seconds, since a person waits for them; others
    that must answer in time (the exporter's scrapes) give their own ``patience``."""
    parser.add_argument("--broker-url", default=_env("BROKER_URL"),
                        help="redis://HOST:PORT/DB or amqp://USER@HOST:PORT/VHOST, or one "
                             "amqp:// URL per node of a RabbitMQ cluster, separated by commas "
                             "(env WORKQUEUE_BROKER_URL); the password comes from "
                             "WORKQUEUE_BROKER_PASSWORD or the file named in "
                             "WORKQUEUE_BROKER_PASSWORD_FILE"
                             + ("" if url_required else
                             "; without it a private redis-server is started"))
    parser.add_argument("--broker-replicas", type=positive_int,
                        default=_env("BROKER_REPLICAS"),
                        help="RabbitMQ nodes each queue is replicated to: an odd number, at "
                             "most the cluster's size (env WORKQUEUE_BROKER_REPLICAS; default: "
                             "one per URL)")
    parser.add_argument("--queue", default=_env("QUEUE", defaults.QUEUE_NAME),
                        help="queue name (env WORKQUEUE_QUEUE; default %(default)s)")
    if interactive:
        patience = defaults.INTERACTIVE_WAIT_SECONDS
    _tunable(parser, "--connect-timeout", _positive_float,
             patience or defaults.CONNECT_TIMEOUT_SECONDS,
             "seconds to keep retrying an unreachable broker")
    _tunable(parser, "--outage-seconds", _positive_float, patience or defaults.OUTAGE_SECONDS,
             "seconds to keep retrying a broker that was reached and then went away")
    parser.add_argument("--run-id", default=_env("RUN_ID"),
                        help="the run this process serves (the chart sets it from the task "
                             "list); a queue seeded for another run is refused "
                             "(env WORKQUEUE_RUN_ID)")


def _task_args(parser: argparse.ArgumentParser) -> None:
    """How one task runs: what `work` and `run-index` share."""
    _tunable(parser, "--max-attempts", positive_int, defaults.MAX_ATTEMPTS,
             "runs of an item before it is dead-lettered")
    _tunable(parser, "--grace-seconds", _positive_float, defaults.GRACE_SECONDS,
             "after SIGTERM, time the running item gets")
    _tunable(parser, "--task-timeout", _non_negative_float, 0,
             "seconds a task's command may run before it is stopped (with its children) and "
             "the attempt fails; 0: no limit")


def _handler_args(parser: argparse.ArgumentParser) -> None:
    """What runs each task: --handler, or the command after `--`."""
    parser.add_argument("--handler", default=_env("HANDLER"), metavar="MODULE:FUNCTION",
                        help="call this Python function with each item instead of running a "
                             "command (env WORKQUEUE_HANDLER); it raises to fail the item")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND",
                        help="run per item; gets the payload on stdin, in $WORKQUEUE_PAYLOAD "
                             "and in place of {}")


def _worker_args(parser: argparse.ArgumentParser) -> None:
    _tunable(parser, "--mode", _one_of(*MODES), "fine",
             "fine: drain the queue; coarse: settle one item and exit")
    _tunable(parser, "--batch-size", positive_int, defaults.BATCH_SIZE,
             "the most items leased per round trip in fine mode")
    _tunable(parser, "--batch-seconds", _non_negative_float, defaults.BATCH_SECONDS,
             "lease about this many seconds of work at once (judged by the last batch), up "
             "to --batch-size items; 0: always --batch-size")
    _tunable(parser, "--lease-seconds", _positive_float, defaults.LEASE_SECONDS,
             "lease length; renewed while the item runs")
    _task_args(parser)
    _tunable(parser, "--retry-delay", _non_negative_float, defaults.RETRY_DELAY_SECONDS,
             "seconds a failed item waits before its first retry, doubling (with jitter) for "
             "each later one; 0: retry at once")
    _tunable(parser, "--retry-delay-max", _positive_float, defaults.RETRY_DELAY_MAX_SECONDS,
             "longest wait before a retry, in seconds")
    _tunable(parser, "--on-dead", _one_of("fail", "succeed"), "fail",
             "exit code once drained with dead-lettered items: fail (3) or succeed (0)")
    _tunable(parser, "--seed-timeout", _positive_float, defaults.SEED_TIMEOUT_SECONDS,
             "seconds an idle worker waits for seeding to complete before it exits 7")
    _retry_round_arg(parser, "the retry-dead round to wait for before calling the queue "
                             "drained (the chart's retryDead)")
    parser.add_argument("--job-index", type=whole_number, default=os.environ.get(INDEX_ENV),
                        help=f"fine mode in the chart's Indexed worker Job (env {INDEX_ENV}, "
                             "which the Job controller sets): index 0 ends the Job once the "
                             "queue is drained; any other index exits 0 when stopped, so that "
                             "it is replaced at once, and waits for index 0 once drained")


def _retry_round_arg(parser: argparse.ArgumentParser, help_text: str) -> None:
    _tunable(parser, "--retry-dead-round", whole_number, 0, help_text)


class OneLineErrors(argparse.ArgumentParser):
    """A bad flag gets one line: the problem first, then where the help is, not the usage
    block before it (its subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class PackageVersion(argparse.Action):
    """--version: the installed package's version, looked up only when asked for (the
    metadata lookup costs a millisecond, and coarse mode starts a process per task)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **_kwargs: object) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                         nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> NoReturn:
        print(f"{parser.prog} {package_version('workqueue-job')}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used by tests to list the subcommands)."""
    parser = OneLineErrors(
        prog="workqueue", description="Reliable work queues on Redis or RabbitMQ.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=PackageVersion)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("seed", help="write a task list to the queue (idempotent)")
    _connection_args(p)
    p.add_argument("--tasks", default=_env("TASKS"),
                   help="task file, folder of *.jsonl chunks, or - for stdin (env WORKQUEUE_TASKS)")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="text (one task per line) or jsonl; auto goes by the file name")
    p.add_argument("--expect-count", type=positive_int, default=_env("EXPECT_COUNT"),
                   help="fail unless the source holds exactly this many tasks")
    p.add_argument("--batch-size", type=positive_int, default=defaults.SEED_BATCH_SIZE,
                   help="tasks per atomic write (default %(default)s)")
    _retry_round_arg(p, "once seeded, put the dead-lettered tasks back with fresh attempts, "
                        "once per round number (the chart's retryDead); 0: never")
    p.add_argument("--supersede", default=_env("SUPERSEDE"), metavar="FAMILY",
                   help="the queue (named FAMILY.RUN) replaces the family's previous queue, "
                        "whose state is deleted once the task list has been read; the chart "
                        "passes its release's family (env WORKQUEUE_SUPERSEDE)")

    p = sub.add_parser("work", help="lease and run items until the queue is drained")
    _connection_args(p)
    _worker_args(p)
    p.add_argument("--metrics-port", type=port_number, default=_env("METRICS_PORT"),
                   help="serve this worker's own metrics (tasks by outcome, run times, lease "
                        "renewals, broker outages) on this port, /metrics (env "
                        "WORKQUEUE_METRICS_PORT; default: none)")
    _tunable(p, "--capture-result", _one_of("false", "true"), "false",
             "true: keep each task's result in the report (the last line its command prints "
             "on stdout, or what its --handler function returns), up to "
             f"{RESULT_MAX_CHARS} characters")
    _handler_args(p)

    p = sub.add_parser("run-index", help="run the task at this pod's index of an Indexed Job "
                                         "(the chart's mode: indexed; no broker)")
    p.add_argument("--tasks", default=_env("TASKS"),
                   help="task file or folder of *.jsonl chunks (env WORKQUEUE_TASKS)")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="text (one task per line) or jsonl; auto goes by the file name")
    p.add_argument("--index", type=whole_number, default=os.environ.get(INDEX_ENV),
                   help=f"the task's 0-based index in the list (env {INDEX_ENV}, which the "
                        "Job controller sets)")
    p.add_argument("--expect-count", type=positive_int, default=_env("EXPECT_COUNT"),
                   help="fail unless the list holds exactly this many tasks (the Job's "
                        "completions), so that a missing chunk cannot shift the indexes")
    _task_args(p)
    _handler_args(p)

    p = sub.add_parser("status", help="show queue progress")
    _connection_args(p, interactive=True)
    p.add_argument("--watch", type=_positive_float, metavar="SECONDS",
                   help="print the status every SECONDS until the queue is drained")
    p.add_argument("--dead", type=positive_int, metavar="N", help="list up to N dead items")
    p.add_argument("--require-drained", action="store_true",
                   help="exit 1 unless drained, 3 if anything was dead-lettered (for helm test)")

    p = sub.add_parser("run-local", help="seed and drain a task file with local processes")
    _connection_args(p, url_required=False)
    _worker_args(p)
    p.add_argument("--tasks", required=True, help="task file (text or .jsonl)")
    p.add_argument("--parallelism", type=local_parallelism, default=2,
                   help="worker processes at once (default %(default)s; at most "
                        f"{defaults.LOCAL_WORKERS_PER_CPU} per CPU)")
    p.add_argument("--verbose", action="store_true", help="show each worker's log lines")
    p.add_argument("--metrics", action="store_true",
                   help="serve the queue's Prometheus metrics (`workqueue exporter`) on a free "
                        "loopback port while it runs, and print the URL")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND")

    p = sub.add_parser("dead", help="write the dead-lettered tasks as a task file, to re-run "
                                    "elsewhere or to inspect")
    _connection_args(p, interactive=True)
    p.add_argument("--format", choices=("jsonl", "text"), default="jsonl",
                   help="jsonl (one JSON string per task; any payload) or text (one task per "
                        "line); `workqueue seed` reads either back as it was seeded")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default stdout)")

    p = sub.add_parser("report", help="write how each settled task went: outcome, runs, run "
                                      "time, exit code, worker, error, result")
    _connection_args(p, interactive=True)
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl",
                   help="jsonl (one JSON object per task) or csv (a header row first)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (default stdout)")
    p.add_argument("--tasks", default=_env("TASKS"),
                   help="the task list that was seeded (file or folder of *.jsonl chunks; env "
                        "WORKQUEUE_TASKS, which the chart's tools pod sets): each row gets its "
                        "task's payload. It costs one pass over the list and 10 bytes of memory "
                        "per task. Without it, only dead tasks carry their payload")
    p.add_argument("--tasks-format", choices=FORMATS, default="auto",
                   help="the task list's format (default: by its name)")

    p = sub.add_parser("retry-dead", help="put the dead-lettered tasks back in the queue with "
                                          "fresh attempts (safe while workers run)")
    _connection_args(p, interactive=True)

    p = sub.add_parser("exporter", help="serve the queue's state as Prometheus metrics "
                                        "(read from the broker at each scrape)")
    _connection_args(p, patience=defaults.METRICS_BROKER_WAIT_SECONDS)
    p.add_argument("--address", default=_env("METRICS_ADDRESS", "0.0.0.0"),
                   help="address to listen on (env WORKQUEUE_METRICS_ADDRESS; default "
                        "%(default)s)")
    p.add_argument("--port", type=port_number, default=_env("METRICS_PORT", "9400"),
                   help="port of http://ADDRESS:PORT/metrics (env WORKQUEUE_METRICS_PORT; "
                        "default %(default)s)")
    _tunable(p, "--report-every", _positive_float, defaults.METRICS_REPORT_SECONDS,
             "seconds between two reads of the per-task report, whose durations and runs the "
             "metrics show (a million records take seconds to read); counts are read at every "
             "scrape")

    p = sub.add_parser("purge", help="delete the queue and all its records")
    _connection_args(p, interactive=True)
    p.add_argument("--yes", action="store_true", help="really delete")
    return parser


def _command(args: argparse.Namespace) -> list[str]:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("no command given: put the command to run per task after `--`, "
                          "e.g. -- sh -c 'echo $WORKQUEUE_PAYLOAD'")
    return cmd


def _open(args: argparse.Namespace):
    if not args.broker_url:
        raise ConfigError("no broker given: set WORKQUEUE_BROKER_URL or pass --broker-url")
    return connect(args.broker_url, args.queue, password_from_env(),
                   args.connect_timeout, args.outage_seconds, args.broker_replicas)


def _worker_config(args: argparse.Namespace) -> WorkerConfig:
    return WorkerConfig(mode=args.mode, batch_size=args.batch_size,
                        batch_seconds=args.batch_seconds,
                        lease_seconds=args.lease_seconds, max_attempts=args.max_attempts,
                        retry_delay_seconds=args.retry_delay,
                        retry_delay_max_seconds=args.retry_delay_max,
                        grace_seconds=args.grace_seconds, fail_on_dead=args.on_dead == "fail",
                        run_id=args.run_id, seed_timeout_seconds=args.seed_timeout,
                        retry_round=args.retry_dead_round, job_index=args.job_index)


def cmd_seed(args: argparse.Namespace) -> int:
    if not args.tasks:
        raise ConfigError("no tasks given: pass --tasks FILE or set WORKQUEUE_TASKS")
    broker = _open(args)
    try:
        seed(broker, args.tasks, args.format, args.batch_size, args.expect_count, args.run_id,
             args.supersede)
        if args.retry_dead_round:
            moved = broker.retry_dead(args.retry_dead_round)
            print_retried(moved, args.retry_dead_round)
    finally:
        broker.close()
    return 0


def _handler(args: argparse.Namespace, capture_result: bool = False) -> Handler:
    if args.handler and args.cmd:
        raise ConfigError("give either --handler or a command after `--`, not both")
    if args.handler and args.task_timeout:
        raise ConfigError("--task-timeout stops commands; a --handler function cannot be "
                          "stopped safely, so time it out inside the function instead")
    return (FunctionHandler(import_handler(args.handler), capture_result) if args.handler
            else CommandHandler(_command(args), args.task_timeout, capture_result))


def cmd_work(args: argparse.Namespace) -> int:
    handler = _handler(args, args.capture_result == "true")
    if args.metrics_port:
        worker_metrics.serve(args.metrics_port)
    config = _worker_config(args)
    # Before connecting: a pod stopped while its broker is not up yet exits at once, with the
    # code of any stop (WorkerConfig.stop_code: 0 for a replaceable life, so that the Job
    # controller's backoff does not grow).
    signal.signal(signal.SIGTERM, lambda *_: stopping.ask())
    try:
        broker = _open(args)
    except stopping.Stopped as exc:
        print(f"workqueue: {exc}; it held no task", file=sys.stderr)
        return config.stop_code
    runner = Runner(broker, handler, config)
    signal.signal(signal.SIGTERM, lambda *_: runner.request_stop())
    try:
        return runner.run()
    finally:
        broker.close()


def cmd_run_index(args: argparse.Namespace) -> int:
    if args.index is None:
        raise ConfigError(f"{INDEX_ENV} is not set: run-index runs in the pods of an Indexed Job "
                          "(completionMode: Indexed), or give --index N")
    if not args.tasks:
        raise ConfigError("no tasks given: pass --tasks FILE or set WORKQUEUE_TASKS")
    handler = _handler(args)
    attempt = attempt_from_env(os.environ)
    payload = task_at(args.tasks, args.index, args.format, args.expect_count)
    run = IndexedRun(handler, args.grace_seconds)
    signal.signal(signal.SIGTERM, lambda *_: run.request_stop())
    return run.run(args.index, payload, attempt, args.max_attempts)


class EnvSettings:
    """The broker and worker settings from WORKQUEUE_* alone, checked as `workqueue work`
    checks them (the Python API's run_worker uses these)."""

    def __init__(self) -> None:
        parser = OneLineErrors(prog="workqueue")
        _connection_args(parser)
        _worker_args(parser)
        self.args = parser.parse_args([])

    def broker(self) -> Broker:
        return _open(self.args)

    def config(self) -> WorkerConfig:
        return _worker_config(self.args)


def cmd_status(args: argparse.Namespace) -> int:
    broker = _open(args)
    try:
        status = broker.status()
        rate = overall_rate(status, time.time())
        while args.watch and not status.drained:
            print(" · ".join(filter(None, [status_line(status), pace(status, rate)])),
                  flush=True)
            time.sleep(args.watch)
            before, status = status, broker.status()
            # The pace of the last interval: it follows changes that the overall one hides.
            recent = (status.done + status.dead - before.done - before.dead) / args.watch
            rate = recent or overall_rate(status, time.time())
        refusal = None if status.seeded else broker.seed_refusal()
        problem = (SeedRefused(seed_refused_message(broker.queue, refusal))
                   if refusal else _wrong_state(status, args.run_id, broker.queue, broker.server))
        if problem:
            print(f"workqueue: error: {problem}")
        else:
            print(status_line(status))
            if not status.drained and (line := pace(status, rate)):
                print(line)
            table = summary_table(broker.record_sample(SUMMARY_SAMPLE),
                                  status.done + status.dead)
            if table:
                print(table)
            print(verdict(status))
        if args.dead and status.dead:
            print(dead_report(broker.dead_items(args.dead)))
        if problem and (args.require_drained or not status.exists):
            return problem.exit_code
        if args.require_drained:
            if not status.drained:
                return 1
            return EXIT_DEAD if status.dead else 0
        return 0
    finally:
        broker.close()


def _wrong_state(status: Status, run_id: str | None, queue: str,
                 server: str) -> WorkqueueError | None:
    """Why the queue cannot be this run's: none at all (with ``run_id``, where the run should
    have some, as the helm test runs once the job is over), or another run's."""
    if not status.exists:
        if run_id:
            return StateLost(no_state_message(queue, server, run_id))
        return WorkqueueError(f"queue {queue!r} holds nothing on {server}: it is not seeded yet, "
                              "or its name is wrong (--queue or WORKQUEUE_QUEUE)")
    if not run_id:
        return None
    if status.run not in (None, run_id):
        return OtherRun(other_run_message(queue, status.run, run_id))
    return None


def cmd_run_local(args: argparse.Namespace) -> int:
    worker_args = ["--batch-size", str(args.batch_size), "--batch-seconds",
                   str(args.batch_seconds), "--lease-seconds",
                   str(args.lease_seconds), "--max-attempts", str(args.max_attempts),
                   "--grace-seconds", str(args.grace_seconds), "--on-dead", args.on_dead,
                   "--task-timeout", str(args.task_timeout), "--retry-delay",
                   str(args.retry_delay), "--retry-delay-max", str(args.retry_delay_max)]
    run = LocalRun(tasks=args.tasks, command=_command(args), parallelism=args.parallelism,
                   mode=args.mode, queue=args.queue, worker_args=worker_args,
                   fail_on_dead=args.on_dead == "fail", grace_seconds=args.grace_seconds,
                   verbose=args.verbose, metrics=args.metrics)
    CommandHandler(run.command)
    return run_local(run, args.broker_url, password_from_env())


def print_retried(moved: int | None, round_number: int = 0) -> None:
    if moved is None:
        log.info("retry round %d was already applied; nothing to put back", round_number)
    else:
        log.info("put %s back in the queue with fresh attempts", plural(moved, "dead task"))


def cmd_dead(args: argparse.Namespace) -> int:
    broker = _open(args)
    try:
        items = broker.dead_items(sys.maxsize)
    finally:
        broker.close()
    text = task_file([item.payload for item in items], args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
        log.info("wrote %s to %s", plural(len(items), "dead task"), args.output)
    else:
        sys.stdout.write(text)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    broker = _open(args)
    writer = write_csv if args.format == "csv" else write_jsonl
    try:
        problem = _wrong_state(broker.status(), args.run_id, broker.queue, broker.server)
        if problem:
            raise problem
        index = TaskIndex(args.tasks, args.tasks_format) if args.tasks else None
        rows = broker.report() if index is None else with_payloads(broker.report(), index)
        with (open(args.output, "w", encoding="utf-8", newline="") if args.output
              else contextlib.nullcontext(sys.stdout)) as out:
            out.writelines(writer(rows))
    finally:
        broker.close()
    if args.output:
        log.info("wrote the report to %s", args.output)
    return 0


def cmd_retry_dead(args: argparse.Namespace) -> int:
    broker = _open(args)
    try:
        print_retried(broker.retry_dead())
    finally:
        broker.close()
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    if not args.yes:
        raise ConfigError(f"purge deletes queue {args.queue!r} and its results; add --yes")
    broker = _open(args)
    try:
        broker.purge()
        print(f"purged queue {args.queue!r}")
    finally:
        broker.close()
    return 0


def cmd_exporter(args: argparse.Namespace) -> int:
    from .exporter import serve

    if not args.broker_url:
        raise ConfigError("no broker given: set WORKQUEUE_BROKER_URL or pass --broker-url")
    signal.signal(signal.SIGTERM, lambda *_: stopping.ask())
    return serve(lambda: _open(args), args.queue, args.address, args.port, args.report_every)


COMMANDS = {"seed": cmd_seed, "work": cmd_work, "run-index": cmd_run_index, "status": cmd_status,
            "run-local": cmd_run_local, "dead": cmd_dead, "report": cmd_report,
            "retry-dead": cmd_retry_dead, "exporter": cmd_exporter,
            "purge": cmd_purge}


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one-line errors, never a traceback, for every expected failure."""
    level = (_env("LOG_LEVEL", "INFO") or "INFO").upper()
    if level not in LOG_LEVELS:
        print(f"workqueue: error: WORKQUEUE_LOG_LEVEL={level!r} is not one of "
              f"{', '.join(LOG_LEVELS)}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except WorkqueueError as exc:
        print(f"workqueue: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("workqueue: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Whoever read our output stopped (`| head`): not an error of ours, nor the broker's.
        # Python would fail again flushing stdout at exit, so it is pointed at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (OSError, *client_errors()) as exc:
        # Errors of the broker clients that no layer above turned into a WorkqueueError: one
        # line, and a retry by the Job (exit 1), or FailJob when the broker stays away (5).
        unreachable = isinstance(exc, connection_errors())
        what = "lost the broker" if unreachable else "broker error"
        print(f"workqueue: error: {what}: {type(exc).__name__}: {reason(exc)}",
              file=sys.stderr)
        return EXIT_BROKER_UNREACHABLE if unreachable else EXIT_ERROR
