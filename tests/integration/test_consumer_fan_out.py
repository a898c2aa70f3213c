"""Enhanced fan-out (SubscribeToShard) end to end on kinesis-mock: registration and reuse,
records round trip (plain and aggregated), start positions and checkpoints, resharding
from the events' ChildShards, and bad input refused at construction or start."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import anyio
import pytest

from shardflow import Consumer, MemoryCheckpointer, SQLiteCheckpointer, errors
from shardflow.aggregation import aggregate

from support import kinesis, list_shards, unique_name, wait_active
from support_consumer import (
    assert_per_key_order,
    collect,
    no_more,
    numbered,
    put_records,
    wait_until,
)
from support_fan_out import consumers, create_mock_stream, kinesis_mock_url  # noqa: F401


async def test_records_round_trip_and_the_consumer_is_registered_once(
    kinesis_mock_url: str,  # noqa: F811
) -> None:
    url = kinesis_mock_url
    name = unique_name("fo")
    arn = create_mock_stream(url, name, shards=2)
    items = numbered(300)
    results = put_records(url, name, items)
    async with Consumer(name, app_name="billing", fan_out=True, endpoint_url=url) as consumer:
        got = await collect(consumer, len(items))
        assert await no_more(consumer, 1.5) == []
        stats = consumer.stats()
    assert sorted(r.data for r in got) == sorted(d for _, d in items)
    assert_per_key_order(got)
    assert {(r.shard_id, r.sequence_number) for r in got} == {
        (r["ShardId"], r["SequenceNumber"]) for r in results
    }
    assert stats.get_records_calls == 0  # pushed, not polled
    assert [c["ConsumerName"] for c in consumers(url, arn)] == ["billing"]
    # A second consumer of the same application reuses the registration.
    async with Consumer(name, app_name="billing", fan_out=True, endpoint_url=url,
                        start_at="LATEST", deregister_consumer=True) as consumer:
        await wait_until(lambda: consumer.stats().subscriptions == 2)  # LATEST resolved
        put_records(url, name, [("k", b"after")])
        assert [r.data for r in await collect(consumer, 1)] == [b"after"]
    # deregister_consumer=True: gone, or on its way (AWS too shows DELETING for a while)
    assert [c["ConsumerStatus"] for c in consumers(url, arn)] in ([], ["DELETING"])


async def test_aggregates_are_unpacked_with_sub_sequence_numbers(
    kinesis_mock_url: str,  # noqa: F811
) -> None:
    url = kinesis_mock_url
    name = unique_name("fo")
    create_mock_stream(url, name, shards=1)
    subs = [(f"k{i}", None, f"s{i}".encode()) for i in range(50)]
    kinesis(url).put_record(StreamName=name, PartitionKey="k0", Data=aggregate(subs))
    async with Consumer(name, fan_out="agg-reader", endpoint_url=url) as consumer:
        got = await collect(consumer, 50)
    assert [(r.data, r.sub_sequence_number) for r in got] == [
        (f"s{i}".encode(), i) for i in range(50)
    ]
    assert len({r.sequence_number for r in got}) == 1


async def test_checkpoint_resume_inside_an_aggregate_loses_and_repeats_nothing(
    kinesis_mock_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    url = kinesis_mock_url
    name = unique_name("fo")
    create_mock_stream(url, name, shards=1)
    subs = [(f"k{i}", None, f"s{i}".encode()) for i in range(10)]
    put_records(url, name, [("a", b"plain-1")])
    kinesis(url).put_record(StreamName=name, PartitionKey="k0", Data=aggregate(subs))
    put_records(url, name, [("b", b"plain-2")])
    checkpointer = SQLiteCheckpointer(str(tmp_path / "cp.db"))
    async with Consumer(name, app_name="resume", checkpointer=checkpointer, fan_out=True,
                        endpoint_url=url) as consumer:
        first = await collect(consumer, 5)  # plain-1 and the aggregate's first four
        await consumer.checkpoint(first[-1])
    assert first[-1].sub_sequence_number == 3
    async with Consumer(name, app_name="resume", checkpointer=checkpointer, fan_out=True,
                        endpoint_url=url) as consumer:
        rest = await collect(consumer, 7)
        assert await no_more(consumer, 1.5) == []
    assert [r.data for r in rest] == [f"s{i}".encode() for i in range(4, 10)] + [b"plain-2"]


async def test_latest_and_at_timestamp(kinesis_mock_url: str) -> None:  # noqa: F811
    url = kinesis_mock_url
    name = unique_name("fo")
    create_mock_stream(url, name, shards=1)
    put_records(url, name, [("k", b"old")])
    await anyio.sleep(0.05)
    middle = datetime.now(timezone.utc)
    await anyio.sleep(0.05)
    put_records(url, name, [("k", b"mid")])
    async with Consumer(name, fan_out="ts", endpoint_url=url, start_at=middle) as consumer:
        assert [r.data for r in await collect(consumer, 1)] == [b"mid"]
    async with Consumer(name, fan_out="latest", endpoint_url=url, start_at="LATEST") as c:
        await wait_until(lambda: c.stats().subscriptions == 1)  # LATEST resolved
        put_records(url, name, [("k", b"new")])
        assert [r.data for r in await collect(c, 1)] == [b"new"]


async def test_resharding_children_after_parents(kinesis_mock_url: str) -> None:  # noqa: F811
    url = kinesis_mock_url
    name = unique_name("fo")
    create_mock_stream(url, name, shards=1)
    items = numbered(200)  # one count across the reshard: per-key order spans it
    before, after = items[:100], items[100:]
    put_records(url, name, before)
    checkpointer = MemoryCheckpointer()
    async with Consumer(name, app_name="reshard", checkpointer=checkpointer, fan_out=True,
                        endpoint_url=url) as consumer:
        got = await collect(consumer, len(before))
        for record in got:
            await consumer.checkpoint(record)
        kinesis(url).update_shard_count(StreamName=name, TargetShardCount=2,
                                        ScalingType="UNIFORM_SCALING")
        wait_active(url, name)
        put_records(url, name, after)
        got += await collect(consumer, len(after), within=30)
        assert await no_more(consumer, 1.5) == []
    shards = list_shards(url, name)
    parent = next(s["ShardId"] for s in shards if "ParentShardId" not in s)
    assert sorted(r.data for r in got) == sorted(d for _, d in before + after)
    assert_per_key_order(got)
    assert {r.shard_id for r in got[:100]} == {parent}
    assert parent not in {r.shard_id for r in got[100:]}


async def test_bad_input_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="stream consumer name"):
        Consumer("s", fan_out="no spaces allowed")
    with pytest.raises(ValueError, match="stream consumer name"):
        Consumer("s", fan_out="x" * 129)
    with pytest.raises(ValueError, match="app_name"):
        Consumer("s", fan_out=True)
    with pytest.raises(ValueError, match="stream consumer name"):
        Consumer("s", app_name="my app", fan_out=True)
    with pytest.raises(TypeError, match="fan_out"):
        Consumer("s", fan_out=3)  # type: ignore[arg-type]


async def test_an_endpoint_without_fan_out_is_a_clear_error_at_start(
    kinesalite_url: str,
) -> None:
    from support import create_stream

    name = create_stream(kinesalite_url)
    consumer = Consumer(name, fan_out="x", endpoint_url=kinesalite_url)
    with pytest.raises(errors.InvalidArgument, match="fan-out") as caught:
        async with consumer:
            pass
    assert caught.value.code == "FanOutUnsupported"


async def test_an_endpoint_that_registers_but_cannot_subscribe_is_a_clear_error(
    moto_url: str,
) -> None:
    from support import create_stream

    name = create_stream(moto_url)  # moto: RegisterStreamConsumer yes, SubscribeToShard no

    async def read() -> None:
        async with Consumer(name, fan_out="x", endpoint_url=moto_url) as consumer:
            with anyio.fail_after(30):
                async for _ in consumer:
                    pass

    with pytest.raises(errors.InvalidArgument, match="does not support enhanced fan-out"):
        await read()


def test_deregister_consumer_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="deregister_consumer"):
        Consumer("s", fan_out="x", deregister_consumer="yes")  # type: ignore[arg-type]
