"""Rendering the chart with a real helm binary, like Airflow's helm-tests."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "workqueue-job"
HELMS = {"helm4": ROOT / ".tools" / "bin" / "helm", "helm3": ROOT / ".tools" / "helm3" / "helm"}


def render_chart(values: dict | None = None, helm: str = "helm4", name: str = "demo",
                 namespace: str = "jobs") -> list[dict]:
    """Every object `helm template` renders; raises CalledProcessError with stderr on failure."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        yaml.safe_dump(values or {}, file)
        file.flush()
        out = subprocess.run([str(HELMS[helm]), "template", name, str(CHART), "-f", file.name,
                              "--namespace", namespace], capture_output=True, text=True,
                             check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def by_kind_name(objects: list[dict]) -> dict[tuple[str, str], dict]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objects}
