"""`make bench` at toy sizes, so the benchmark cannot rot between real runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bench_smoke_prints_every_row(tmp_path):
    out_file = tmp_path / "benchmarks.md"
    result = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--write", str(out_file)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    table = out_file.read_text()
    for row in ("Redis 7.0 fine, 4 workers, the defaults: up to 100 items",
                "Redis 8.0 fine, 4 workers, batch 1 (",
                "RabbitMQ 3.10 fine, 4 workers, the defaults: up to 100 items",
                "RabbitMQ 4.0 fine, 4 workers, batch 1 (",
                "RabbitMQ 4.0 fine, 4 workers, batch 10", "Redis seeding 2,000 tasks",
                "Generator, 10,000 tasks", "Generator scaling", "Worker process peak RSS",
                "vs the 1 ms target", "its report record", "Ceiling: redis-benchmark",
                "RabbitMQ 4.0: ",
                "RabbitMQ 3.10 fine, 4 workers, the defaults, on 3 replicated nodes (vs 1 node)",
                "RabbitMQ 4.0 fine, 4 workers, the defaults, on 3 replicated nodes (vs 1 node)"):
        assert row in table, f"missing row {row!r}"
    ratios = re.findall(r"\| ([0-9.]+)x \|", table)
    assert len(ratios) >= 10 and all(float(r) > 0 for r in ratios), ratios
