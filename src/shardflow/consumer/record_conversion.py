"""GetRecords' answer -> shardflow models: the one place Kinesis records become user
records (:func:`to_records`, where KPL aggregates are unpacked, and an aggregate holding
a sub-record that hashes outside the shard is dropped whole, as the KCL does) and
``ChildShards`` entries become :class:`Shard` values.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from ..aggregation import MAGIC, deaggregate
from ..models import Record, Shard
from ..shardmap import hash_key

__all__ = ["child_shard", "to_records"]

log = logging.getLogger("shardflow.consumer")

_UTC = timezone.utc


def to_records(
    shard: Shard, raw_records: Sequence[dict[str, Any]], skip_to: tuple[int, int] | None
) -> tuple[list[Record], int]:
    """User records from GetRecords' ``Records``, aggregates unpacked, in order, and how
    many sub-records were dropped with their aggregate for hashing outside the shard.

    Records at or before ``skip_to`` (a position) are left out: that is how a reader
    resumes inside an aggregate. As the KCL does (``AggregatorUtil.deaggregate``), an
    aggregate is dropped WHOLE when the effective hash key (explicit hash key, else the
    MD5 of the partition key) of any of its sub-records falls outside ``shard``'s range:
    it landed there through a stale shard map, and its producer sends all of it again
    (shardflow's and the KPL do). Each such aggregate is logged once, at WARNING.
    """
    shard_id, low, high = shard.shard_id, shard.starting_hash_key, shard.ending_hash_key
    out: list[Record] = []
    append = out.append
    dropped = 0
    for raw in raw_records:
        seq: str = raw["SequenceNumber"]
        data: bytes = raw["Data"]
        # A KPL aggregate (magic, protobuf, MD5) becomes its user records; one that fails
        # the checks is delivered as plain data, as the KCL does.
        subs = deaggregate(data) if data.startswith(MAGIC) else None
        if subs is None:
            if skip_to is not None and (int(seq), -1) <= skip_to:
                continue
            arrival: datetime = raw["ApproximateArrivalTimestamp"].astimezone(_UTC)
            append(Record(data, raw["PartitionKey"], seq, None, shard_id, arrival))
            continue
        if not _all_within(subs, low, high):
            dropped += len(subs)
            log.warning(
                "dropped an aggregate of %d records at sequence number %s of %s: a sub-record "
                "hashes outside the shard's range (a producer's stale shard map; the KCL drops "
                "it whole too)",
                len(subs),
                seq,
                shard_id,
            )
            continue
        first = 0
        if skip_to is not None and int(seq) <= skip_to[0]:
            first = skip_to[1] + 1 if int(seq) == skip_to[0] else len(subs)
        arrival = raw["ApproximateArrivalTimestamp"].astimezone(_UTC)
        for index in range(first, len(subs)):
            key, explicit, sub_data = subs[index]
            append(Record(sub_data, key, seq, index, shard_id, arrival, explicit))
    return out, dropped


def _all_within(subs: Sequence[tuple[str, str | None, bytes]], low: int, high: int) -> bool:
    """Whether every sub-record's effective hash key lies in [low, high] (an explicit hash
    key that is not a number counts as outside: the KCL cannot place it either)."""
    seen: set[tuple[str, str | None]] = set()  # keys repeat within an aggregate
    for key, explicit, _ in subs:
        if (key, explicit) in seen:
            continue
        seen.add((key, explicit))
        if explicit is None:
            value = hash_key(key)
        else:
            try:
                value = int(explicit)
            except ValueError:
                return False
        if not low <= value <= high:
            return False
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
