"""examples/prometheus_metrics.py serves shardflow's metrics at /metrics through the
OpenTelemetry Prometheus exporter: scraped over HTTP and parsed with prometheus_client's
text parser (the Prometheus exposition format), the instruments move."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from support import ROOT


def scrape(url: str) -> dict[str, list[Any]]:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def total(samples: dict[str, list[Any]], family: str, sample: str) -> float:
    return sum(s.value for s in samples.get(family, []) if s.name == sample)


def test_prometheus_example_exposes_moving_instruments() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "prometheus_metrics.py"),
         "--port", "0", "--seconds", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split()[1]
        put = "shardflow_producer_records_put"
        deadline = time.monotonic() + 30
        first = scrape(url)
        while total(first, put, put + "_total") == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
            first = scrape(url)
        stream = next(s.labels for s in first[put] if s.name == put + "_total")
        assert stream["aws_kinesis_stream"] == "orders"
        later = first
        delivered = "shardflow_consumer_records_delivered"
        while time.monotonic() < deadline and total(later, delivered, delivered + "_total") == 0:
            time.sleep(0.3)
            later = scrape(url)
        time.sleep(1.0)
        later = scrape(url)
        assert total(later, put, put + "_total") > total(first, put, put + "_total")
        duration = "shardflow_producer_request_duration_seconds"
        assert total(later, duration, duration + "_count") > 0
        behind = later["shardflow_consumer_millis_behind_latest_milliseconds"]
        assert {s.labels["aws_kinesis_shard"] for s in behind} == {
            "shardId-000000000000", "shardId-000000000001"
        }
        held = "shardflow_consumer_leases_held"
        assert total(later, held, held) == 2
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert "stopped" in out, err[-3000:]
        assert proc.returncode == 0, err[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
