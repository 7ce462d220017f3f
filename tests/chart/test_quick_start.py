"""The README's quick start from a checkout, run as written from a fresh shell: no PATH of
ours, no file that the README does not ship. Only `make setup` is left out (the suite runs after
it), and the `helm install` runs as a client-side dry run, since there is no cluster here. The
quick start from a registry is run in tests/release/test_packages.py, against a real one."""

from __future__ import annotations

import re
import subprocess

from readme import quick_start
from render import ROOT


def test_the_quick_start_runs_verbatim_in_a_fresh_shell(tmp_path):
    commands = quick_start("make setup")
    script = "\n".join(["set -e", f"cd {ROOT}", *commands[1:]])
    assert "helm install myjob" in script
    script = script.replace("helm install myjob", "helm install --dry-run=client myjob")
    script = script.replace("-o values.yaml", f"-o {tmp_path}/values.yaml").replace(
        "-f values.yaml", f"-f {tmp_path}/values.yaml")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout + out.stderr
    # The example task list reached the Job, and the command got each task
    assert "STATUS: pending-install" in out.stdout
    assert "echo rendering $WORKQUEUE_PAYLOAD; sleep 1" in out.stdout
    generated = re.search(r"generator: (\d+) tasks", out.stdout + out.stderr)
    assert generated and int(generated.group(1)) > 1, out.stderr
    assert f"{generated.group(1)} tasks, fine mode" in out.stdout
