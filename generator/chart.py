"""The chart the values are for: its defaults, its schema and its app version."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from .errors import GeneratorError

PACKAGED_CHART = Path(__file__).resolve().parent / "chart_files"
"""What an installed wheel carries of the chart: its Chart.yaml, values.yaml and schema, copied
from charts/workqueue-job when the wheel is built (pyproject.toml, generator.chart_files)."""
DEFAULT_CHART = (PACKAGED_CHART if PACKAGED_CHART.is_dir()
                 else Path(__file__).resolve().parent.parent / "charts" / "workqueue-job")
"""The packaged chart files in an installed wheel; in a checkout, the chart itself."""


@dataclass(frozen=True)
class Chart:
    path: Path
    defaults: dict[str, Any]
    schema: dict[str, Any]
    version: str
    app_version: str

    @property
    def installable(self) -> bool:
        """Whether ``path`` is a whole chart that `helm install` can take (not only the files
        a wheel carries for the generator)."""
        return (self.path / "templates").is_dir()


def load_chart(path: Path = DEFAULT_CHART) -> Chart:
    """Read the chart's values.yaml, values.schema.json and Chart.yaml."""
    try:
        defaults = yaml.safe_load((path / "values.yaml").read_text())
        schema = json.loads((path / "values.schema.json").read_text())
        meta = yaml.safe_load((path / "Chart.yaml").read_text())
    except OSError as exc:
        raise GeneratorError(
            f"cannot read the chart at {path} ({exc.strerror}); reinstall workqueue-job, run "
            "from a checkout, or pass --chart PATH"
        ) from None
    return Chart(path, defaults, schema, str(meta.get("version", "")),
                 str(meta.get("appVersion", "")))


def merged(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge key by key, anything else is replaced."""
    out = dict(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def schema_errors(chart: Chart, values: dict[str, Any]) -> list[tuple[str, str]]:
    """(dotted path, message) for each way the values, merged onto the chart's defaults, break
    the chart's values.schema.json, deepest first."""
    validator = jsonschema.Draft7Validator(chart.schema)
    found = []
    for error in validator.iter_errors(merged(chart.defaults, values)):
        # if/then failures wrap the useful error; report the innermost ones.
        leaves = [e for e in error.context if not e.context] if error.context else [error]
        for leaf in leaves or [error]:
            path = ".".join(str(p) for p in leaf.absolute_path)
            found.append((path, leaf.message))
    return sorted(found, key=lambda item: -item[0].count("."))
