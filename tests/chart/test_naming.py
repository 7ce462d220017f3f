"""Object names and labels stay valid and distinct for any release name Helm allows."""

from __future__ import annotations

import re

import pytest

from render import render_chart

LONGEST_RELEASE = "r" * 53  # Helm's limit for a release name
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("values, release", [
    ({}, "demo"),
    ({}, LONGEST_RELEASE),
    ({"nameOverride": "n" * 60}, "demo"),
    ({"fullnameOverride": "f" * 70}, "demo"),
    ({"broker": {"type": "rabbitmq", "persistence": {"enabled": True}}}, LONGEST_RELEASE),
])
def test_names_are_valid_and_distinct(values, release):
    objects = render_chart(values, name=release)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(set(names)) == len(names), "two objects of one kind share a name"
    for kind, name in names:
        assert len(name) <= 63 and DNS_LABEL.match(name), f"{kind} {name}"
        if kind == "StatefulSet":
            # pods carry controller-revision-hash=<name>-<10 chars>, a 63-character label value
            assert len(name) <= 52, name
    for obj in objects:
        templates = [obj["metadata"]] + ([obj["spec"]["template"]["metadata"]]
                                         if "template" in obj.get("spec", {}) else [])
        for meta in templates:
            for key, value in meta.get("labels", {}).items():
                assert len(key.split("/")[-1]) <= 63, key
                assert len(str(value)) <= 63, f"{key}={value}"


def test_release_named_after_the_chart_is_not_repeated():
    names = {o["metadata"]["name"] for o in render_chart(name="workqueue-job-nightly")}
    assert "workqueue-job-nightly-worker" in names
