"""The consumer's instruments (see :mod:`shardflow._core.metrics`).

All but one are observed: the readers' shared counters (``stats()``), each reader's
last ``MillisBehindLatest`` and the coordinator's tallies of shards taken and lost are
read when a metric reader collects. The one hook is per checkpoint write (its duration).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._core.metrics import APP, SHARD, STREAM, Attributes, Meter, Observable, attr, size, stat

__all__ = ["ConsumerMetrics", "lease_metrics"]


def _behind(consumer: Any) -> Iterable[tuple[float, Attributes]]:
    coord = consumer._coord
    if coord is None or coord.closing:
        return ()
    return [
        (reader.millis_behind, {SHARD: shard_id})
        for shard_id, reader in list(coord.readers.items())
        if reader.millis_behind is not None and not reader.ended and not reader.lost
    ]


def _coordinator(field: str) -> Any:
    def read(consumer: Any) -> Iterable[tuple[float, Attributes]]:
        coord = consumer._coord
        return ((getattr(coord, field) if coord is not None else 0, {}),)

    return read


def _dropped(consumer: Any) -> Iterable[tuple[float, Attributes]]:
    return ((consumer.stats().out_of_range_dropped, {"reason": "out_of_range"}),)


_CONSUMER = (
    Observable("counter", "shardflow.consumer.records.read", "{record}",
               "Records fetched from Kinesis (sub-records of aggregates counted each)",
               stat("records_fetched")),
    Observable("counter", "shardflow.consumer.records.delivered", "{record}",
               "Records handed to the application", stat("records_delivered")),
    Observable("counter", "shardflow.consumer.records.dropped", "{record}",
               "Records dropped (reason=out_of_range: an aggregate's sub-record hashed outside "
               "its shard, dropped whole as the KCL does)", _dropped),
    Observable("updown", "shardflow.consumer.records.buffered", "{record}",
               "Records fetched and not yet handed out", stat("records_buffered")),
    Observable("counter", "shardflow.consumer.get_records.calls", "{call}",
               "GetRecords calls", stat("get_records_calls")),
    Observable("counter", "shardflow.consumer.get_records.throttled", "{call}",
               "Reads refused for throughput (retried after a backoff)", stat("throttled")),
    Observable("counter", "shardflow.consumer.iterators.renewed", "{iterator}",
               "Expired shard iterators replaced", stat("iterators_renewed")),
    Observable("gauge", "shardflow.consumer.millis_behind_latest", "ms",
               "How far the shard's reader is behind the tip (GetRecords' MillisBehindLatest)",
               _behind),
    Observable("counter", "shardflow.consumer.checkpoints.written", "{checkpoint}",
               "Checkpoints stored", stat("checkpoints_saved")),
    Observable("updown", "shardflow.consumer.leases.held", "{lease}",
               "Shards this worker reads now", stat("shards_reading")),
    Observable("counter", "shardflow.consumer.leases.taken", "{lease}",
               "Shards this worker started reading (leases taken, or assigned without a lease "
               "table)", _coordinator("taken")),
    Observable("counter", "shardflow.consumer.leases.lost", "{lease}",
               "Shards this worker stopped reading because they were revoked (lease lost)",
               _coordinator("revoked")),
)


class ConsumerMetrics:
    """The instruments of one consumer; :attr:`checkpointed` records one checkpoint
    write's duration."""

    def __init__(self, consumer: Any, meter: Meter, stream: str, app: str) -> None:
        attrs = {STREAM: stream, APP: app}
        meter.observe(consumer, _CONSUMER, attrs)
        self.checkpointed = meter.recorder(
            "shardflow.consumer.checkpoint.duration", "s", "Checkpoint write duration", attrs
        )

    def attach(self, coordinator: Any) -> None:
        """Give the readers' counters the per-checkpoint hook."""
        coordinator.ctx.counters.on_checkpoint = self.checkpointed


_LEASES = (
    Observable("updown", "shardflow.leases.owned", "{lease}",
               "Leases this worker holds in the table", size("_held")),
    Observable("updown", "shardflow.leases.total", "{lease}",
               "Leases of the application and stream in the table, as last scanned",
               size("_leases")),
    Observable("gauge", "shardflow.leases.workers", "{worker}",
               "Workers holding leases in the table, as last scanned", attr("_workers")),
)


def lease_metrics(session: Any, meter: Meter, table: str, app: str, stream: str) -> None:
    """Observe one DynamoDBLeases session: this worker's view of its group's lease table."""
    meter.observe(session, _LEASES, {"aws.dynamodb.table": table, APP: app, STREAM: stream})
