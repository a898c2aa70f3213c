"""Helpers for consumer tests: writing records with boto3, collecting with deadlines."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio

from shardflow import Consumer, Record, Shard, errors
from shardflow.consumer import (
    AssignmentListener,
    Checkpoint,
    CheckpointSession,
    ConsumerScope,
)

from support import kinesis

POLL = 0.2
"""The fastest poll interval the consumer accepts; tests use it to stay quick."""


def put_records(url: str, stream: str, items: Sequence[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """PutRecords in chunks of 500, retrying failed entries; returns one result per item
    (ShardId, SequenceNumber), in order. Records with the same key keep their order."""
    client = kinesis(url)
    results: list[dict[str, Any] | None] = [None] * len(items)
    for start in range(0, len(items), 500):
        pending = list(range(start, min(start + 500, len(items))))
        while pending:
            entries = [{"PartitionKey": items[i][0], "Data": items[i][1]} for i in pending]
            response = client.put_records(StreamName=stream, Records=entries)
            failed = []
            for i, entry in zip(pending, response["Records"], strict=True):
                if "ErrorCode" in entry:
                    failed.append(i)
                else:
                    results[i] = entry
            pending = failed
    return [r for r in results if r is not None]


def numbered(n: int, keys: int = 16, prefix: str = "r") -> list[tuple[str, bytes]]:
    """``n`` records spread over ``keys`` partition keys; data ``prefix:key:i``."""
    return [(f"key-{i % keys}", f"{prefix}:key-{i % keys}:{i}".encode()) for i in range(n)]


async def collect(consumer: Consumer, n: int, within: float = 20.0) -> list[Record]:
    """The next ``n`` records (fails the test if they do not come ``within`` seconds)."""
    out: list[Record] = []
    with anyio.fail_after(within):
        async for record in consumer:
            out.append(record)
            if len(out) >= n:
                break
    return out


async def no_more(consumer: Consumer, wait: float = 3 * POLL) -> list[Record]:
    """Whatever else arrives within ``wait`` seconds (expected: nothing)."""
    extra: list[Record] = []
    with anyio.move_on_after(wait):
        async for record in consumer:
            extra.append(record)
    return extra


async def wait_until(predicate: Any, within: float = 10.0) -> None:
    """Poll ``predicate`` (e.g. on ``consumer.stats()``) until true; fail after ``within`` s."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polling observable state, not a race
            await anyio.sleep(0.02)


def assert_per_key_order(records: Sequence[Record]) -> None:
    """Each key's records arrive in write order (data ``prefix:key:i``, i increasing)."""
    last: dict[str, int] = {}
    for record in records:
        _, key, i = record.data.decode().rsplit(":", 2)
        assert int(i) > last.get(key, -1), f"{key}: {i} after {last.get(key)}"
        last[key] = int(i)


class GrantingCheckpointer:
    """A test coordinator: grants the shards the test says, revokes on demand."""

    def __init__(self, granted: set[str]) -> None:
        self.granted = set(granted)
        self.positions: dict[str, Checkpoint] = {}
        self.listener: AssignmentListener | None = None
        self.scope: ConsumerScope | None = None
        self.bound = False
        self.lost_on_get: set[str] = set()

    def bind(
        self, scope: ConsumerScope, listener: AssignmentListener
    ) -> AbstractAsyncContextManager[CheckpointSession]:
        self.scope, self.listener = scope, listener
        return self._session()

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[CheckpointSession]:
        self.bound = True
        try:
            yield self
        finally:
            self.bound = False

    async def assign(self, shards: Sequence[Shard]) -> Collection[str]:
        return {s.shard_id for s in shards} & self.granted

    async def get(self, shard_id: str) -> Checkpoint | None:
        if shard_id in self.lost_on_get:
            raise errors.LeaseLost(shard_id)
        return self.positions.get(shard_id)

    async def save(self, shard_id: str, checkpoint: Checkpoint) -> None:
        if shard_id not in self.granted:
            raise errors.LeaseLost(shard_id)
        self.positions[shard_id] = checkpoint

    def grant(self, shard_id: str) -> None:
        self.granted.add(shard_id)
        assert self.listener is not None
        self.listener.reassign()

    def take_away(self, shard_id: str) -> None:
        self.granted.discard(shard_id)
        assert self.listener is not None
        self.listener.revoke(shard_id)
