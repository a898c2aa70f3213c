"""The lease table seam: the in-memory table the lease benchmark runs on answers every
conditional read and write as the DynamoDB table does (moto over HTTP), so what the
simulation measures is what the group does against DynamoDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from shardflow import errors
from shardflow._core import aws as _aws
from shardflow.consumer.lease_store import LeaseStore, MemoryLeaseTable
from shardflow.consumer.lease_table import KeyScheme, Lease, LeaseTable

from support import unique_name

SCOPE = "app:stream"
SEQ = "49590338271490256608559692538361571095921575989136588898"


@asynccontextmanager
async def views(kind: str, moto_url: str) -> AsyncIterator[tuple[LeaseStore, LeaseStore]]:
    """Two workers' views ("a" and "b") of one new table."""
    if kind == "memory":
        table = MemoryLeaseTable()
        yield table.store("a", SCOPE), table.store("b", SCOPE)
        return
    async with AsyncExitStack() as stack:
        client: Any = await _aws.open_client(stack, "dynamodb", endpoint_url=moto_url,
                                             region_name="us-east-1")
        name = unique_name("leases")
        both = [LeaseTable(client, name, KeyScheme(), SCOPE, owner) for owner in "ab"]
        await both[0].ensure()
        yield both[0], both[1]


KINDS = pytest.mark.parametrize("kind", ["dynamodb", "memory"])


def lease(n: int) -> Lease:
    return Lease(f"shardId-{n:012d}", checkpoint="TRIM_HORIZON", scope=SCOPE)


@KINDS
async def test_conditional_writes_agree(kind: str, moto_url: str) -> None:
    async with views(kind, moto_url) as (a, b):
        await conditional_writes(a, b)


async def conditional_writes(a: LeaseStore, b: LeaseStore) -> None:
    assert await a.create(lease(0))
    assert not await b.create(lease(0))  # exists: skipped, not overwritten
    first = await a.get(lease(0).shard_id)
    assert first is not None
    assert (first.owner, first.counter) == (None, 0)

    taken = await a.take(first)
    assert (taken.owner, taken.counter, taken.owner_switches) == ("a", 1, 0)
    with pytest.raises(errors.ConditionFailed):
        await b.take(first)  # as seen before a took it
    with pytest.raises(errors.ConditionFailed):
        await b.renew(taken.shard_id, taken.counter)  # not b's
    await a.renew(taken.shard_id, taken.counter)
    with pytest.raises(errors.ConditionFailed):
        await a.renew(taken.shard_id, taken.counter)  # stale counter
    await a.checkpoint(taken.shard_id, 2, SEQ, 3)
    stored = await b.get(taken.shard_id)
    assert stored is not None
    assert (stored.owner, stored.counter, stored.checkpoint, stored.sub_sequence_number) == (
        "a", 3, SEQ, 3
    )
    stolen = await b.take(stored)  # a steal: an owner switch
    assert (stolen.owner, stolen.counter, stolen.owner_switches) == ("b", 4, 1)
    with pytest.raises(errors.ConditionFailed):
        await a.release(stolen.shard_id, 3)
    await b.release(stolen.shard_id, 4)
    released = await a.get(stolen.shard_id)
    assert released is not None
    assert (released.owner, released.counter) == (None, 5)
    with pytest.raises(errors.ConditionFailed):
        await a.set_children(released.shard_id, frozenset({"shardId-000000000009"}))


@KINDS
async def test_segments_partition_the_table(kind: str, moto_url: str) -> None:
    async with views(kind, moto_url) as (a, _):
        await partition(a)


async def partition(a: LeaseStore) -> None:
    for n in range(40):
        assert await a.create(lease(n))
    everything, foreign = await a.scan()
    assert foreign == []
    assert len(everything) == 40
    parts = [sorted(x.shard_id for x in (await a.scan((i, 3)))[0]) for i in range(3)]
    assert sorted(k for part in parts for k in part) == sorted(x.shard_id for x in everything)
    assert all(parts)  # 40 keys: every segment holds some
