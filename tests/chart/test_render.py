"""The chart renders, validates strictly, and its pieces point at each other."""

from __future__ import annotations

import kubernetes_validate
import pytest

from render import by_kind_name, render_chart

COMBOS = [(b, m) for b in ("redis", "rabbitmq") for m in ("fine", "coarse")]
KUBE_VERSIONS = ("1.29.0", "1.33.0")


@pytest.mark.parametrize("helm", ["helm3", "helm4"])
@pytest.mark.parametrize("broker, mode", COMBOS)
def test_renders_and_validates_strictly(helm, broker, mode):
    objects = render_chart({"broker": {"type": broker}, "mode": mode}, helm=helm)
    for obj in objects:
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("broker, mode", COMBOS)
def test_wiring(broker, mode):
    objects = by_kind_name(render_chart({"broker": {"type": broker}, "mode": mode}))
    job = objects[("Job", "demo-workqueue-job-worker")]
    pod = job["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    # The worker's broker host is the rendered Service's DNS name
    assert ("Service", "demo-workqueue-job-broker") in objects
    assert "demo-workqueue-job-broker.jobs.svc:" in env["WORKQUEUE_BROKER_URL"]["value"]
    # The password comes from the rendered Secret
    ref = env["WORKQUEUE_BROKER_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] in objects[("Secret", ref["name"])]["data"]
    # coarse: completions = number of tasks; fine: unset
    tasks = 12
    assert job["spec"].get("completions") == (tasks if mode == "coarse" else None)
    # restricted Pod Security essentials
    ctx = pod["containers"][0]["securityContext"]
    assert ctx["runAsNonRoot"] and not ctx["allowPrivilegeEscalation"]
    assert ctx["capabilities"]["drop"] == ["ALL"] and pod["automountServiceAccountToken"] is False
