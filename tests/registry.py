"""A real OCI registry (Debian's `docker-registry`, the CNCF Distribution registry) on a free
loopback port, storing in a temporary folder; stopped by pid."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from workqueue.local import free_port, stop_process, wait_for_port

START_SECONDS = 30.0
ROOT = Path(__file__).resolve().parent.parent


class Registry:
    def __init__(self, folder: Path) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            pytest.fail("docker-registry is not installed: run `make setup` (Debian's "
                        "docker-registry package)")
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = folder / "registry.yml"
        # JSON is YAML: the registry reads this as its config file.
        config.write_text(json.dumps({
            "version": 0.1, "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
            "http": {"addr": self.host}}))
        self.log = (folder / "registry.log").open("wb")
        self.process = subprocess.Popen([binary, "serve", str(config)], stdout=self.log,
                                        stderr=subprocess.STDOUT)
        wait_for_port(self.process, self.port, START_SECONDS, "docker-registry")

    def publish(self, dist: Path, *settings: str) -> subprocess.CompletedProcess[str]:
        """`make publish` to this registry under /wq, over plain HTTP, of the chart in ``dist``
        (and the image, unless ``settings`` say IMAGE=0)."""
        return subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), "publish", f"REGISTRY={self.host}/wq",
             "PLAIN_HTTP=1", f"DIST={dist}", *settings], capture_output=True, text=True,
            timeout=600)

    def tags(self, repository: str) -> list[str]:
        """The tags the registry holds for ``repository`` (its HTTP API v2)."""
        url = f"http://{self.host}/v2/{repository}/tags/list"
        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    return json.load(answer).get("tags") or []
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()
