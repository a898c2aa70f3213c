"""Kinesis records -> shardflow models: the one place Kinesis records become user
records (:func:`to_rows`, where KPL aggregates are unpacked, and an aggregate holding
a sub-record that hashes outside the shard is dropped whole, as the KCL does) and
``ChildShards`` entries become :class:`Shard` values.

Readers buffer user records as :data:`Row` values (a :class:`Record`'s fields in a plain
tuple) and make the Record when they hand it out (:func:`as_records`, or
``new_record(Record, row)``). A plain tuple of atoms is untracked by the garbage collector
at its first young collection; a Record (a tuple subclass) stays tracked, so a buffer of
Records would be promoted and scanned again by every full collection.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from itertools import repeat
from operator import itemgetter, methodcaller
from typing import Any

from .._core.logs import get_logger
from ..aggregation import MAGIC, UserRecord, deaggregate
from ..models import Record, Shard, _position
from ..shardmap import all_within

__all__ = [
    "Row",
    "aggregate_rows",
    "as_records",
    "child_shard",
    "new_record",
    "row_position",
    "to_records",
    "to_rows",
]

log = get_logger("shardflow.consumer")

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_b64decode = binascii.a2b_base64
_from_epoch = datetime.fromtimestamp

Row = tuple[bytes, str, str, "int | None", str, datetime, "str | None"]
"""A user record's fields, in :class:`Record`'s order, as a plain tuple."""

new_record: Callable[[type[Record], Row], Record] = tuple.__new__
"""``new_record(Record, row)``: the Record of a :data:`Row`, built in C."""


def as_records(rows: Sequence[Row]) -> list[Record]:
    """The Records of ``rows``."""
    return list(map(new_record, repeat(Record), rows))


def row_position(row: Row) -> tuple[int, int]:
    """:attr:`Record.position` of a row's record."""
    return _position(row[2], row[3])


def to_records(
    shard: Shard, raw_records: Sequence[dict[str, Any]], skip_to: tuple[int, int] | None
) -> tuple[list[Record], int]:
    """:func:`to_rows` as Records."""
    rows, dropped = to_rows(shard, raw_records, skip_to)
    return as_records(rows), dropped


def to_rows(
    shard: Shard, raw_records: Sequence[dict[str, Any]], skip_to: tuple[int, int] | None
) -> tuple[list[Row], int]:
    """User records (rows) from the ``Records`` of a GetRecords answer or a SubscribeToShard
    event, aggregates unpacked, in order, and how many sub-records were dropped with their
    aggregate for hashing outside the shard.

    Records come as the service sends them (``Data`` base64, ``ApproximateArrivalTimestamp``
    epoch seconds): GetRecords and SubscribeToShard are parsed by orjson, not botocore.
    Records at or before ``skip_to`` (a position) are left out: that is how a reader
    resumes inside an aggregate. As the KCL does (``AggregatorUtil.deaggregate``), an
    aggregate is dropped WHOLE when the effective hash key (explicit hash key, else the
    MD5 of the partition key) of any of its sub-records falls outside ``shard``'s range:
    it landed there through a stale shard map, and its producer sends all of it again
    (shardflow's and the KPL do). Each such aggregate is logged once, at WARNING.
    """
    if not raw_records:
        return [], 0
    if skip_to is None:
        plain = _plain_rows(shard.shard_id, raw_records)
        if plain is not None:
            return plain, 0
    shard_id, low, high = shard.shard_id, shard.starting_hash_key, shard.ending_hash_key
    out: list[Row] = []
    append = out.append
    dropped = 0
    last_stamp: Any = None
    arrival: datetime = _EPOCH
    for raw in raw_records:
        seq: str = raw["SequenceNumber"]
        data: bytes = _b64decode(raw["Data"])
        stamp = raw["ApproximateArrivalTimestamp"]
        if stamp != last_stamp:  # records of one answer mostly share their arrival time
            last_stamp = stamp
            arrival = _from_epoch(stamp, _UTC)
        # A KPL aggregate (magic, protobuf, MD5) becomes its user records; one that fails
        # the checks is delivered as plain data (see deaggregate: as the KCL does, but for
        # a key index beyond its table).
        subs = deaggregate(data) if data[:4] == MAGIC else None
        if subs is None:
            if skip_to is not None and (int(seq), -1) <= skip_to:
                continue
            append((data, raw["PartitionKey"], seq, None, shard_id, arrival, None))
            continue
        if not all_within(subs, low, high):
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
        if first < len(subs):
            out += aggregate_rows(subs, seq, shard_id, arrival, first)
    return out, dropped


def aggregate_rows(
    subs: Sequence[UserRecord], seq: str, shard_id: str, arrival: datetime, first: int = 0
) -> list[Row]:
    """The user records of one aggregate (``subs`` from ``deaggregate``) from index
    ``first`` on, each with its sub-sequence number, built in C."""
    if first:
        subs = subs[first:]
    keys, explicits, blobs = zip(*subs, strict=True)
    sub_numbers = range(first, first + len(subs))
    return list(
        zip(blobs, keys, repeat(seq), sub_numbers, repeat(shard_id), repeat(arrival), explicits)
    )


_AGGREGATE_B64 = "84maw"
"""How the base64 of every KPL aggregate starts (its magic's first 30 bits)."""
_get_data = itemgetter("Data")
_get_key = itemgetter("PartitionKey")
_get_seq = itemgetter("SequenceNumber")
_get_stamp = itemgetter("ApproximateArrivalTimestamp")
_may_be_aggregate = methodcaller("startswith", _AGGREGATE_B64)


def _plain_rows(shard_id: str, raw_records: Sequence[dict[str, Any]]) -> list[Row] | None:
    """The rows of an answer in the JSON shape holding no KPL aggregate, built with
    C-level iteration (None when one may be an aggregate: the general loop reads it)."""
    blobs = list(map(_get_data, raw_records))
    if any(map(_may_be_aggregate, blobs)):
        return None
    stamps = list(map(_get_stamp, raw_records))
    first = stamps[0]
    if stamps.count(first) == len(stamps):  # one arrival time, as usual in one answer
        arrivals: Any = repeat(_from_epoch(first, _UTC))
    else:
        cache: dict[Any, datetime] = {}
        arrivals = [cache.get(t) or cache.setdefault(t, _from_epoch(t, _UTC)) for t in stamps]
    return list(
        zip(
            map(_b64decode, blobs),
            map(_get_key, raw_records),
            map(_get_seq, raw_records),
            repeat(None),
            repeat(shard_id),
            arrivals,
            repeat(None),
        )
    )


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
