"""Reading what shardflow's instruments report, with the real OpenTelemetry SDK."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


class Metrics:
    """A MeterProvider with an in-memory reader; ``points(name)`` collects now."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def collect(self) -> dict[str, Any]:
        """Every metric collected now, by name (the metric: unit, data points)."""
        data = self.reader.get_metrics_data()
        out: dict[str, Any] = {}
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    out[metric.name] = metric
        return out

    def points(self, name: str) -> list[Any]:
        metric = self.collect().get(name)
        return list(metric.data.data_points) if metric is not None else []

    def value(self, name: str, attributes: dict[str, str] | None = None) -> float:
        """The sum of the points of ``name`` whose attributes include ``attributes``
        (for a histogram, its count)."""
        total = 0.0
        for point in self.points(name):
            attrs = dict(point.attributes or {})
            if all(attrs.get(k) == v for k, v in (attributes or {}).items()):
                total += point.count if hasattr(point, "bucket_counts") else point.value
        return total

    def unit(self, name: str) -> str:
        return str(self.collect()[name].unit)
