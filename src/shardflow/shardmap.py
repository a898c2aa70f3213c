"""Shards and hash keys, shared by the producer and the consumer.

A record's hash key is MD5(partition key) read as a 128-bit big-endian integer, or its
explicit hash key; the shard whose hash-key range holds it receives the record.
:class:`ShardMap` is an immutable snapshot of the open shards' ranges with a fast lookup;
the producer predicts a record's shard with it and replaces it after a reshard or when a
record lands on a shard other than the predicted one.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from hashlib import md5
from itertools import pairwise

from .errors import InvalidHashKey, InvalidShardMap, UnmappedHashKey
from .models import Shard

__all__ = [
    "MAX_HASH_KEY",
    "ShardMap",
    "all_within",
    "hash_key",
    "landing_hash_key",
    "parse_explicit_hash_key",
]

MAX_HASH_KEY = 2**128 - 1
"""The largest hash key; the key space is [0, 2**128)."""

# What AWS accepts as an ExplicitHashKey: no sign, no spaces, no leading zeros.
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,38}")
_CACHE_LIMIT = 1 << 16


def hash_key(partition_key: str) -> int:
    """The hash key of ``partition_key``: MD5 of its UTF-8 bytes, big-endian."""
    return int.from_bytes(md5(partition_key.encode()).digest(), "big")


def parse_explicit_hash_key(value: str) -> int:
    """The integer an explicit hash key stands for.

    Raises :class:`errors.InvalidHashKey` (a ValueError) unless ``value`` is a str of
    decimal digits, without sign, spaces or leading zeros, below 2**128 — what AWS accepts.
    """
    if not isinstance(value, str):
        raise InvalidHashKey(
            f"explicit_hash_key must be a str of decimal digits, got {type(value).__name__}"
        )
    if not _DECIMAL.fullmatch(value):
        short = value if len(value) <= 60 else value[:60] + "..."
        raise InvalidHashKey(
            "explicit_hash_key must be a decimal integer in [0, 2**128) written without "
            f"sign, spaces or leading zeros, got {short!r}"
        )
    number = int(value)
    if number > MAX_HASH_KEY:
        raise InvalidHashKey(f"explicit_hash_key must be below 2**128, got {value}")
    return number


def landing_hash_key(shard: Shard) -> str:
    """An explicit hash key (decimal string) that lands a record on ``shard``: its
    starting hash key. Used for aggregates, which must reach the shard their sub-records
    were packed for whatever the outer partition key hashes to."""
    return str(shard.starting_hash_key)


_KEY_HASHES: dict[str, int] = {}
"""Partition key -> hash key, for keys seen lately (keys repeat across aggregates: MD5 is
most of the cost of checking an aggregate's sub-records)."""


def all_within(records: Iterable[tuple[str, str | None, bytes]], low: int, high: int) -> bool:
    """Whether every (partition key, explicit hash key, data) of an aggregate has its
    effective hash key (the explicit hash key, else :func:`hash_key`; the KCL's
    ``AggregatorUtil.effectiveHashKey``) in [low, high]: the KCL drops an aggregate WHOLE
    when one does not. An explicit hash key that is not a number counts as outside (the
    KCL cannot place it either)."""
    hashes = _KEY_HASHES
    for key, explicit, _ in records:
        if explicit is None:
            value = hashes.get(key)
            if value is None:
                if len(hashes) >= _CACHE_LIMIT:
                    hashes.clear()
                value = hashes[key] = hash_key(key)
        else:
            try:
                value = int(explicit)
            except ValueError:
                return False
        if not low <= value <= high:
            return False
    return True


class ShardMap:
    """An immutable snapshot of the open shards' hash-key ranges.

    Closed shards (those with an ending sequence number) are ignored. Overlapping open
    ranges raise :class:`errors.InvalidShardMap`; so do gaps, unless
    ``require_full_coverage=False``, in which case a lookup in a gap raises
    :class:`errors.UnmappedHashKey` and ``complete`` is False. Lookups are a bisection;
    partition keys already looked up are answered from a bounded cache.
    """

    __slots__ = ("_by_id", "_cache", "_ends", "_only", "_starts", "complete", "shards")

    def __init__(self, shards: Iterable[Shard], *, require_full_coverage: bool = True) -> None:
        ordered = sorted((s for s in shards if s.is_open), key=lambda s: s.starting_hash_key)
        for shard in ordered:
            if not 0 <= shard.starting_hash_key <= shard.ending_hash_key <= MAX_HASH_KEY:
                raise InvalidShardMap(
                    f"shard {shard.shard_id} has an invalid hash-key range "
                    f"[{shard.starting_hash_key}, {shard.ending_hash_key}]"
                )
        gaps = []
        if not ordered:
            gaps.append("no open shard")
        else:
            if ordered[0].starting_hash_key != 0:
                gaps.append(f"[0, {ordered[0].starting_hash_key - 1}]")
            for left, right in pairwise(ordered):
                if right.starting_hash_key <= left.ending_hash_key:
                    raise InvalidShardMap(
                        f"open shards {left.shard_id} and {right.shard_id} overlap "
                        f"at hash key {right.starting_hash_key}"
                    )
                if right.starting_hash_key != left.ending_hash_key + 1:
                    gaps.append(f"[{left.ending_hash_key + 1}, {right.starting_hash_key - 1}]")
            if ordered[-1].ending_hash_key != MAX_HASH_KEY:
                gaps.append(f"[{ordered[-1].ending_hash_key + 1}, {MAX_HASH_KEY}]")
        if gaps and require_full_coverage:
            raise InvalidShardMap(
                "the open shards do not cover the hash-key space; uncovered: " + ", ".join(gaps)
            )
        self.shards: tuple[Shard, ...] = tuple(ordered)
        """The open shards, by starting hash key."""
        self.complete: bool = not gaps
        """True when the open shards cover [0, 2**128) exactly."""
        self._starts = [s.starting_hash_key for s in ordered]
        self._ends = [s.ending_hash_key for s in ordered]
        self._by_id = {s.shard_id: s for s in ordered}
        self._only = ordered[0] if len(ordered) == 1 and self.complete else None
        self._cache: dict[str, Shard] = {}

    def __len__(self) -> int:
        return len(self.shards)

    def __iter__(self) -> Iterator[Shard]:
        return iter(self.shards)

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._by_id

    def __repr__(self) -> str:
        ids = ", ".join(s.shard_id for s in self.shards)
        return f"<ShardMap {len(self.shards)} open shards: {ids}>"

    def get(self, shard_id: str) -> Shard | None:
        """The open shard with this id, or None."""
        return self._by_id.get(shard_id)

    def shard_for_hash(self, hash_key: int) -> Shard:
        """The open shard whose range holds ``hash_key``.

        Raises :class:`errors.UnmappedHashKey` for a key outside [0, 2**128) or in a gap.
        """
        index = bisect_right(self._starts, hash_key) - 1
        if index < 0 or hash_key > self._ends[index]:
            raise UnmappedHashKey(f"no open shard holds hash key {hash_key}")
        return self.shards[index]

    def shard_for_key(self, partition_key: str, explicit_hash_key: str | None = None) -> Shard:
        """The open shard a record with this partition key (or explicit hash key) goes to.

        Raises :class:`errors.InvalidHashKey` for a malformed explicit hash key and
        :class:`errors.UnmappedHashKey` when no open shard holds the key.
        """
        if explicit_hash_key is not None:
            return self.shard_for_hash(parse_explicit_hash_key(explicit_hash_key))
        if self._only is not None:
            return self._only
        shard = self._cache.get(partition_key)
        if shard is None:
            shard = self.shard_for_hash(hash_key(partition_key))
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[partition_key] = shard
        return shard
