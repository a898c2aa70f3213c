"""A split while reading, on the fake Kinesis (benchmarks/fake_kinesis), which ends a
closed shard as AWS does: GetRecords without NextShardIterator, and a last
SubscribeToShardEvent without ContinuationSequenceNumber, both with ChildShards. Polling
and fan-out alike: the parent's records first, then the children's; nothing lost or
repeated; fan-out learns the end from the event alone (no GetRecords)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shardflow import Consumer, MemoryCheckpointer

from benchmarks.fake_kinesis import FakeKinesis, fake_kinesis
from support import kinesis
from support_consumer import assert_per_key_order, collect, no_more, numbered, put_records


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeKinesis]:
    with fake_kinesis(shards=1, store=True) as running:
        yield running


@pytest.mark.parametrize("fan_out", [False, True], ids=["polling", "fan-out"])
async def test_split_while_reading(fake: FakeKinesis, fan_out: bool) -> None:
    url = fake.url
    name = f"split-{'fan-out' if fan_out else 'polling'}"
    client = kinesis(url)
    client.create_stream(StreamName=name, ShardCount=1)
    items = numbered(300, keys=24)  # one count across the split: per-key order spans it
    put_records(url, name, items[:150])
    async with Consumer(name, app_name="split", checkpointer=MemoryCheckpointer(),
                        fan_out=fan_out, endpoint_url=url, poll_interval=0.2) as consumer:
        got = await collect(consumer, 150)
        for record in got:
            await consumer.checkpoint(record)
        client.split_shard(StreamName=name, ShardToSplit="shardId-000000000000",
                           NewStartingHashKey=str(2**127))
        put_records(url, name, items[150:])
        got += await collect(consumer, 150, within=20)
        assert await no_more(consumer, 1.0) == []
        stats = consumer.stats()
    assert sorted(r.data for r in got) == sorted(d for _, d in items)
    assert_per_key_order(got)
    assert {r.shard_id for r in got[:150]} == {"shardId-000000000000"}
    assert {r.shard_id for r in got[150:]} == {"shardId-000000000001", "shardId-000000000002"}
    assert stats.shards_done == 1
    if fan_out:
        assert stats.get_records_calls == 0  # the end came with the last event
