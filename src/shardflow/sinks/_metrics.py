"""The sinks' instruments (see :mod:`shardflow._core.metrics`): objects and bytes written are
observed from :meth:`S3Sink.stats`; the write duration is recorded once per object."""

from __future__ import annotations

from typing import Any

from .._core.metrics import STREAM, Meter, Observable, stat

__all__ = ["S3SinkMetrics"]

_OBSERVED = (
    Observable("counter", "shardflow.sink.objects.written", "{object}",
               "Objects written to S3", stat("objects")),
    Observable("counter", "shardflow.sink.records.written", "{record}",
               "Records in those objects", stat("records")),
    Observable("counter", "shardflow.sink.bytes.written", "By",
               "Bytes stored (compressed as written)", stat("bytes_out")),
    Observable("updown", "shardflow.sink.records.buffered", "{record}",
               "Records buffered, not yet in a written object", stat("buffered_records")),
)


class S3SinkMetrics:
    """The instruments of one S3Sink (attributes: bucket, and stream when given);
    :attr:`wrote` records one object's write duration."""

    def __init__(self, sink: Any, meter: Meter) -> None:
        attrs = {"aws.s3.bucket": sink.bucket}
        if sink.stream:
            attrs[STREAM] = sink.stream
        meter.observe(sink, _OBSERVED, attrs)
        self.wrote = meter.recorder(
            "shardflow.sink.write.duration", "s", "Time to write one object (retries included)",
            attrs,
        )
