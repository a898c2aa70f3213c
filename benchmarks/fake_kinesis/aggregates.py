"""Counting the user records inside KPL aggregates, cheaply, for the fake's statistics.

A Kinesis record whose data starts with the KPL magic and ends with the right MD5 is an
aggregate; its user records are the ``records`` entries (field 3) of the protobuf
message between them. Counting walks the message's top-level fields only (tag, length,
skip), which costs a fraction of decoding every sub-record. Whenever the walk meets
anything but the usual layout, or a key in the aggregate's tables routes outside the
shard the aggregate landed on, :func:`shardflow.aggregation.deaggregate` decides: it is
exact, and it tells which sub-records a KCL consumer would drop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from shardflow.aggregation import MAGIC, deaggregate

__all__ = ["count_user_records"]

ShardOf = Callable[[str, "str | None"], int]
"""(partition key, explicit hash key or None) -> shard index; -1 for a bad hash key."""

_DIGEST = 16


def _varint(blob: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = blob[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, i
        shift += 7
        if shift > 63:
            raise IndexError("varint too long")


def _scan(blob: bytes, end: int) -> tuple[int, list[str], list[str]] | None:
    """(records, partition key table, explicit hash key table), or None when the message
    holds anything but those three length-delimited fields, exactly filling it."""
    i = 4
    records = 0
    keys: list[str] = []
    hash_keys: list[str] = []
    while i < end:
        tag = blob[i]
        n = blob[i + 1]
        if n < 0x80:
            i += 2
        else:
            b = blob[i + 2]
            if b < 0x80:
                n = (n & 0x7F) | (b << 7)
                i += 3
            else:
                n, i = _varint(blob, i + 1)
        if tag == 0x1A:
            records += 1
        elif tag == 0x0A:
            keys.append(blob[i:i + n].decode("utf-8", "replace"))
        elif tag == 0x12:
            hash_keys.append(blob[i:i + n].decode("utf-8", "replace"))
        else:
            return None
        i += n
    if i != end:
        return None
    return records, keys, hash_keys


def count_user_records(blob: bytes, shard: int, shard_of: ShardOf) -> tuple[int, int]:
    """(user records, sub-records routed outside ``shard``) of one Kinesis record's data.

    Plain data, or an aggregate that fails its checks (the KCL then delivers it as plain
    data), is one user record.
    """
    end = len(blob) - _DIGEST
    if end <= 4 or blob[:4] != MAGIC:
        return 1, 0
    if hashlib.md5(memoryview(blob)[4:end]).digest() != blob[end:]:
        return 1, 0
    try:
        scanned = _scan(blob, end)
    except IndexError:
        scanned = None
    if scanned is not None:
        records, keys, hash_keys = scanned
        # Every key of both tables routes to this shard: no sub-record can be elsewhere.
        if (records and keys and all(shard_of(k, None) == shard for k in keys)
                and all(shard_of("", h) == shard for h in hash_keys)):
            return records, 0
    subs = deaggregate(blob)
    if not subs:
        return 1, 0
    return len(subs), sum(shard_of(pk, ehk) != shard for pk, ehk, _ in subs)
