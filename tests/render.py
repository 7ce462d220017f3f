"""Rendering the chart with a real helm binary, like Airflow's helm-tests."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import kubernetes_validate
import yaml
from kubernetes_validate.utils import latest_version

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "workqueue-job"
ALL_CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
INDEXED_CI_VALUES = [path for path in ALL_CI_VALUES if path.name.startswith("indexed-")]
CI_VALUES = [path for path in ALL_CI_VALUES if path not in INDEXED_CI_VALUES]
"""The queue modes' ci/ files (fine and coarse, with a broker)."""
BROKER = ("StatefulSet", "demo-workqueue-job-broker")
"""(kind, name) of the bundled broker for the release name the helpers use by default."""
HELMS = {"helm4": ROOT / ".tools" / "bin" / "helm", "helm3": ROOT / ".tools" / "helm3" / "helm"}


KUBE_VERSIONS = ("1.31.0", "1.32.0", latest_version())
"""The chart's kubeVersion is >=1.31: its two oldest releases, and the newest the validator
knows."""


def validate_strictly(objects: list[dict]) -> None:
    """Raise unless every object is valid, with no unknown field, for each of KUBE_VERSIONS."""
    for obj in objects:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def helm(helm_name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of the two helm binaries; never raises on a non-zero exit."""
    return subprocess.run([str(HELMS[helm_name]), *args], capture_output=True, text=True)


_RENDERS: dict[tuple, subprocess.CompletedProcess[str]] = {}
"""`helm template` answers of this test process, by everything that went into them: many tests
read the same render, and a helm process costs far more than reading its output again."""


def template(values: dict | None = None, helm_name: str = "helm4", name: str = "demo",
             namespace: str = "jobs", files: Sequence[Path] = (),
             reuse: bool = True,
             api_versions: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """`helm template` with ``files`` and then ``values`` (as one more -f file), for a
    cluster that also serves ``api_versions`` (such as monitoring.coreos.com/v1/PodMonitor).
    ``reuse`` False: a render of its own, for tests of what differs between two renders
    (generated passwords)."""
    key = (str(CHART), helm_name, name, namespace, tuple(api_versions),
           json.dumps(values or {}, sort_keys=True, default=str),
           tuple((str(path), Path(path).read_bytes()) for path in files))
    if key not in _RENDERS or not reuse:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
            yaml.safe_dump(values or {}, file)
            file.flush()
            flags = [arg for path in [*files, file.name] for arg in ("-f", str(path))]
            flags += [arg for api in api_versions for arg in ("--api-versions", api)]
            _RENDERS[key] = helm(helm_name, "template", name, str(CHART), *flags,
                                 "--namespace", namespace)
    return _RENDERS[key]


def render_chart(values: dict | None = None, helm_name: str = "helm4", name: str = "demo",
                 namespace: str = "jobs", files: Sequence[Path] = (),
                 api_versions: Sequence[str] = ()) -> list[dict]:
    """Every object `helm template` renders; fails the test with helm's stderr on an error."""
    out = template(values, helm_name, name, namespace, files, api_versions=api_versions)
    if out.returncode != 0:
        raise AssertionError(f"helm template failed:\n{out.stderr}")
    # Parsed again for each caller, which may change what it gets; libyaml parses fast.
    return [doc for doc in yaml.load_all(out.stdout, Loader=yaml.CSafeLoader) if doc]


def by_kind_name(objects: list[dict]) -> dict[tuple[str, str], dict]:
    """Objects by (kind, name); a Job by its name without the digest of its fixed spec
    (workqueue-job.jobName), so tests can name it before they know its spec."""
    return {(o["kind"], job_base_name(o)): o for o in objects}


def job_base_name(obj: dict) -> str:
    name = obj["metadata"]["name"]
    return re.sub(r"-[0-9a-f]{8}$", "", name) if obj["kind"] == "Job" else name


def pod_specs(objects: list[dict]) -> Iterator[tuple[dict, dict]]:
    """(object, pod spec) for every Pod and every pod template."""
    for obj in objects:
        if obj["kind"] == "Pod":
            yield obj, obj["spec"]
        elif obj["kind"] in ("Job", "StatefulSet", "Deployment"):
            yield obj, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def pod_metadata(obj: dict) -> dict:
    """The metadata of a Pod, or of the pods an object's template makes."""
    if obj["kind"] == "Pod":
        return obj["metadata"]
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]["metadata"]


def bumped_chart(folder: Path) -> Path:
    """A copy of the chart in ``folder`` whose version and appVersion are 99.0.0."""
    bumped = folder / "workqueue-job"
    shutil.copytree(CHART, bumped)
    meta = yaml.safe_load((bumped / "Chart.yaml").read_text())
    meta["version"], meta["appVersion"] = "99.0.0", "99.0.0"
    (bumped / "Chart.yaml").write_text(yaml.safe_dump(meta))
    return bumped


def lay_out_tasks(objects: list[dict], extra: list[dict], folder: Path, job: str) -> None:
    """Write Job ``job``'s projected /tasks volume into ``folder``, as the kubelet would.
    ConfigMaps come from the render or from ``extra`` (the generator's manifest)."""
    maps = by_kind_name(objects) | by_kind_name(extra)
    template = by_kind_name(objects)[("Job", job)]["spec"]["template"]
    volume = next(v for v in template["spec"]["volumes"] if v["name"] == "tasks")
    for source in volume["projected"]["sources"]:
        name = source["configMap"]["name"]
        if ("ConfigMap", name) not in maps and source["configMap"].get("optional"):
            continue
        data = maps[("ConfigMap", name)]["data"]
        for item in source["configMap"]["items"]:
            (folder / item["path"]).write_text(data[item["key"]], encoding="utf-8")


def load_values(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def rabbitmq_conf(values: dict | None = None) -> str:
    """The conf.d file the chart gives the bundled RabbitMQ, for ``values``' broker section."""
    merged = {"broker": {"type": "rabbitmq", **((values or {}).get("broker", {}))}}
    objects = by_kind_name(render_chart(merged))
    return objects[("ConfigMap", "demo-workqueue-job-broker-config")]["data"][
        "90-workqueue.conf"]
