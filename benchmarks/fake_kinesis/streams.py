"""Streams and shards of the fake: even hash-key ranges, routing, sequence numbers."""

from __future__ import annotations

import bisect
import hashlib
import time
from typing import Any

from .validation import HASH_KEY, HASH_SPACE

__all__ = ["ACCOUNT", "REGION", "Shard", "StoredRecord", "Stream", "hash_key"]

ACCOUNT = "123456789012"
REGION = "us-east-1"

StoredRecord = tuple[float, str, str]  # arrival time, base64 data, partition key


def hash_key(partition_key: str) -> int:
    """MD5 of the UTF-8 partition key as a 128-bit big-endian integer (AWS's routing)."""
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


class Shard:
    __slots__ = ("children", "closed_at", "end", "index", "parent", "prefix", "shard_id",
                 "start")

    def __init__(self, index: int, start: int, end: int, prefix: str,
                 parent: str | None = None) -> None:
        self.index = index
        self.shard_id = f"shardId-{index:012d}"
        self.start = start
        self.end = end
        self.prefix = prefix  # 36 digits; a sequence number is prefix + a 20-digit counter
        self.parent = parent
        self.closed_at: int | None = None  # records written before a split closed it
        self.children: list[Shard] = []

    def child_shards(self) -> list[dict[str, Any]]:
        """GetRecords' / SubscribeToShard's ``ChildShards`` of a closed shard."""
        return [{"ShardId": c.shard_id, "ParentShards": [self.shard_id],
                 "HashKeyRange": {"StartingHashKey": str(c.start),
                                  "EndingHashKey": str(c.end)}} for c in self.children]

    def sequence(self, counter: int) -> str:
        return f"{self.prefix}{counter:020d}"

    def as_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ShardId": self.shard_id,
            "HashKeyRange": {"StartingHashKey": str(self.start), "EndingHashKey": str(self.end)},
            "SequenceNumberRange": {"StartingSequenceNumber": self.sequence(0)},
        }
        if self.parent is not None:
            out["ParentShardId"] = self.parent
        if self.closed_at is not None:
            out["SequenceNumberRange"]["EndingSequenceNumber"] = self.sequence(self.closed_at)
        return out


class Stream:
    """N shards splitting [0, 2**128) evenly; ``counts[i]`` records written to shard i."""

    __slots__ = ("arn", "counts", "created", "heads", "kinesis_records", "name", "open",
                 "route", "serial", "shards", "starts", "stored", "tails", "user_records")

    def __init__(self, name: str, shard_count: int, store: bool, serial: int) -> None:
        self.name = name
        self.arn = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}"
        self.created = time.time()
        step = HASH_SPACE // shard_count
        self.shards: list[Shard] = []
        for i in range(shard_count):
            end = HASH_SPACE - 1 if i == shard_count - 1 else (i + 1) * step - 1
            prefix = f"4959{int(self.created) % 10**10:010d}{serial % 10**10:010d}{i:012d}"
            self.shards.append(Shard(i, i * step, end, prefix))
        self.serial = serial
        self.open = list(range(shard_count))  # indexes of the open shards, by start
        self.starts = [s.start for s in self.shards]
        self.counts = [0] * shard_count
        self.stored: list[list[StoredRecord]] | None = (
            [[] for _ in range(shard_count)] if store else None
        )
        # Pieces of each PutRecords answer entry, per shard: head + counter + tail.
        self.heads = ['{"SequenceNumber":"' + s.prefix for s in self.shards]
        self.tails = ['","ShardId":"' + s.shard_id + '"}' for s in self.shards]
        self.route: dict[str, int] = {}  # partition key -> shard index (a bounded cache)
        self.kinesis_records = 0
        self.user_records = 0

    def shard_for_hash(self, value: int) -> int:
        return self.open[bisect.bisect_right(self.starts, value) - 1]

    def split(self, shard: Shard, new_start: int) -> None:
        """Close ``shard``; two children take its range, split at ``new_start``."""
        shard.closed_at = self.counts[shard.index]
        for start, end in ((shard.start, new_start - 1), (new_start, shard.end)):
            index = len(self.shards)
            prefix = f"4959{int(self.created) % 10**10:010d}{self.serial % 10**10:010d}{index:012d}"
            child = Shard(index, start, end, prefix, parent=shard.shard_id)
            shard.children.append(child)
            self.shards.append(child)
            self.counts.append(0)
            if self.stored is not None:
                self.stored.append([])
            self.heads.append('{"SequenceNumber":"' + prefix)
            self.tails.append('","ShardId":"' + child.shard_id + '"}')
        self.open = sorted((i for i in self.open if i != shard.index),
                           key=lambda i: self.shards[i].start)
        self.open += [c.index for c in shard.children]
        self.open.sort(key=lambda i: self.shards[i].start)
        self.starts = [self.shards[i].start for i in self.open]
        self.route.clear()

    def shard_for_key(self, partition_key: str) -> int:
        index = self.route.get(partition_key)
        if index is None:
            index = self.shard_for_hash(hash_key(partition_key))
            if len(self.route) >= 100_000:
                self.route.clear()
            self.route[partition_key] = index
        return index

    def after(self, shard_id: Any) -> list[Shard]:
        """The shards after ``shard_id`` (all when None), in order."""
        if shard_id is None:
            return self.shards
        return [s for s in self.shards if s.shard_id > str(shard_id)]

    def shard_of(self, partition_key: str, explicit_hash_key: str | None) -> int:
        """The shard index a record routes to; -1 for an explicit hash key that is not a
        decimal below 2**128."""
        if explicit_hash_key is None:
            return self.shard_for_key(partition_key)
        if not HASH_KEY.match(explicit_hash_key) or int(explicit_hash_key) >= HASH_SPACE:
            return -1
        return self.shard_for_hash(int(explicit_hash_key))
