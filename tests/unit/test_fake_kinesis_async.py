"""The benchmark fake Kinesis with aiobotocore as the client: every operation, errors,
aggregate counting, and ordinary concurrent use."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiobotocore.session import get_session
from aws_kinesis_agg.aggregator import RecordAggregator
from botocore.config import Config
from botocore.exceptions import ClientError

from shardflow._core.aws import list_shards
from shardflow.shardmap import ShardMap

import support_bench  # noqa: F401  (puts the repository root on sys.path)
from benchmarks.fake_kinesis import FakeKinesis, fake_kinesis


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeKinesis]:
    with fake_kinesis(shards=4, store=True) as running:
        yield running


@pytest.fixture
async def kinesis(fake: FakeKinesis) -> AsyncIterator[Any]:
    config = Config(retries={"max_attempts": 1}, max_pool_connections=8)
    async with get_session().create_client("kinesis", endpoint_url=fake.url,
                                           region_name="us-east-1", config=config) as client:
        yield client


def md5_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


async def test_every_operation(kinesis: Any) -> None:
    await kinesis.create_stream(StreamName="async-ops", ShardCount=2)
    summary = (await kinesis.describe_stream_summary(StreamName="async-ops"))[
        "StreamDescriptionSummary"]
    assert summary["OpenShardCount"] == 2
    assert isinstance(summary["StreamCreationTimestamp"], dt.datetime)
    desc = (await kinesis.describe_stream(StreamName="async-ops"))["StreamDescription"]
    shards = (await kinesis.list_shards(StreamName="async-ops"))["Shards"]
    assert [s["ShardId"] for s in desc["Shards"]] == [s["ShardId"] for s in shards]
    put = await kinesis.put_records(StreamName="async-ops", Records=[
        {"Data": f"r{i}".encode(), "PartitionKey": f"key-{i}"} for i in range(50)])
    single = await kinesis.put_record(StreamName="async-ops", Data=b"one", PartitionKey="key-0")
    assert put["FailedRecordCount"] == 0
    for i, result in enumerate(put["Records"]):
        low = [s for s in shards if int(s["HashKeyRange"]["StartingHashKey"])
               <= md5_key(f"key-{i}") <= int(s["HashKeyRange"]["EndingHashKey"])]
        assert result["ShardId"] == low[0]["ShardId"]
    got: dict[str, bytes] = {}
    for shard in shards:
        it = (await kinesis.get_shard_iterator(
            StreamName="async-ops", ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
        page = await kinesis.get_records(ShardIterator=it, Limit=10_000)
        got.update({r["SequenceNumber"]: r["Data"] for r in page["Records"]})
    expected = {r["SequenceNumber"]: f"r{i}".encode() for i, r in enumerate(put["Records"])}
    expected[single["SequenceNumber"]] = b"one"
    assert got == expected


async def test_errors_reach_aiobotocore_as_client_errors(kinesis: Any) -> None:
    with pytest.raises(ClientError) as err:
        await kinesis.put_records(StreamName="async-err", Records=[
            {"Data": b"x", "PartitionKey": "k"}] * 501)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    with pytest.raises(ClientError) as err:
        await kinesis.put_records(StreamName="async-err", Records=[
            {"Data": b"x" * (1024 * 1024), "PartitionKey": "k"}] * 5)
    assert err.value.response["Error"]["Code"] == "InvalidArgumentException"
    with pytest.raises(ClientError) as err:
        await kinesis.get_records(ShardIterator="garbage")
    assert err.value.response["Error"]["Code"] == "InvalidArgumentException"


def kpl_aggregates(records: list[tuple[str, bytes]], max_size: int) -> list[Any]:
    """Aggregates built by aws-kinesis-agg (the AWS library), an independent encoder."""
    agg = RecordAggregator(max_size=max_size)
    out = []
    for key, data in records:
        full = agg.add_user_record(key, data)
        if full is not None:
            out.append(full)
    last = agg.clear_and_get()
    if last is not None:
        out.append(last)
    return out


def entry(aggregate: Any) -> dict[str, Any]:
    key, ehk, data = aggregate.get_contents()
    out = {"Data": data, "PartitionKey": key}
    if ehk is not None:
        out["ExplicitHashKey"] = ehk
    return out


async def test_user_records_inside_aggregates_are_counted(
    fake: FakeKinesis, kinesis: Any
) -> None:
    fake.reset()
    user = [(f"user-{i % 37}", f'{{"n":{i}}}'.encode()) for i in range(1_000)]
    aggregates = kpl_aggregates(user, max_size=4_000)
    assert len(aggregates) > 5
    entries = []
    for agg in aggregates:
        entries.append(entry(agg))
    entries.append({"Data": b"plain", "PartitionKey": "p"})
    # Magic bytes but a wrong MD5 trailer: plain data to a consumer, so one user record.
    entries.append({"Data": b"\xf3\x89\x9a\xc2" + b"\x00" * 40, "PartitionKey": "p"})
    await kinesis.put_records(StreamName="agg", Records=entries)
    stats = fake.stats()
    assert stats["kinesis_records"] == len(aggregates) + 2
    assert stats["user_records"] == 1_000 + 2
    # aws-kinesis-agg packs keys of every shard into one aggregate: the KCL would drop
    # those sub-records, and the fake says how many.
    assert stats["misrouted_user_records"] > 0


async def test_aggregate_on_one_shard_is_not_misrouted(fake: FakeKinesis, kinesis: Any) -> None:
    fake.reset()
    aggregates = kpl_aggregates([("same-key", b"x" * 10)] * 300, max_size=1024 * 1024)
    await kinesis.put_records(StreamName="agg1", Records=[entry(aggregates[0])])
    stats = fake.stats()
    assert (stats["kinesis_records"], stats["user_records"]) == (1, 300)
    assert stats["misrouted_user_records"] == 0


async def test_ordinary_concurrent_use(fake: FakeKinesis, kinesis: Any) -> None:
    fake.reset()
    batches = [[{"Data": f"{b}:{i}".encode() * 10, "PartitionKey": f"u{(b * 500 + i) % 1000}"}
                for i in range(500)] for b in range(24)]
    answers = await asyncio.gather(*(
        kinesis.put_records(StreamName="busy", Records=batch) for batch in batches))
    assert all(a["FailedRecordCount"] == 0 for a in answers)
    numbers = [r["SequenceNumber"] for a in answers for r in a["Records"]]
    assert len(set(numbers)) == 24 * 500
    stats = fake.stats()
    assert stats["kinesis_records"] == stats["user_records"] == 24 * 500
    assert stats["operations"]["PutRecords"] == 24
    assert stats["bytes"] == sum(len(e["Data"]) for b in batches for e in b)
    assert stats["rejected"] == {}


async def test_routing_matches_shardflow_shard_map(fake: FakeKinesis, kinesis: Any) -> None:
    await kinesis.create_stream(StreamName="shardmap", ShardCount=5)
    shard_map = ShardMap(await list_shards(kinesis, "shardmap"))
    keys = [f"user-{i}" for i in range(300)] + ["ключ", "k" * 256]
    answer = await kinesis.put_records(StreamName="shardmap", Records=[
        {"Data": b"x", "PartitionKey": key} for key in keys])
    for key, result in zip(keys, answer["Records"], strict=True):
        assert result["ShardId"] == shard_map.shard_for_key(key).shard_id
    assert len({r["ShardId"] for r in answer["Records"]}) == 5
