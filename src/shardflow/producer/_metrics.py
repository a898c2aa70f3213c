"""The producer's instruments (see :mod:`shardflow._core.metrics`).

Counters the producer keeps anyway are observed through ``stats()`` and the sender's
tallies; the sender calls two hooks, once per request and once per aggregate delivered.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._core.metrics import (
    COUNTS,
    ERROR,
    STREAM,
    Attributes,
    Meter,
    Observable,
    attr,
    by_key,
    stat,
    stream_name,
)

__all__ = ["ProducerMetrics"]

THROTTLED = "ProvisionedThroughputExceededException"


def _put(producer: Any) -> Iterable[tuple[float, Attributes]]:
    s = producer.stats()
    return ((s.delivered + s.failed + s.queued, {}),)


def _failed_codes(producer: Any) -> dict[str, int]:
    sender = producer._resolver
    return dict(sender.failed_codes) if sender is not None else {}


def _throttled(producer: Any) -> Iterable[tuple[float, Attributes]]:
    sender = producer._resolver
    return ((sender.entry_errors.get(THROTTLED, 0) if sender is not None else 0, {}),)


def _entry_errors(producer: Any) -> dict[str, int]:
    sender = producer._resolver
    return dict(sender.entry_errors) if sender is not None else {}


_PRODUCER = (
    Observable("counter", "shardflow.producer.records.put", "{record}",
               "Records accepted by put()", _put),
    Observable("counter", "shardflow.producer.records.delivered", "{record}",
               "Records delivered (acknowledged by Kinesis)", stat("delivered")),
    Observable("counter", "shardflow.producer.records.failed", "{record}",
               "Records whose delivery failed, by error code", by_key(_failed_codes, ERROR)),
    Observable("counter", "shardflow.producer.records.retried", "{record}",
               "Tries after a record's first", stat("retried")),
    Observable("counter", "shardflow.producer.entries.throttled", "{entry}",
               "PutRecords entries refused with ProvisionedThroughputExceededException",
               _throttled),
    Observable("counter", "shardflow.producer.entries.errors", "{entry}",
               "PutRecords entries that failed, by error code", by_key(_entry_errors, ERROR)),
    Observable("counter", "shardflow.producer.requests", "{request}",
               "PutRecords requests sent", stat("requests")),
    Observable("updown", "shardflow.producer.records.queued", "{record}",
               "Records accepted and not yet resolved", stat("queued")),
    Observable("updown", "shardflow.producer.bytes.queued", "By",
               "Bytes those records hold (bounded by max_queue_bytes)", stat("queued_bytes")),
    Observable("updown", "shardflow.producer.requests.in_flight", "{request}",
               "PutRecords requests not answered yet", stat("in_flight_requests")),
)

_TALLIES = (  # tallied by ProducerMetrics itself, observed at collection (no SDK call)
    Observable("counter", "shardflow.producer.aggregates", "{aggregate}",
               "KPL aggregates delivered", attr("aggregates")),
)


class ProducerMetrics:
    """The instruments of one producer."""

    def __init__(self, producer: Any, meter: Meter) -> None:
        self.attributes = attrs = {STREAM: stream_name(producer.stream)}
        meter.observe(producer, _PRODUCER, attrs)
        self._duration = meter.histogram(
            "shardflow.producer.request.duration", "s", "PutRecords request duration"
        )
        self.aggregates = 0
        meter.observe(self, _TALLIES, attrs)
        self._per_aggregate = meter.recorder(
            "shardflow.producer.aggregate.records", "{record}", "Records per aggregate delivered",
            attrs, COUNTS,
        )

    def attach(self, sender: Any) -> None:
        """Give the resolver (request handlers report to it) its two hooks."""
        sender.on_request = self.request
        sender.on_aggregate = self.aggregate

    def request(self, duration: float, error: str | None) -> None:
        attrs = self.attributes if error is None else {**self.attributes, ERROR: error}
        self._duration.record(duration, attrs)

    def aggregate(self, records: int) -> None:
        self.aggregates += 1
        self._per_aggregate(records)
