"""A task command's pipes served from one thread (workqueue/command_io.py), with real processes."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import time

import pytest

from workqueue.command_io import CommandPipes, LineTail
from workqueue.handlers import CommandHandler
from workqueue.message import Item
from workqueue.spawn import Command

SH = shutil.which("sh") or "/bin/sh"


def started(script: str, stdout: bool = False) -> Command:
    return Command(SH, ["sh", "-c", script], {b"PATH": os.environb[b"PATH"]}, stdout)


def test_a_tail_keeps_the_last_non_blank_lines_across_chunks():
    copy = io.BytesIO()
    tail = LineTail(copy, 2, 5)
    for chunk in (b"one\ntw", b"o\n\n  \nthree-and-more\nfo", b"ur"):
        tail.feed(chunk)
    tail.end()
    assert list(tail.lines) == ["three", "four"]
    assert copy.getvalue() == b"one\ntwo\n\n  \nthree-and-more\nfour"


def test_a_command_that_fills_stderr_before_reading_stdin_does_not_deadlock():
    # 200 KiB of stderr first (a pipe holds 64 KiB), then all of a 300 KiB stdin: served one
    # at a time, each side would wait on the other for good
    proc = started("head -c 204800 /dev/zero | tr '\\0' x >&2; echo >&2; echo >&2 last words; "
                   "wc -c >&2")
    tail = LineTail(io.BytesIO(), 2, 50)
    pipes = CommandPipes(proc, b"y" * 300_000, {proc.stderr: tail})  # type: ignore[dict-item]
    assert pipes.until_exit(time.monotonic() + 30)
    pipes.drain(1)
    assert proc.returncode == 0
    assert list(tail.lines) == ["last words", "300000"]


def test_a_process_left_holding_the_pipes_does_not_hold_up_the_exit():
    proc = started("sleep 30 & echo done >&2")
    pipes = CommandPipes(proc, b"\n", {proc.stderr: LineTail(io.BytesIO(), 1, 50)})  # type: ignore[dict-item]
    began = time.monotonic()
    assert pipes.until_exit(time.monotonic() + 10)
    assert time.monotonic() - began < 5
    os.killpg(proc.pid, signal.SIGKILL)
    pipes.drain(1)


def test_the_deadline_ends_the_wait_for_a_command_that_runs_on():
    proc = started("exec sleep 30")
    pipes = CommandPipes(proc, b"\n", {proc.stderr: LineTail(io.BytesIO(), 1, 50)})  # type: ignore[dict-item]
    assert not pipes.until_exit(time.monotonic() + 0.3)
    os.kill(proc.pid, signal.SIGKILL)
    assert pipes.until_exit(None)
    pipes.drain(1)


def test_a_command_that_never_reads_stdin_gets_no_broken_pipe_error():
    proc = started("echo out; exit 3", stdout=True)
    result = LineTail(io.BytesIO(), 1, 50)
    pipes = CommandPipes(proc, b"z" * 200_000, {proc.stderr: LineTail(io.BytesIO(), 1, 50),  # type: ignore[dict-item]
                                                proc.stdout: result})
    assert pipes.until_exit(time.monotonic() + 10)
    pipes.drain(1)
    assert proc.returncode == 3
    assert list(result.lines) == ["out"]


def output_of(script: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``script`` run as the worker runs a task's command."""
    proc = started(script, stdout=True)
    out, err = LineTail(io.BytesIO(), 50, 200), LineTail(io.BytesIO(), 50, 200)
    pipes = CommandPipes(proc, b"", {proc.stdout: out, proc.stderr: err})  # type: ignore[dict-item]
    assert pipes.until_exit(time.monotonic() + 30)
    pipes.drain(1)
    return proc.returncode, " ".join(out.lines), " ".join(err.lines)  # type: ignore[return-value]


def test_a_spawned_command_leads_a_process_group_of_its_own():
    code, out, _ = output_of("ps -o pid= -o pgid= -o sid= -p $$")
    pid, pgid, sid = out.split()
    assert code == 0 and pid == pgid == sid


def test_a_spawned_command_gets_sigpipe_back_so_pipelines_end_quietly():
    # Python ignores SIGPIPE, and an ignored signal would stay ignored across exec: `yes`
    # would then fail with "Broken pipe" on stderr instead of ending at once
    code, out, err = output_of("yes | head -n 1; trap")
    assert (code, out, err) == (0, "y", "")


def test_a_task_command_inherits_no_descriptor_but_its_three():
    # One this process inherited (as a worker may from whatever started it)
    held = os.open(os.devnull, os.O_RDONLY)
    os.set_inheritable(held, True)
    try:
        handler = CommandHandler(["ls", "-m", "/proc/self/fd"], capture_result=True)
        listing = handler.run(Item("1", "x", 1))
    finally:
        os.close(held)
    # ls lists its three and the one it reads the listing with
    assert listing == "0, 1, 2, 3"


def test_a_command_that_cannot_start_raises_and_leaks_no_pipe():
    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError):
        Command("/nonexistent/program", ["program"], {}, True)
    assert len(os.listdir("/proc/self/fd")) == before


def test_wait_times_out_on_a_running_command_then_reaps_it():
    proc = started("exec sleep 30")
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL
    proc.stdin.close()
    proc.stderr.close()
