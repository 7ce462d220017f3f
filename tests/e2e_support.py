"""Pieces of the kind end-to-end run that do not need a cluster, so they can be tested here."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping

KIND_HELP = ("kind not found: install it (https://kind.sigs.k8s.io/docs/user/quick-start/, e.g. "
             "`go install sigs.k8s.io/kind@v0.27.0`), or point KUBECONFIG/E2E_CONTEXT at a cluster")
LEFTOVER_KINDS = ("pods", "jobs", "statefulsets", "services", "secrets", "configmaps",
                  "networkpolicies", "serviceaccounts", "persistentvolumeclaims")


def progress(message: str) -> None:
    """One line of progress, straight to the terminal (pytest -s)."""
    print(f"e2e: {message}", file=sys.stderr, flush=True)


def missing_tools(env: Mapping[str, str], docker_problem: str | None) -> str | None:
    """Why the e2e run cannot start, or None. ``docker_problem`` comes from the engine check."""
    existing = bool(env.get("E2E_CONTEXT") or env.get("KUBECONFIG"))
    if existing:
        if not env.get("E2E_IMAGE") and docker_problem:
            return (f"Docker engine unavailable ({docker_problem}); to use an existing cluster "
                    "without Docker, push the image and set E2E_IMAGE=registry/workqueue-job:tag")
        return None
    if docker_problem:
        return f"Docker engine unavailable: {docker_problem}"
    if shutil.which("kind", path=env.get("PATH", os.defpath)) is None:
        return KIND_HELP
    return None


def job_state(status: Mapping | None) -> str:
    """complete, failed or running, from a Job's status (as a dict)."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "complete"
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "failed"
    return "running"


def job_progress(status: Mapping | None) -> str:
    status = status or {}
    return (f"{status.get('succeeded') or 0} succeeded, {status.get('active') or 0} active, "
            f"{status.get('failed') or 0} failed")


def missing_tasks(tasks: Iterable[str], logs: str, marker: str = "done: ") -> list[str]:
    """Tasks whose "done: TASK" line is absent from the worker logs."""
    done = {line.split(marker, 1)[1] for line in logs.splitlines() if marker in line}
    return [task for task in tasks if task not in done]


def leftovers(found: Mapping[str, Iterable[str]]) -> list[str]:
    """"kind/name" of everything left, ignoring what Kubernetes itself puts in a namespace."""
    ignored = {("configmaps", "kube-root-ca.crt"), ("serviceaccounts", "default")}
    return sorted(f"{kind}/{name}" for kind, names in found.items() for name in names
                  if (kind, name) not in ignored)


DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")


def has_default_storage_class(annotations: Iterable[Mapping[str, str] | None]) -> bool:
    """Whether one of the StorageClasses (given by their annotations) is the cluster default,
    which the chart's broker PVC needs when it names no storageClass."""
    return any((a or {}).get(key) == "true" for a in annotations
               for key in DEFAULT_CLASS_ANNOTATIONS)
