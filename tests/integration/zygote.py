"""A small Python process that forks the workers of jobs.ForkedJob.

Forking costs what the parent has mapped: from a pytest process of 110-190 MB (what a full run's
test processes hold by the time the drains run), 2,000 one-task workers spent twice the system
time of the same run forked from a fresh process (64 s against 35 s, Redis coarse drain). So a
ForkedJob starts this process once, with the worker's modules loaded (both brokers' clients: a
worker that imported its own would spend more than the fork saves), and asks it for each worker.

Run as a script, ``python zygote.py``, it takes pickled tuples on its stdin and answers on its
stdout (multiprocessing.connection):

- ("start", spec) forks a worker running jobs.run_spec(spec); answers ("started", pid).
- ("poll",) answers ("ended", [(pid, exitcode), ...]) for the workers that ended since, with
  exit codes as multiprocessing gives them (-9 for SIGKILL).
- End of input (the ForkedJob closed it, or its process died): every worker still running is
  killed by pid and reaped, and the zygote exits.
"""

from __future__ import annotations

import importlib
import os
import signal
from multiprocessing.connection import Connection

import redis

from jobs import run_spec


def _reap(running: set[int]) -> list[tuple[int, int]]:
    ended = []
    for pid in list(running):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            running.discard(pid)
            ended.append((pid, os.waitstatus_to_exitcode(status)))
    return ended


def serve(requests: Connection, answers: Connection) -> None:
    running: set[int] = set()
    try:
        while True:
            try:
                request = requests.recv()
            except EOFError:
                return
            if request[0] == "start":
                pid = os.fork()
                if pid == 0:
                    requests.close()
                    answers.close()
                    run_spec(request[1])  # ends the process
                running.add(pid)
                answers.send(("started", pid))
            else:
                answers.send(("ended", _reap(running)))
    finally:
        for pid in running:
            os.kill(pid, signal.SIGKILL)
        for pid in running:
            os.waitpid(pid, 0)


if __name__ == "__main__":
    # What a worker would otherwise load or read on its first connection, every time: the
    # clients, the codec a socket's host name goes through (4 ms), and redis-py's version, read
    # from its package metadata (11 ms; a one-task worker takes 30 ms).
    for module in ("workqueue.brokers.redis", "workqueue.brokers.rabbitmq", "encodings.idna"):
        importlib.import_module(module)
    redis.connection.Connection()
    # The pipes move off fds 0 and 1, so that nothing a worker prints can reach them.
    pipes = Connection(os.dup(0)), Connection(os.dup(1))
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    serve(*pipes)
