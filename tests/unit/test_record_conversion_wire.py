"""Records in the service's JSON shape (GetRecords answers and SubscribeToShard events as
sent: Data base64, ApproximateArrivalTimestamp epoch seconds) become the user records
botocore's parser would give (data decoded, arrival a UTC datetime), on the plain fast
path and off it."""

from __future__ import annotations

import base64
from datetime import datetime, timezone
from typing import Any

from shardflow import Shard
from shardflow.aggregation import MAGIC, aggregate
from shardflow.consumer.record_conversion import to_records

SHARD = Shard("shardId-000000000000", 0, 2**128 - 1)


def wire(seq: int, data: bytes, stamp: float, key: str = "k") -> dict[str, Any]:
    return {"SequenceNumber": str(seq), "Data": base64.b64encode(data).decode(),
            "PartitionKey": key, "ApproximateArrivalTimestamp": stamp}


def parsed(raw: dict[str, Any]) -> tuple[Any, ...]:
    """The fields of ``raw``'s record as botocore would parse them (not aggregated)."""
    return (base64.b64decode(raw["Data"]), raw["PartitionKey"], raw["SequenceNumber"], None,
            SHARD.shard_id,
            datetime.fromtimestamp(raw["ApproximateArrivalTimestamp"], timezone.utc))


def fields(records: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.data, r.partition_key, r.sequence_number, r.sub_sequence_number, r.shard_id,
             r.arrival_time) for r in records]


def test_plain_answers_with_one_or_many_arrival_times() -> None:
    for stamps in ([1.5] * 4, [1.5, 1.5, 2.25, 1.5]):
        raws = [wire(i, f"r{i}".encode(), t, f"k{i}") for i, t in enumerate(stamps)]
        out, dropped = to_records(SHARD, raws, None)
        assert dropped == 0
        assert fields(out) == [parsed(r) for r in raws]
        assert [r.arrival_time.timestamp() for r in out] == stamps
        assert all(r.arrival_time.tzinfo is timezone.utc for r in out)


def test_aggregates_and_look_alikes_in_the_json_shape() -> None:
    blob = aggregate([("a", None, b"one"), ("b", None, b"two")])
    look_alike = MAGIC + b"not an aggregate at all"  # base64 starts like one, MD5 fails
    raws = [wire(1, b"plain", 1.0), wire(2, blob, 1.0), wire(3, look_alike, 1.0)]
    out, dropped = to_records(SHARD, raws, None)
    assert dropped == 0
    assert [(r.data, r.sub_sequence_number) for r in out] == [
        (b"plain", None), (b"one", 0), (b"two", 1), (look_alike, None)]
    when = datetime.fromtimestamp(1.0, timezone.utc)
    assert fields(out) == [
        (b"plain", "k", "1", None, SHARD.shard_id, when),
        (b"one", "a", "2", 0, SHARD.shard_id, when),
        (b"two", "b", "2", 1, SHARD.shard_id, when),
        (look_alike, "k", "3", None, SHARD.shard_id, when),
    ]
    # resuming inside the aggregate
    resumed, _ = to_records(SHARD, raws[1:], (2, 0))
    assert [r.data for r in resumed] == [b"two", look_alike]
