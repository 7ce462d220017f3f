"""The Kubernetes Job controller, played for `workqueue work` processes on this machine.

It takes a Job the chart renders and starts, counts and replaces processes by the rules of
kubernetes/kubernetes pkg/controller/job:

- podFailurePolicy (pod_failure_policy.go, matchPodFailurePolicy): rules in order, the first
  that matches decides; FailJob fails the Job at once, Ignore does not count the failure,
  Count (or no match) counts it against backoffLimit, and more than backoffLimit counted
  failures fail the Job (BackoffLimitExceeded).
- Backoff (backoff_utils.go, newBackoffRecord / getRemainingTimeForFailuresCount): a new pod
  waits base * 2^(n-1), up to a cap, after the last failure, where n counts every failed pod
  since the last success, ignored ones included (kubernetes#119434). Only a success resets n.
- podReplacementPolicy Failed (the only value with a podFailurePolicy): a pod is replaced only
  once it has ended.
- Completions: an Indexed Job runs the lowest pending indexes (firstPendingIndexes), and a
  succeeded index never runs again; its successPolicy (succeededIndexes) ends it once those
  indexes succeed, terminating the rest (SuccessCriteriaMet, then Complete). A NonIndexed Job
  without completions creates no pod once one succeeded, and completes when the last ends.

Every pod a test starts ends with the test: `stop` terminates and then kills what is left.
"""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pod_processes import ForkedPod, start_pod

DEFAULT_BACKOFF_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 600.0
"""pkg/controller/job/job_controller.go: DefaultJobPodFailureBackOff, MaxJobPodFailureBackOff."""
MAX_PODS = 500
"""No test starts more processes than this: a loop that would is a bug, not a test."""


@dataclass
class Pod:
    process: ForkedPod | subprocess.Popen[bytes]
    index: int | None
    log: Path
    started: float = field(default_factory=time.monotonic)


@dataclass
class Verdict:
    """How the Job ended: complete or failed, with the controller's reason and message."""

    state: str
    reason: str
    message: str = ""


