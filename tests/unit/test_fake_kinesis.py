"""The benchmark fake Kinesis answers like Kinesis: metadata, routing, sequence numbers, reads.

Client: boto3 (the independent referee). Routing is checked against MD5 computed here and
the hash-key ranges the fake itself publishes through ListShards.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

import support_bench  # noqa: F401  (puts the repository root on sys.path)
from benchmarks.fake_kinesis import FakeKinesis, fake_kinesis, hash_key


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeKinesis]:
    with fake_kinesis(shards=4, store=True) as running:
        yield running


def client(url: str) -> Any:
    return boto3.client("kinesis", endpoint_url=url, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}))


def md5_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode()).digest(), "big")


def shard_for(shards: list[dict[str, Any]], value: int) -> str:
    hits = [s["ShardId"] for s in shards
            if int(s["HashKeyRange"]["StartingHashKey"]) <= value
            <= int(s["HashKeyRange"]["EndingHashKey"])]
    assert len(hits) == 1, f"hash key {value} is in {len(hits)} shards"
    return hits[0]


def read_shard(kinesis: Any, stream: str, shard_id: str, **start: Any) -> list[dict[str, Any]]:
    kind = start.pop("kind", "TRIM_HORIZON")
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id,
                                    ShardIteratorType=kind, **start)["ShardIterator"]
    out: list[dict[str, Any]] = []
    while True:
        page = kinesis.get_records(ShardIterator=it, Limit=300)
        out.extend(page["Records"])
        it = page["NextShardIterator"]
        if not page["Records"]:
            return out


def test_hash_key_is_md5_big_endian() -> None:
    for key in ("a", "user-00042", "ключ", "x" * 256):
        assert hash_key(key) == md5_key(key)


def test_hash_key_matches_shardflow_shardmap() -> None:
    shardmap = pytest.importorskip("shardflow.shardmap")
    fn = getattr(shardmap, "hash_key", None)
    if fn is None:
        pytest.skip("shardflow.shardmap has no hash_key yet")
    for key in ("a", "user-00042", "ключ", "x" * 256):
        assert int(fn(key)) == hash_key(key)


def test_streams_exist_on_first_use_with_even_shards(fake: FakeKinesis) -> None:
    kinesis = client(fake.url)
    shards = kinesis.list_shards(StreamName="auto-created")["Shards"]
    assert [s["ShardId"] for s in shards] == [f"shardId-{i:012d}" for i in range(4)]
    starts = [int(s["HashKeyRange"]["StartingHashKey"]) for s in shards]
    ends = [int(s["HashKeyRange"]["EndingHashKey"]) for s in shards]
    assert starts[0] == 0
    assert ends[-1] == 2**128 - 1
    assert all(ends[i] + 1 == starts[i + 1] for i in range(3))
    assert len({e - s for s, e in zip(starts, ends, strict=True)}) == 1  # even split
    summary = kinesis.describe_stream_summary(StreamName="auto-created")
    desc = summary["StreamDescriptionSummary"]
    assert desc["StreamStatus"] == "ACTIVE"
    assert desc["OpenShardCount"] == 4
    assert desc["StreamARN"].endswith(":stream/auto-created")


def test_create_describe_list_delete(fake: FakeKinesis) -> None:
    kinesis = client(fake.url)
    kinesis.create_stream(StreamName="made", ShardCount=3)
    with pytest.raises(ClientError) as err:
        kinesis.create_stream(StreamName="made", ShardCount=3)
    assert err.value.response["Error"]["Code"] == "ResourceInUseException"
    desc = kinesis.describe_stream(StreamName="made")["StreamDescription"]
    assert len(desc["Shards"]) == 3
    assert desc["HasMoreShards"] is False
    page = kinesis.describe_stream(StreamName="made", Limit=2)["StreamDescription"]
    assert len(page["Shards"]) == 2
    assert page["HasMoreShards"] is True
    assert "made" in kinesis.list_streams()["StreamNames"]
    # ListShards pagination: NextToken alone, as AWS requires.
    first = kinesis.list_shards(StreamName="made", MaxResults=2)
    rest = kinesis.list_shards(NextToken=first["NextToken"])
    ids = [s["ShardId"] for s in first["Shards"] + rest["Shards"]]
    assert ids == [f"shardId-{i:012d}" for i in range(3)]
    assert "NextToken" not in rest
    with pytest.raises(ClientError) as err:
        kinesis.list_shards(StreamName="made", NextToken=first["NextToken"])
    assert err.value.response["Error"]["Code"] == "InvalidArgumentException"
    kinesis.delete_stream(StreamName="made")
    assert "made" not in kinesis.list_streams()["StreamNames"]
    with pytest.raises(ClientError) as err:
        kinesis.delete_stream(StreamName="made")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_put_records_routes_by_md5_and_numbers_per_shard(fake: FakeKinesis) -> None:
    kinesis = client(fake.url)
    stream = "routing"
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    sent: list[tuple[str, bytes, dict[str, Any]]] = []
    for batch in range(3):
        entries = [{"Data": f"event {batch}-{i}".encode(), "PartitionKey": f"user-{i % 97}"}
                   for i in range(400)]
        answer = kinesis.put_records(StreamName=stream, Records=entries)
        assert answer["FailedRecordCount"] == 0
        assert len(answer["Records"]) == 400
        sent.extend((e["PartitionKey"], e["Data"], r)
                    for e, r in zip(entries, answer["Records"], strict=True))
    for key, _, result in sent:
        assert result["ShardId"] == shard_for(shards, md5_key(key))
        assert len(result["SequenceNumber"]) == 56
        assert result["SequenceNumber"].isdigit()
    # Reading back: every record once, in put order per shard, with the same numbers.
    by_shard: dict[str, list[tuple[str, bytes, str]]] = {}
    for key, data, result in sent:
        by_shard.setdefault(result["ShardId"], []).append((key, data, result["SequenceNumber"]))
    for shard in shards:
        got = read_shard(kinesis, stream, shard["ShardId"])
        assert [(r["PartitionKey"], r["Data"], r["SequenceNumber"]) for r in got] == \
            by_shard.get(shard["ShardId"], [])
        numbers = [int(r["SequenceNumber"]) for r in got]
        assert numbers == sorted(set(numbers))
        assert all(isinstance(r["ApproximateArrivalTimestamp"], dt.datetime) for r in got)


def test_explicit_hash_key_and_stream_arn(fake: FakeKinesis) -> None:
    kinesis = client(fake.url)
    shards = kinesis.list_shards(StreamName="ehk")["Shards"]
    arn = kinesis.describe_stream_summary(StreamName="ehk")["StreamDescriptionSummary"][
        "StreamARN"]
    target = shards[2]["HashKeyRange"]["StartingHashKey"]
    answer = kinesis.put_records(StreamARN=arn, Records=[
        {"Data": b"a", "PartitionKey": "whatever", "ExplicitHashKey": target},
        {"Data": b"b", "PartitionKey": "whatever", "ExplicitHashKey": str(2**128 - 1)},
        {"Data": b"", "PartitionKey": "empty data is allowed"},
    ])
    assert [r["ShardId"] for r in answer["Records"][:2]] == [shards[2]["ShardId"],
                                                            shards[3]["ShardId"]]
    single = kinesis.put_record(StreamARN=arn, Data=b"c", PartitionKey="k",
                                ExplicitHashKey="0")
    assert single["ShardId"] == shards[0]["ShardId"]
    single2 = kinesis.put_record(StreamName="ehk", Data=b"d", PartitionKey="k",
                                 ExplicitHashKey="0")
    assert int(single2["SequenceNumber"]) > int(single["SequenceNumber"])


def test_iterator_types(fake: FakeKinesis) -> None:
    kinesis = client(fake.url)
    stream = "iterators"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    shard = "shardId-000000000000"
    first = kinesis.put_records(StreamName=stream, Records=[
        {"Data": f"old {i}".encode(), "PartitionKey": "k"} for i in range(5)])["Records"]
    latest = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                        ShardIteratorType="LATEST")["ShardIterator"]
    time.sleep(0.01)  # arrival times are distinct from here on (not a race: a clock step)
    boundary = time.time()
    kinesis.put_records(StreamName=stream, Records=[
        {"Data": f"new {i}".encode(), "PartitionKey": "k"} for i in range(3)])
    page = kinesis.get_records(ShardIterator=latest)
    assert [r["Data"] for r in page["Records"]] == [b"new 0", b"new 1", b"new 2"]
    assert page["MillisBehindLatest"] == 0
    at = read_shard(kinesis, stream, shard, kind="AT_SEQUENCE_NUMBER",
                    StartingSequenceNumber=first[3]["SequenceNumber"])
    assert [r["Data"] for r in at][:2] == [b"old 3", b"old 4"]
    after = read_shard(kinesis, stream, shard, kind="AFTER_SEQUENCE_NUMBER",
                       StartingSequenceNumber=first[3]["SequenceNumber"])
    assert after[0]["Data"] == b"old 4"
    assert len(after) == 4
    stamped = read_shard(kinesis, stream, shard, kind="AT_TIMESTAMP",
                         Timestamp=dt.datetime.fromtimestamp(boundary, dt.timezone.utc))
    assert [r["Data"] for r in stamped] == [b"new 0", b"new 1", b"new 2"]
    # Limit, NextShardIterator and MillisBehindLatest while behind.
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    page = kinesis.get_records(ShardIterator=it, Limit=2)
    assert [r["Data"] for r in page["Records"]] == [b"old 0", b"old 1"]
    assert page["MillisBehindLatest"] >= 0
    page = kinesis.get_records(ShardIterator=page["NextShardIterator"], Limit=2)
    assert [r["Data"] for r in page["Records"]] == [b"old 2", b"old 3"]
    with pytest.raises(ClientError) as err:
        kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000009",
                                   ShardIteratorType="TRIM_HORIZON")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    other = kinesis.put_records(StreamName="routing", Records=[
        {"Data": b"x", "PartitionKey": "k"}])["Records"][0]["SequenceNumber"]
    with pytest.raises(ClientError) as err:
        kinesis.get_shard_iterator(StreamName=stream, ShardId=shard,
                                   ShardIteratorType="AT_SEQUENCE_NUMBER",
                                   StartingSequenceNumber=other)
    assert err.value.response["Error"]["Code"] == "InvalidArgumentException"


def test_without_store_reads_are_empty_and_counts_still_kept() -> None:
    with fake_kinesis(shards=2) as bare:
        kinesis = client(bare.url)
        kinesis.put_records(StreamName="s", Records=[
            {"Data": base64.b64decode("AAAA"), "PartitionKey": str(i)} for i in range(10)])
        it = kinesis.get_shard_iterator(StreamName="s", ShardId="shardId-000000000000",
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        page = kinesis.get_records(ShardIterator=it)
        assert page["Records"] == []
        assert page["NextShardIterator"]
        stats = bare.stats()
        assert stats["kinesis_records"] == 10
        assert stats["user_records"] == 10
        assert stats["bytes"] == 30
        assert stats["streams"]["s"]["shards"] == 2
        bare.reset()
        stats = bare.stats()
        assert stats["kinesis_records"] == 0
        assert stats["streams"] == {}
