"""Every ci/ values file lints, renders with helm 3 and 4, and validates strictly."""

from __future__ import annotations

import pytest

from render import CHART, CI_VALUES, helm, job_base_name, render_chart, validate_strictly


def test_ci_folder_covers_every_combination():
    names = {path.name for path in CI_VALUES}
    expected = {f"{b}-{m}-{w}-{s}-values.yaml" for b in ("redis", "rabbitmq")
                for m in ("fine", "coarse") for w in ("bundled", "external")
                for s in ("tasks", "tasksfrom")}
    assert expected <= names


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda p: p.stem.removesuffix("-values"))
def test_ci_values_lint_render_and_validate(helm_name, values_file):
    lint = helm(helm_name, "lint", "--strict", str(CHART), "-f", str(values_file))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    objects = render_chart(helm_name=helm_name, files=[values_file])
    assert sorted(job_base_name(o) for o in objects if o["kind"] == "Job") == [
        "demo-workqueue-job-seeder", "demo-workqueue-job-worker"]
    validate_strictly(objects)


@pytest.mark.parametrize("helm_name", ["helm3", "helm4"])
def test_no_values_is_a_complete_demo(helm_name):
    objects = render_chart(helm_name=helm_name)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Job") == 2 and "StatefulSet" in kinds and "Secret" in kinds
    validate_strictly(objects)
