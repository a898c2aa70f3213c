"""The checkpointer decides which shards a worker reads (what DynamoDBLeases will do):
shards granted later start, a revoked shard stops at once, its checkpoints fail."""

from __future__ import annotations

import anyio
import pytest

from shardflow import Consumer, Record, errors
from shardflow.consumer import (
    Checkpointer,
)

from support import create_stream, kinesis, list_shards
from support_consumer import POLL, GrantingCheckpointer, collect, no_more, wait_until


def put_to(url: str, name: str, shard: dict[str, object], prefix: str, n: int) -> None:
    hash_key = shard["HashKeyRange"]["StartingHashKey"]  # type: ignore[index]
    kinesis(url).put_records(
        StreamName=name,
        Records=[
            {"PartitionKey": "k", "ExplicitHashKey": hash_key, "Data": f"{prefix}{i}".encode()}
            for i in range(n)
        ],
    )


async def test_grant_and_revoke(kinesalite_url: str) -> None:
    url = kinesalite_url
    name = create_stream(url, shards=2)
    a, b = sorted(list_shards(url, name), key=lambda s: s["ShardId"])
    put_to(url, name, a, "a", 20)
    put_to(url, name, b, "b", 20)
    coordinator = GrantingCheckpointer({a["ShardId"]})
    assert isinstance(coordinator, Checkpointer)
    async with Consumer(
        name, endpoint_url=url, poll_interval=POLL, app_name="app", checkpointer=coordinator
    ) as consumer:
        assert coordinator.bound
        assert coordinator.scope is not None
        assert (coordinator.scope.app_name, coordinator.scope.stream_name) == ("app", name)
        first = await collect(consumer, 20)
        assert {r.shard_id for r in first} == {a["ShardId"]}
        assert await no_more(consumer) == []  # b is not ours

        coordinator.grant(b["ShardId"])
        second = await collect(consumer, 20)
        assert {r.shard_id for r in second} == {b["ShardId"]}
        await consumer.checkpoint(second[-1])

        # 30 records of a are fetched and buffered; the application takes one.
        await anyio.to_thread.run_sync(put_to, url, name, a, "late-a", 30)
        await wait_until(lambda: consumer.stats().records_buffered >= 30)
        [taken] = await collect(consumer, 1)
        assert taken.shard_id == a["ShardId"]
        coordinator.take_away(a["ShardId"])
        # Nothing more of a is delivered, not even what was buffered or in hand.
        await anyio.to_thread.run_sync(put_to, url, name, b, "late-b", 10)
        third = await collect(consumer, 10)
        assert {r.shard_id for r in third} == {b["ShardId"]}
        assert await no_more(consumer) == []
        with pytest.raises(errors.LeaseLost):
            await consumer.checkpoint(taken)
        stats = consumer.stats()
        assert stats.shards_reading == 1
        assert stats.records_buffered == 0
    assert not coordinator.bound
    assert coordinator.positions[b["ShardId"]].sequence_number == second[-1].sequence_number
    assert a["ShardId"] not in coordinator.positions


async def test_lease_lost_during_checkpoint(kinesalite_url: str) -> None:
    # The checkpointer finds out first (its conditional write fails).
    url = kinesalite_url
    name = create_stream(url, shards=1)
    [shard] = list_shards(url, name)
    put_to(url, name, shard, "x", 5)
    coordinator = GrantingCheckpointer({shard["ShardId"]})
    async with Consumer(
        name, endpoint_url=url, poll_interval=POLL, app_name="app", checkpointer=coordinator
    ) as consumer:
        got: list[Record] = await collect(consumer, 5)
        coordinator.granted.clear()  # lost without telling the consumer yet
        with pytest.raises(errors.LeaseLost):
            await consumer.checkpoint(got[-1])


async def test_lease_lost_when_loading_stops_only_that_shard(kinesalite_url: str) -> None:
    url = kinesalite_url
    name = create_stream(url, shards=2)
    a, b = sorted(list_shards(url, name), key=lambda s: s["ShardId"])
    put_to(url, name, a, "a", 5)
    put_to(url, name, b, "b", 5)
    coordinator = GrantingCheckpointer({a["ShardId"], b["ShardId"]})
    coordinator.lost_on_get = {b["ShardId"]}
    async with Consumer(
        name, endpoint_url=url, poll_interval=POLL, app_name="app", checkpointer=coordinator
    ) as consumer:
        got = await collect(consumer, 5)
        assert {r.shard_id for r in got} == {a["ShardId"]}
        assert await no_more(consumer) == []
        assert consumer.stats().shards_reading == 1
