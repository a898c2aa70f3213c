"""Smoke test of ``python -m benchmarks.metrics``: every mode runs and delivers
everything, and ``off`` really runs without OpenTelemetry (timings never asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

import support_bench
from benchmarks.common import bench_env


def test_metrics_benchmark_runs_every_mode(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.metrics", "--records", "300", "--repeat", "1",
         "--out", str(tmp_path)],
        cwd=support_bench.ROOT, env=bench_env(), capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "| producer |" in proc.stdout.decode()
    runs = orjson.loads((tmp_path / "metrics.json").read_bytes())["runs"]
    assert {(r["role"], r["mode"]) for r in runs} == {
        (role, mode) for role in ("producer", "consumer") for mode in ("off", "api", "sdk")
    }
    assert all(r["status"] == "ok" and r["delivered"] == 300 for r in runs)
    assert {r["mode"]: r["opentelemetry_loaded"] for r in runs} == {
        "off": False, "api": True, "sdk": True
    }
