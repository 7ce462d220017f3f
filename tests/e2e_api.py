"""What the e2e suite asks a real API server, written for the answers it really gives (seen on
a Kubernetes 1.36 cluster, ../shared/evidence): an empty log comes back as None, a container
that has not started answers 400, a pod deleted between a list and a read answers 404 and its
log is gone with it, and a Job may have no pods yet. Every wait is bounded and says what it
was waiting for. The unit tests drive these functions through the real Python client, fed
recorded responses (tests/unit/test_e2e_api.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from kubernetes.client.exceptions import ApiException

T = TypeVar("T")

NOT_STARTED = ("is waiting to start", "is not available", "PodInitializing",
               "ContainerCreating")
"""How the API server's 400 says a container has no log yet."""


class CaseTimeout(AssertionError):
    """A bounded wait ran out; the message names what it waited for and what it last saw."""


def wait_until(what: str, probe: Callable[[], T | None], timeout: float,
               seen: Callable[[], str] = lambda: "", interval: float = 3.0,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """``probe()``'s first answer that is not None, polled every ``interval`` seconds. Past
    ``timeout``: CaseTimeout naming ``what`` and ``seen()``, the state last observed."""
    deadline = clock() + timeout
    while True:
        answer = probe()
        if answer is not None:
            return answer
        if clock() >= deadline:
            last = seen()
            raise CaseTimeout(f"gave up after {timeout:.0f} s waiting for {what}"
                              + (f"; last seen: {last}" if last else ""))
        sleep(interval)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or "")
    except ValueError:
        return str(exc.body or "")


def pod_log(core: Any, pod: str, namespace: str, container: str = "worker",
            tail_lines: int | None = None) -> str:
    """The container's log so far, or "" when there is none to read: an empty log (None from
    the client), a container not started yet (400), a pod already gone (404). Any other
    error is a real one and raises."""
    extra = {"tail_lines": tail_lines} if tail_lines else {}
    try:
        text = core.read_namespaced_pod_log(pod, namespace, container=container, **extra)
    except ApiException as exc:
        if exc.status == 404:
            return ""
        if exc.status == 400 and any(words in _message(exc) for words in NOT_STARTED):
            return ""
        raise
    return text or ""


def logs_of_pods(core: Any, namespace: str, selector: str = "",
                 container: str | None = None) -> dict[str, str]:
    """Pod name -> log of each pod that exists now (``container`` None: its first)."""
    logs = {}
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        name = container or pod.spec.containers[0].name
        logs[pod.metadata.name] = pod_log(core, pod.metadata.name, namespace, name)
    return logs


def pod_states(pods: Iterable[Any]) -> str:
    """One line per pod as people read it: its phase, and why it waits or is unschedulable
    ("broker-0 Pending (Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.)")."""
    lines = []
    for pod in pods:
        why = ""
        for condition in pod.status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                why = f"{condition.reason}: {condition.message}"
        for status in [*(pod.status.init_container_statuses or []),
                       *(pod.status.container_statuses or [])]:
            waiting = status.state.waiting if status.state else None
            if waiting and not why:
                why = waiting.reason or ""
        deleting = ", deleting" if pod.metadata.deletion_timestamp else ""
        lines.append(f"{pod.metadata.name} {pod.status.phase}{deleting}"
                     + (f" ({why})" if why else ""))
    return "; ".join(lines) or "no pods"


def live_jobs(batch: Any, namespace: str, selector: str) -> list[Any]:
    """The Jobs the selector finds, without those being deleted (after an upgrade, Helm
    removes the old worker Job while the new one runs)."""
    return [job for job in batch.list_namespaced_job(namespace, label_selector=selector).items
            if not job.metadata.deletion_timestamp]


def evict(core: Any, pod: str, namespace: str) -> None:
    """Evict through the Eviction API, as `kubectl drain` and the node-pressure and
    preemption paths do: the pod gets a DisruptionTarget condition, which the chart's
    podFailurePolicy ignores."""
    from kubernetes import client

    core.create_namespaced_pod_eviction(pod, namespace, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=pod, namespace=namespace)))


@dataclass(frozen=True)
class ReportSummary:
    """The per-task report (`workqueue report --format jsonl`) summed up."""

    done: int
    dead: int
    pending: int
    runs: int
    """Every charged run of every task."""
    dead_payloads: tuple[str, ...]

    def line(self) -> str:
        return f"{self.done} done, {self.dead} dead, {self.runs} runs"


def summarize_report(jsonl: str) -> ReportSummary:
    # JSON Lines end at "\n" only: str.splitlines() would also cut a row at a U+2028 in it.
    rows = [json.loads(line) for line in jsonl.split("\n") if line.strip()]
    outcomes = [row["outcome"] for row in rows]
    return ReportSummary(outcomes.count("done"), outcomes.count("dead"),
                         outcomes.count("pending"), sum(int(row["attempts"]) for row in rows),
                         tuple(sorted(row.get("payload") or row["id"] for row in rows
                                      if row["outcome"] == "dead")))


def wq_function(notes: str) -> str:
    """The `wq` shell function NOTES.txt tells people to define, as they would copy it."""
    lines = notes.splitlines()
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("wq() {")),
                 None)
    if start is None:
        raise AssertionError("the release's NOTES define no wq() function")
    end = next(i for i in range(start, len(lines)) if lines[i].rstrip().endswith("}"))
    return "\n".join(lines[start:end + 1])


def save_bundle(folder: Path, core: Any, namespace: str,
                extras: Mapping[str, Callable[[], str]]) -> Path:
    """Write what explains a failed case into ``folder``: the namespace's events in order,
    its pods' states, the logs of the pods that still exist, and each of ``extras`` (helm
    status, the report). A piece that cannot be read says why in its file, and the rest is
    still written."""
    folder.mkdir(parents=True, exist_ok=True)

    def write(name: str, produce: Callable[[], str]) -> None:
        try:
            text = produce()
        except Exception as exc:
            text = f"could not read {name}: {exc}"
        (folder / name).write_text(text, encoding="utf-8")

    def events() -> str:
        items = core.list_namespaced_event(namespace).items
        items.sort(key=lambda e: str(e.last_timestamp or e.event_time or ""))
        return "".join(f"{e.last_timestamp or e.event_time} {e.type} {e.reason} "
                       f"{e.involved_object.kind}/{e.involved_object.name}: {e.message}\n"
                       for e in items)

    write("events.txt", events)
    write("pods.txt", lambda: pod_states(core.list_namespaced_pod(namespace).items) + "\n")
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    try:
        for pod, text in logs_of_pods(core, namespace).items():
            (logs / f"{pod}.log").write_text(text, encoding="utf-8")
    except ApiException as exc:
        (logs / "ERROR.txt").write_text(f"could not list or read pods: {exc}")
    for name, produce in extras.items():
        write(name, produce)
    return folder
