"""GetRecords' answer -> shardflow models: the one place Kinesis records become user
records (:func:`to_records`, where KPL aggregates are unpacked and sub-records hashing
outside the shard are dropped) and ``ChildShards`` entries become :class:`Shard` values.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..aggregation import MAGIC, deaggregate
from ..models import Record, Shard
from ..shardmap import hash_key

__all__ = ["child_shard", "to_records"]

_UTC = timezone.utc


def to_records(
    shard: Shard, raw_records: Sequence[dict[str, Any]], skip_to: tuple[int, int] | None
) -> tuple[list[Record], int]:
    """User records from GetRecords' ``Records``, aggregates unpacked, in order, and how
    many sub-records were dropped for hashing outside the shard.

    Records at or before ``skip_to`` (a position) are left out: that is how a reader
    resumes inside an aggregate. As the KCL does, a sub-record of an aggregate whose hash
    key falls outside ``shard``'s range is dropped: it landed there through a stale shard
    map, and its producer sends it again to the right shard (shardflow's and the KPL do).
    """
    shard_id, low, high = shard.shard_id, shard.starting_hash_key, shard.ending_hash_key
    out: list[Record] = []
    append = out.append
    dropped = 0
    for raw in raw_records:
        seq: str = raw["SequenceNumber"]
        data: bytes = raw["Data"]
        arrival: datetime = raw["ApproximateArrivalTimestamp"].astimezone(_UTC)
        # A KPL aggregate (magic, protobuf, MD5) becomes its user records; one that fails
        # the checks is delivered as plain data, as the KCL does.
        subs = deaggregate(data) if data.startswith(MAGIC) else None
        if subs is None:
            if skip_to is not None and (int(seq), -1) <= skip_to:
                continue
            append(Record(data, raw["PartitionKey"], seq, None, shard_id, arrival))
            continue
        first = 0
        if skip_to is not None and int(seq) <= skip_to[0]:
            first = skip_to[1] + 1 if int(seq) == skip_to[0] else len(subs)
        in_range: dict[tuple[str, str | None], bool] = {}  # keys repeat within an aggregate
        for index in range(first, len(subs)):
            key, explicit, sub_data = subs[index]
            fits = in_range.get((key, explicit))
            if fits is None:
                fits = in_range[(key, explicit)] = _hashes_within(key, explicit, low, high)
            if fits:
                append(Record(sub_data, key, seq, index, shard_id, arrival, explicit))
            else:
                dropped += 1
    return out, dropped


def _hashes_within(key: str, explicit: str | None, low: int, high: int) -> bool:
    if explicit is None:
        return low <= hash_key(key) <= high
    try:
        return low <= int(explicit) <= high
    except ValueError:  # not a number: nothing to judge by, so keep the record
        return True


def child_shard(item: dict[str, Any]) -> Shard:
    """The shard described by one entry of GetRecords' ``ChildShards``."""
    parents = list(item.get("ParentShards") or ())
    hash_range = item["HashKeyRange"]
    return Shard(
        shard_id=item["ShardId"],
        starting_hash_key=int(hash_range["StartingHashKey"]),
        ending_hash_key=int(hash_range["EndingHashKey"]),
        parent_shard_id=parents[0] if parents else None,
        adjacent_parent_shard_id=parents[1] if len(parents) > 1 else None,
    )