@dataclass
class LocalJob:
    """One rendered Job's worth of processes. ``time_scale`` shortens the backoff (0.1: a
    1 s first wait instead of 10 s) so that a test of minutes models an hour's churn."""

    job: dict
    argv: list[str]
    env: dict[str, str]
    logs: Path
    time_scale: float = 1.0
    pods: list[Pod] = field(default_factory=list)
    exits: list[tuple[int | None, int]] = field(default_factory=list)
    """(index, exit code) of every pod that ended, in order."""
    succeeded: set[int] = field(default_factory=set)
    """Succeeded indexes (Indexed), or one entry per succeeded pod (NonIndexed)."""
    counted_logs: list[Path] = field(default_factory=list)
    """The log of each pod whose failure was counted against backoffLimit."""
    failures_since_success: int = 0
    last_failure: float | None = None
    started: int = 0
    verdict: Verdict | None = None
    longest_without_pods: float = 0.0
    """The longest time no pod ran while the Job was unfinished: a stalled run."""
    _no_pods_since: float | None = None

    @property
    def counted_failures(self) -> int:
        return len(self.counted_logs)

    def __post_init__(self) -> None:
        spec = self.job["spec"]
        self.indexed = spec.get("completionMode") == "Indexed"
        self.completions = spec.get("completions")
        self.parallelism = spec.get("parallelism", 1)
        self.backoff_limit = spec.get("backoffLimit", 6)
        self.rules = (spec.get("podFailurePolicy") or {}).get("rules", [])
        self.success_indexes = {
            int(text) for rule in (spec.get("successPolicy") or {}).get("rules", [])
            for text in rule["succeededIndexes"].split(",")}
        self.logs.mkdir(parents=True, exist_ok=True)

    # -- the rules

    def action(self, code: int) -> tuple[str, int | None]:
        """(FailJob, Ignore or Count, index of the matching rule) for a container exit code."""
        for number, rule in enumerate(self.rules):
            on_exit = rule.get("onExitCodes")
            if not on_exit:
                continue  # pod conditions (DisruptionTarget): no process here has them
            inside = code in on_exit["values"]
            if inside == (on_exit["operator"] == "In"):
                return rule["action"], number
        return "Count", None

    def backoff_left(self, now: float) -> float:
        """Seconds before the controller may create another pod."""
        if not self.failures_since_success or self.last_failure is None:
            return 0.0
        delay = DEFAULT_BACKOFF_SECONDS * self.time_scale
        for _ in range(1, self.failures_since_success):
            delay *= 2
            if delay >= MAX_BACKOFF_SECONDS * self.time_scale:
                delay = MAX_BACKOFF_SECONDS * self.time_scale
                break
        return max(0.0, delay - (now - self.last_failure))

    def _wanted(self) -> list[int | None]:
        """What new pods to start now: their indexes (None for a NonIndexed Job)."""
        room = self.parallelism - len(self.pods)
        if room <= 0:
            return []
        if self.indexed:
            busy = {pod.index for pod in self.pods}
            pending = (i for i in range(self.completions)
                       if i not in self.succeeded and i not in busy)
            return list(itertools.islice(pending, room))
        if self.completions is None:
            return [] if self.succeeded else [None] * room
        left = self.completions - len(self.succeeded) - len(self.pods)
        return [None] * max(0, min(room, left))

    # -- running it

    def step(self) -> Verdict | None:
        """Reap ended pods, decide, start new ones; the verdict once the Job has ended."""
        now = time.monotonic()
        for pod in [p for p in self.pods if p.process.poll() is not None]:
            self.pods.remove(pod)
            self._ended(pod, pod.process.returncode, now)
            if self.verdict:
                self.stop()
                return self.verdict
        if self._done():
            self.stop()
            return self.verdict
        if self.backoff_left(now) == 0:
            for index in self._wanted():
                self._start(index)
        if self.pods:
            self._no_pods_since = None
        elif self._no_pods_since is None:
            self._no_pods_since = now
        else:
            self.longest_without_pods = max(self.longest_without_pods,
                                            now - self._no_pods_since)
        return None

    def _ended(self, pod: Pod, code: int, now: float) -> None:
        code = 128 - code if code < 0 else code  # as the kubelet reports a signal
        self.exits.append((pod.index, code))
        if code == 0:
            self.succeeded.add(pod.index if self.indexed else len(self.exits))
            self.failures_since_success = 0
            return
        self.failures_since_success += 1
        self.last_failure = now
        action, rule = self.action(code)
        if action == "FailJob":
            self.verdict = Verdict("failed", "PodFailurePolicy",
                                   f"Container worker for pod {pod.process.pid} failed with exit "
                                   f"code {code} matching FailJob rule at index {rule}")
        elif action == "Count":
            self.counted_logs.append(pod.log)
            if self.counted_failures > self.backoff_limit:
                self.verdict = Verdict("failed", "BackoffLimitExceeded",
                                       "Job has reached the specified backoff limit")

    def _done(self) -> bool:
        if self.indexed and self.success_indexes:
            if self.success_indexes <= self.succeeded:
                self.verdict = Verdict("complete", "SuccessPolicy")
        elif self.indexed or self.completions is not None:
            if len(self.succeeded) >= self.completions:
                self.verdict = Verdict("complete", "CompletionsReached")
        elif self.succeeded and not self.pods:
            self.verdict = Verdict("complete", "CompletionsReached")
        return self.verdict is not None

    def _start(self, index: int | None) -> None:
        if self.started >= MAX_PODS:
            raise AssertionError(f"the Job started {MAX_PODS} pods: a runaway loop")
        self.started += 1
        env = {**os.environ, **self.env}
        if index is not None:
            env["JOB_COMPLETION_INDEX"] = str(index)
        log = self.logs / f"pod-{self.started:03d}-index-{index}.log"
        self.pods.append(Pod(start_pod(self.argv, env, log), index, log))

    def signal(self, signum: int, pick: random.Random | None = None,
               where: Callable[[Pod], bool] = lambda _pod: True) -> Pod | None:
        """Send ``signum`` to one running pod ``where`` says (a random one with ``pick``), as
        a deletion (SIGTERM), a forced one past its grace or an OOM kill (SIGKILL) would."""
        pods = [pod for pod in self.pods if where(pod)]
        if not pods:
            return None
        pod = (pick or random).choice(pods)
        os.kill(pod.process.pid, signum)
        return pod

    def run(self, timeout: float, chaos=None) -> Verdict:
        """Step until the verdict, calling ``chaos(self)`` between steps; fails after
        ``timeout`` seconds, saying what ran."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                verdict = self.step()
                if verdict is not None:
                    return verdict
                if chaos is not None:
                    chaos(self)
                time.sleep(0.02)
            raise AssertionError(f"the Job did not end within {timeout:.0f}s: {len(self.pods)} "
                                 f"pods running, exits {self.exits[-10:]}, logs in {self.logs}")
        finally:
            self.stop()

    def stop(self, grace: float = 20.0) -> None:
        """Terminate every pod still running (as the controller does once the Job ends), and
        kill what outlives ``grace``."""
        for pod in self.pods:
            if pod.process.poll() is None:
                pod.process.terminate()
        deadline = time.monotonic() + grace
        for pod in self.pods:
            try:
                pod.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pod.process.kill()
                pod.process.wait()
            self.exits.append((pod.index, pod.process.returncode))
        self.pods.clear()

    def text(self) -> str:
        """Every pod's log, for failure messages."""
        return self._logs(sorted(self.logs.glob("pod-*.log")))

    def counted_text(self) -> str:
        """The logs of the pods whose failures were counted, for failure messages."""
        return self._logs(self.counted_logs)

    @staticmethod
    def _logs(paths: list[Path]) -> str:
        return "\n".join(f"== {log.name}\n{log.read_text()}" for log in paths)
