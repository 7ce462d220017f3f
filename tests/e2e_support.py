"""Pieces of the kind end-to-end run that do not need a cluster, so they can be tested here."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pytest

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


def job_verdict(status: Mapping | None) -> tuple[str, str]:
    """(complete|failed|running, why) from a Job's status (as a dict). Since Kubernetes 1.31
    the controller sets FailureTarget or SuccessCriteriaMet first and Failed or Complete once
    the pods are gone (KEP-4368), so either of each pair is the verdict. ``why`` is the
    condition's reason and message: for a podFailurePolicy FailJob rule, "PodFailurePolicy:
    Container worker for pod ... failed with exit code 6 matching FailJob rule at index 0"."""
    for condition in (status or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        why = f"{condition.get('reason') or ''}: {condition.get('message') or ''}".strip(": ")
        if condition.get("type") in ("Complete", "SuccessCriteriaMet"):
            return "complete", why
        if condition.get("type") in ("Failed", "FailureTarget"):
            return "failed", why
    return "running", ""


def failed_indexes(status: Mapping | None) -> list[int]:
    """The indexes an Indexed Job lists in status.failedIndexes, which the Job controller
    writes as sorted intervals ("1,3-5,7")."""
    text = (status or {}).get("failed_indexes") or ""
    indexes: list[int] = []
    for part in filter(None, text.split(",")):
        first, _, last = part.partition("-")
        indexes.extend(range(int(first), int(last or first) + 1))
    return indexes


IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")


def image_pull_problem(pods: Iterable[Mapping]) -> str | None:
    """One line naming a pod that cannot get its image (pods as dicts, as the API returns
    them), or None. Such a pod waits forever, so the case should end at once."""
    for pod in pods:
        status = pod.get("status") or {}
        for container in [*(status.get("init_container_statuses") or []),
                          *(status.get("container_statuses") or [])]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") in IMAGE_PULL_REASONS:
                return (f"pod {pod['metadata']['name']} cannot get image {container.get('image')}"
                        f" ({waiting['reason']}: {waiting.get('message') or 'no message'}): "
                        "load it onto the nodes or push it and set E2E_IMAGE")
    return None


IMAGE_LOADERS = {
    "kind-": lambda name, image: ["kind", "load", "docker-image", image, "--name", name],
    "k3d-": lambda name, image: ["k3d", "image", "import", image, "--cluster", name],
    "minikube": lambda name, image: ["minikube", "image", "load", image, "--profile", name],
}


def image_loader(context: str, image: str) -> list[str] | None:
    """The command that puts a locally built image onto the nodes of the cluster behind
    ``context`` (kind, k3d and minikube name their contexts predictably), or None."""
    for prefix, command in IMAGE_LOADERS.items():
        if context.startswith(prefix):
            return command(context.removeprefix(prefix) or context, image)
    return None


def no_way_to_the_nodes(context: str) -> str:
    """The one line for an existing cluster that is not kind, k3d or minikube, without
    E2E_IMAGE: a locally built image would never reach its nodes."""
    return (f"e2e: cannot get a locally built image onto the nodes of context {context!r}: "
            "push the image to a registry the cluster can pull from (make images; docker tag; "
            "docker push) and set E2E_IMAGE=registry/workqueue-job:tag")


def job_progress(status: Mapping | None) -> str:
    status = status or {}
    return (f"{status.get('succeeded') or 0} succeeded, {status.get('active') or 0} active, "
            f"{status.get('failed') or 0} failed")


def leftovers(found: Mapping[str, Iterable[tuple[str, Mapping[str, str] | None]]],
              release: str) -> list[str]:
    """"kind/name" of what the release left behind: objects labelled with its instance, or
    named after it (its pods carry its labels too). What the cluster itself adds to every
    namespace (kube-root-ca.crt, OpenShift's openshift-service-ca.crt, a default
    ServiceAccount) is neither, so it never counts."""
    return sorted(f"{kind}/{name}" for kind, objects in found.items()
                  for name, labels in objects
                  if (labels or {}).get("app.kubernetes.io/instance") == release
                  or name.startswith(f"{release}-"))


DEFAULT_CLASS_ANNOTATIONS = ("storageclass.kubernetes.io/is-default-class",
                             "storageclass.beta.kubernetes.io/is-default-class")


def has_default_storage_class(annotations: Iterable[Mapping[str, str] | None]) -> bool:
    """Whether one of the StorageClasses (given by their annotations) is the cluster default,
    which the chart's broker PVC needs when it names no storageClass."""
    return any((a or {}).get(key) == "true" for a in annotations
               for key in DEFAULT_CLASS_ANNOTATIONS)


@dataclass
class CaseResult:
    """One line of the table `make e2e` prints at the end."""

    case: str
    verdict: str = "no verdict"
    """The Job's as the case saw it ("complete", "failed: PodFailurePolicy"), or why the case
    itself failed."""
    seconds: float | None = None
    """From install to the verdict."""
    report: str = ""
    """From the product's report: "20 done, 0 dead, 21 runs"."""
    passed: bool = False
    kept: str = ""
    """Where its diagnostic bundle or namespace was kept, if it failed."""


def results_table(results: Iterable[CaseResult]) -> str:
    """The cases as a table: case, pass/FAIL, verdict, time to verdict, report."""
    results = list(results)
    header = ("case", "", "verdict", "to verdict", "report (done, dead, runs)")
    rows = [(r.case, "pass" if r.passed else "FAIL", r.verdict[:70],
             "-" if r.seconds is None else f"{r.seconds:.0f} s", r.report or "-")
            for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]
    kept = [f"  {r.case}: {r.kept}" for r in results if r.kept]
    return "\n".join(lines + (["kept for diagnosis:", *kept] if kept else []))


RESULTS: list[CaseResult] = []
"""Each e2e case's result, appended as it ends (tests/e2e/test_kind.py's `case` fixture)."""
CALL_FAILED = pytest.StashKey[bool]()
"""Set on a test item by tests/e2e/conftest.py: whether the test itself failed."""
