"""The consumer's instruments (see :mod:`shardflow._metrics`).

All but one are observed: the readers' shared counters (``stats()``), each reader's
last ``MillisBehindLatest`` and the coordinator's tallies of shards taken and lost are
read when a metric reader collects. The one hook is per checkpoint write (its duration).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._metrics import APP, SHARD, STREAM, Attributes, Meter, stat

__all__ = ["ConsumerMetrics"]


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


class ConsumerMetrics:
    """The instruments of one consumer."""

    def __init__(self, consumer: Any, meter: Meter, stream: str, app: str) -> None:
        self.attributes = attrs = {STREAM: stream, APP: app}
        o = meter.observe
        o(consumer, "counter", "shardflow.consumer.records.read", "{record}",
          "Records fetched from Kinesis (sub-records of aggregates counted each)",
          stat("records_fetched"), attrs)
        o(consumer, "counter", "shardflow.consumer.records.delivered", "{record}",
          "Records handed to the application", stat("records_delivered"), attrs)
        o(consumer, "counter", "shardflow.consumer.records.dropped", "{record}",
          "Records dropped (reason=out_of_range: an aggregate's sub-record hashed outside "
          "its shard, dropped whole as the KCL does)", _dropped, attrs)
        o(consumer, "updown", "shardflow.consumer.records.buffered", "{record}",
          "Records fetched and not yet handed out", stat("records_buffered"), attrs)
        o(consumer, "counter", "shardflow.consumer.get_records.calls", "{call}",
          "GetRecords calls", stat("get_records_calls"), attrs)
        o(consumer, "counter", "shardflow.consumer.get_records.throttled", "{call}",
          "Reads refused for throughput (retried after a backoff)", stat("throttled"), attrs)
        o(consumer, "counter", "shardflow.consumer.iterators.renewed", "{iterator}",
          "Expired shard iterators replaced", stat("iterators_renewed"), attrs)
        o(consumer, "gauge", "shardflow.consumer.millis_behind_latest", "ms",
          "How far the shard's reader is behind the tip (GetRecords' MillisBehindLatest)",
          _behind, attrs)
        o(consumer, "counter", "shardflow.consumer.checkpoints.written", "{checkpoint}",
          "Checkpoints stored", stat("checkpoints_saved"), attrs)
        o(consumer, "updown", "shardflow.consumer.leases.held", "{lease}",
          "Shards this worker reads now", stat("shards_reading"), attrs)
        o(consumer, "counter", "shardflow.consumer.leases.taken", "{lease}",
          "Shards this worker started reading (leases taken, or assigned without a lease "
          "table)", _coordinator("taken"), attrs)
        o(consumer, "counter", "shardflow.consumer.leases.lost", "{lease}",
          "Shards this worker stopped reading because they were revoked (lease lost)",
          _coordinator("revoked"), attrs)
        self._checkpoint = meter.histogram(
            "shardflow.consumer.checkpoint.duration", "s", "Checkpoint write duration"
        )

    def attach(self, coordinator: Any) -> None:
        """Give the readers' counters the per-checkpoint hook."""
        coordinator.ctx.counters.on_checkpoint = self.checkpointed

    def checkpointed(self, duration: float) -> None:
        self._checkpoint.record(duration, self.attributes)


def _size(field: str) -> Any:
    def read(session: Any) -> Iterable[tuple[float, Attributes]]:
        return ((len(getattr(session, field)), {}),)

    return read


def _workers(session: Any) -> Iterable[tuple[float, Attributes]]:
    return ((session._workers, {}),)


def lease_metrics(session: Any, meter: Meter, table: str, app: str, stream: str) -> None:
    """Observe one DynamoDBLeases session: this worker's view of its group's lease table."""
    attrs = {"aws.dynamodb.table": table, APP: app, STREAM: stream}
    o = meter.observe
    o(session, "updown", "shardflow.leases.owned", "{lease}",
      "Leases this worker holds in the table", _size("_held"), attrs)
    o(session, "updown", "shardflow.leases.total", "{lease}",
      "Leases of the application and stream in the table, as last scanned", _size("_leases"),
      attrs)
    o(session, "gauge", "shardflow.leases.workers", "{worker}",
      "Workers holding leases in the table, as last scanned", _workers, attrs)
