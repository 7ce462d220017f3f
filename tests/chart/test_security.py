"""checkov's Kubernetes checks pass on every rendered combination."""

from __future__ import annotations

import json
import subprocess

from render import ALL_CI_VALUES, ROOT, template

CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
# Skipped everywhere, each for a reason that holds for every object the chart renders:
SKIPS = {
    # The runtime image is built locally (`make images`, `kind load`), so it has no registry
    # digest; users who push it can put a digest in image.tag.
    "CKV_K8S_43": "Image should use digest",
    # IfNotPresent is what lets a kind-loaded image run; Always would try a registry.
    "CKV_K8S_15": "Image Pull Policy should be Always",
    # Seeder, worker and test pods are batch pods: nothing serves traffic and the runtime's
    # leases and heartbeats, not a probe, decide when work is stuck. The brokers have probes.
    "CKV_K8S_8": "Liveness Probe Should be Configured",
    "CKV_K8S_9": "Readiness Probe Should be Configured",
}


def test_checkov_finds_nothing(tmp_path):
    for path in [None, *ALL_CI_VALUES]:
        out = template(files=[path] if path else [])
        assert out.returncode == 0, out.stderr
        (tmp_path / f"{path.stem if path else 'defaults'}.yaml").write_text(out.stdout)
    result = subprocess.run(
        [str(CHECKOV), "--directory", str(tmp_path), "--framework", "kubernetes",
         "--skip-check", ",".join(SKIPS), "--output", "json", "--quiet", "--compact"],
        capture_output=True, text=True)
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [f"{c['check_id']} {c['resource']}" for c in report["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    # A scan that checked nothing must not pass.
    assert summary["passed"] > 500, summary
    assert result.returncode == 0, result.stderr[-2000:]
