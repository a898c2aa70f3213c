"""OpenTelemetry is optional: without it nothing of it is imported and nothing is
measured; with it, and without meter_provider=, the global provider is used."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shardflow import Consumer, Producer

WITHOUT_OTEL = """
import sys

class NoOpenTelemetry:  # as if the otel extra were not installed
    def find_spec(self, name, path=None, target=None):
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoOpenTelemetry())
import shardflow
assert not [m for m in sys.modules if m.startswith("opentelemetry")]
p = shardflow.Producer("s", region_name="us-east-1")
c = shardflow.Consumer("s", region_name="us-east-1")
col = shardflow.Collector()
b = shardflow.BufferedOutput(shardflow.StdoutOutput())
s = shardflow.S3Sink("bucket", region_name="us-east-1")
d = shardflow.DynamoDBLeases("table", region_name="us-east-1")
assert p._metrics is None and c._metrics is None and s._metrics is None
try:
    shardflow.Collector(trace_context=True)
except shardflow.errors.MissingDependency as exc:
    assert "pip install 'shardflow[otel]'" in str(exc)
else:
    raise AssertionError("trace_context=True without OpenTelemetry was accepted")
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""

IMPORT_ONLY = """
import sys
import shardflow
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""

GLOBAL_PROVIDER = """
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
import shardflow

reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
p = shardflow.Producer("my-stream", region_name="us-east-1")
names = {
    (m.name, tuple(sorted(dict(m.data.data_points[0].attributes).items())))
    for r in reader.get_metrics_data().resource_metrics
    for s in r.scope_metrics
    for m in s.metrics
    if m.data.data_points
}
print(("shardflow.producer.records.put", (("aws.kinesis.stream", "my-stream"),)) in names)
"""


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_the_extra_nothing_is_imported_or_measured() -> None:
    assert run(WITHOUT_OTEL) == "[]"


def test_import_shardflow_loads_no_opentelemetry() -> None:
    assert run(IMPORT_ONLY) == "[]"


def test_without_meter_provider_the_global_provider_is_used() -> None:
    assert run(GLOBAL_PROVIDER) == "True"


def test_tracer_provider_is_checked() -> None:
    with pytest.raises(TypeError, match="tracer_provider"):
        Producer("s", region_name="us-east-1", tracer_provider=object())
    with pytest.raises(TypeError, match="tracer_provider"):
        Consumer("s", region_name="us-east-1", tracer_provider=object())
