"""Helpers for the reliability suite (tests/reliability): reading a stream back as user
records (deaggregated), counting duplicates and losses, and printing what happened.

Every reliability test prints one line starting with ``[reliability]`` that says what it
did and what happened (records, faults injected by kind, duplicates, losses); run
``pytest -s tests/reliability`` to see them (docs/reliability.md collects them).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio

from shardflow.aggregation import deaggregate

from support import kinesis, list_shards, read_stream, wait_active


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One user record as the stream holds it (a sub-record of an aggregate, or plain)."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int | None
    partition_key: str
    data: bytes


def user_records(raw: Iterable[Mapping[str, Any]]) -> list[UserRecord]:
    """``support.read_stream`` records, with KPL aggregates opened (in stream order)."""
    out: list[UserRecord] = []
    for record in raw:
        blob = bytes(record["Data"])
        subs = deaggregate(blob)
        if subs is None:
            out.append(UserRecord(record["ShardId"], record["SequenceNumber"], None,
                                  record["PartitionKey"], blob))
        else:
            out.extend(
                UserRecord(record["ShardId"], record["SequenceNumber"], i, key, data)
                for i, (key, _, data) in enumerate(subs)
            )
    return out


async def read_user_records(url: str, stream: str) -> tuple[list[UserRecord], int]:
    """Every user record in ``stream`` (boto3, in a thread) and how many stream records
    were KPL aggregates."""
    raw = await anyio.to_thread.run_sync(read_stream, url, stream)
    aggregates = sum(deaggregate(bytes(r["Data"])) is not None for r in raw)
    return user_records(raw), aggregates


@dataclass(frozen=True, slots=True)
class Tally:
    """What arrived compared with what was sent (payloads are unique per record)."""

    sent: int
    distinct: int
    duplicates: int
    """Extra copies: arrivals beyond the first of each payload."""
    missing: frozenset[bytes]
    unexpected: frozenset[bytes]
    repeated: frozenset[bytes]
    """Payloads that arrived more than once."""


def tally(sent: Iterable[bytes], arrived: Iterable[bytes]) -> Tally:
    expected = set(sent)
    counts = Counter(arrived)
    return Tally(
        sent=len(expected),
        distinct=len(counts),
        duplicates=sum(counts.values()) - len(counts),
        missing=frozenset(expected - counts.keys()),
        unexpected=frozenset(counts.keys() - expected),
        repeated=frozenset(d for d, n in counts.items() if n > 1),
    )


def first_occurrences(items: Sequence[bytes]) -> list[bytes]:
    """``items`` without repeats, each at its first position."""
    seen: set[bytes] = set()
    out = []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def out_of_order(payloads: Sequence[bytes]) -> list[str]:
    """Per-key order violations in payloads ``<key>:<n>`` (n increasing per key)."""
    last: dict[str, int] = {}
    problems = []
    for payload in payloads:
        key, n = payload.decode().rsplit(":", 1)
        if int(n) <= last.get(key, -1):
            problems.append(f"{key}: {n} after {last[key]}")
        last[key] = int(n)
    return problems


FAULT_KEYS = (
    "throttled_entries",
    "write_limited_entries",
    "internal_failure_entries",
    "errors_5xx",
    "resets_before",
    "resets_after",
    "reset_after_entries",
    "expired_iterators",
    "read_throttled",
    "read_limited",
    "stalled",
)


def faults(counts: Mapping[str, int]) -> str:
    """The non-zero fault counts of a FaultProxy, ``kind=n`` separated by spaces."""
    shown = [f"{k}={counts[k]}" for k in FAULT_KEYS if counts.get(k)]
    return " ".join(shown) or "none"


def report(title: str, **figures: object) -> str:
    """Print (and return) one ``[reliability]`` line: ``title: k=v, ...``."""
    line = f"[reliability] {title}: " + ", ".join(f"{k}={v}" for k, v in figures.items())
    print("\n" + line)
    return line


# --- resharding (kinesalite) -------------------------------------------------------------


def open_shards(url: str, stream: str) -> list[dict[str, Any]]:
    """The stream's open shards, by starting hash key."""
    shards = [s for s in list_shards(url, stream)
              if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    return sorted(shards, key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))


def split_in_half(url: str, stream: str, shard_id: str) -> None:
    """Split ``shard_id`` at the middle of its hash range; wait until ACTIVE again."""
    [shard] = [s for s in list_shards(url, stream) if s["ShardId"] == shard_id]
    low, high = (int(shard["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
    kinesis(url).split_shard(StreamName=stream, ShardToSplit=shard_id,
                             NewStartingHashKey=str((low + high) // 2 + 1))
    wait_active(url, stream)


def merge(url: str, stream: str, shard_id: str, adjacent_id: str) -> None:
    """Merge two adjacent shards; wait until ACTIVE again."""
    kinesis(url).merge_shards(StreamName=stream, ShardToMerge=shard_id,
                              AdjacentShardToMerge=adjacent_id)
    wait_active(url, stream)
