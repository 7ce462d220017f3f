"""Every Job the chart renders is one the API server accepts, by the rules of
pkg/apis/batch/validation that a schema cannot express (job_api.py), in every mode, and with the
longest release name the chart takes."""

from __future__ import annotations

import copy

import pytest

from job_api import job_spec_violations
from render import ALL_CI_VALUES, load_values, render_chart

LONGEST_RELEASE = "r" * 53
"""Helm's limit for a release name."""


def jobs(values: dict | None = None, name: str = "demo") -> list[dict]:
    return [o for o in render_chart(values, name=name) if o["kind"] == "Job"]


@pytest.mark.parametrize("path", ALL_CI_VALUES, ids=lambda p: p.stem)
@pytest.mark.parametrize("name", ["demo", LONGEST_RELEASE], ids=["short", "longest-name"])
def test_every_rendered_job_is_valid(path, name):
    for job in jobs(load_values(path), name):
        assert not job_spec_violations(job), job["metadata"]["name"]


@pytest.mark.parametrize("max_pods", [1, 9, 10, 100000])
def test_fine_mode_job_names_leave_room_for_every_index(max_pods):
    # Pod hostnames are "<job>-<index>": the name shortens as the last index grows
    for job in jobs({"worker": {"maxPods": max_pods, "parallelism": 1}}, LONGEST_RELEASE):
        assert not job_spec_violations(job)


def _fine_worker() -> dict:
    return next(j for j in jobs() if j["metadata"]["name"].startswith("demo-workqueue-job-wo"))


BREAKAGES = {
    "restartPolicy": (lambda s: s["template"]["spec"].update(restartPolicy="OnFailure"),
                      "only Never"),
    "replacement": (lambda s: s.update(podReplacementPolicy="TerminatingOrFailed"),
                    "podReplacementPolicy"),
    "exit code 0": (lambda s: s["podFailurePolicy"]["rules"][0]["onExitCodes"].update(
        values=[0, 2]), "exit code 0"),
    "unordered": (lambda s: s["podFailurePolicy"]["rules"][1]["onExitCodes"].update(
        values=[143, 137]), "ordered"),
    "container": (lambda s: s["podFailurePolicy"]["rules"][0]["onExitCodes"].update(
        containerName="main"), "containerName"),
    "index past the end": (lambda s: s["successPolicy"]["rules"][0].update(
        succeededIndexes="10000"), "succeededIndexes"),
    "not indexed": (lambda s: s.pop("completionMode"), "require indexed"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_the_rules_catch_what_the_api_server_refuses(breakage):
    # A check that cannot fail proves nothing: each breakage is refused, naming it
    job = copy.deepcopy(_fine_worker())
    change, expected = BREAKAGES[breakage]
    change(job["spec"])
    assert any(expected in why for why in job_spec_violations(job))


def test_a_hostname_over_63_characters_is_caught():
    job = copy.deepcopy(_fine_worker())
    job["metadata"]["name"] = "j" * 59
    assert any("invalid DNS label" in why for why in job_spec_violations(job))
