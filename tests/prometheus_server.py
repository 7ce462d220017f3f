"""A real Prometheus (Debian's `prometheus` package) on a free loopback port, scraping given
targets every second, with its data in a temporary folder; stopped by pid."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from workqueue.local import free_port, stop_process, wait_for_port

START_SECONDS = 30.0


class Prometheus:
    def __init__(self, folder: Path, targets: list[str], job: str = "workqueue",
                 labels: dict[str, str] | None = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: run `make setup` (Debian's prometheus "
                        "package)")
        self.port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [{"job_name": job,
                                "static_configs": [{"targets": targets,
                                                    "labels": labels or {}}]}],
        }))
        self.log = (folder / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(self.process, self.port, START_SECONDS, "prometheus")
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        """It listens before its storage is open, answering 503 meanwhile."""
        deadline = time.monotonic() + START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise AssertionError("prometheus did not get ready") from None
                time.sleep(0.2)

    def query(self, expression: str) -> list[dict]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expression}))
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, expression: str, timeout: float = 30.0) -> float:
        """The single value of ``expression`` once Prometheus has one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expression)
            if result:
                return float(result[0]["value"][1])
            time.sleep(0.5)
        raise AssertionError(f"prometheus had no value for {expression} in {timeout:.0f}s")

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()
