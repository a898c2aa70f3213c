"""The shard map predicts where Kinesis puts records (moto and kinesalite), also after
resharding (kinesalite: moto's Split/Merge keep writing to the closed parent)."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack

import pytest

from shardflow import errors
from shardflow._core import aws as _aws
from shardflow.aggregation import AggregateBuilder, deaggregate
from shardflow.shardmap import MAX_HASH_KEY, ShardMap, hash_key, landing_hash_key

from support import create_stream, kinesis, read_stream, unique_name, wait_active


async def load(url: str, stream: str) -> ShardMap:
    async with AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "kinesis", endpoint_url=url)
        return ShardMap(await _aws.list_shards(client, stream))


def assert_predictions(url: str, stream: str, shard_map: ShardMap, seed: int) -> int:
    """Put records with boto3 (the referee) and check each landed on the predicted shard.

    Returns how many distinct shards received records.
    """
    rng = random.Random(seed)
    entries = [
        {"Data": b"x", "PartitionKey": f"user-{rng.randrange(10**6)}"} for _ in range(150)
    ]
    entries += [
        {"Data": b"y", "PartitionKey": "k", "ExplicitHashKey": str(rng.randrange(MAX_HASH_KEY))}
        for _ in range(50)
    ]
    entries += [
        {"Data": b"z", "PartitionKey": "k", "ExplicitHashKey": landing_hash_key(s)}
        for s in shard_map
    ]
    response = kinesis(url).put_records(StreamName=stream, Records=entries)
    assert response.get("FailedRecordCount", 0) == 0
    landed = set()
    for entry, result in zip(entries, response["Records"], strict=True):
        predicted = shard_map.shard_for_key(entry["PartitionKey"], entry.get("ExplicitHashKey"))
        assert result["ShardId"] == predicted.shard_id, entry
        landed.add(result["ShardId"])
    return len(landed)


async def test_records_land_where_the_map_predicts(kinesis_url: str) -> None:
    stream = create_stream(kinesis_url, shards=5)
    shard_map = await load(kinesis_url, stream)
    assert len(shard_map) == 5
    assert shard_map.complete
    assert assert_predictions(kinesis_url, stream, shard_map, seed=1) == 5


async def test_map_follows_split_and_merge_on_kinesalite(kinesalite_url: str) -> None:
    url = kinesalite_url
    stream = create_stream(url, shards=2)
    before = await load(url, stream)
    low, high = before.shards

    # Split the low shard at an uneven point.
    cut = low.starting_hash_key + (low.ending_hash_key - low.starting_hash_key) // 3
    kinesis(url).split_shard(
        StreamName=stream, ShardToSplit=low.shard_id, NewStartingHashKey=str(cut)
    )
    wait_active(url, stream)
    after_split = await load(url, stream)
    assert len(after_split) == 3
    assert low.shard_id not in after_split
    assert after_split.shard_for_hash(cut - 1).parent_shard_id == low.shard_id
    assert after_split.shard_for_hash(cut).parent_shard_id == low.shard_id
    assert after_split.shard_for_hash(cut).shard_id != after_split.shard_for_hash(cut - 1).shard_id
    assert assert_predictions(url, stream, after_split, seed=2) == 3

    # Merge the upper child with the old high shard.
    upper_child = after_split.shard_for_hash(cut)
    kinesis(url).merge_shards(
        StreamName=stream,
        ShardToMerge=upper_child.shard_id,
        AdjacentShardToMerge=high.shard_id,
    )
    wait_active(url, stream)
    after_merge = await load(url, stream)
    assert len(after_merge) == 2
    merged = after_merge.shard_for_hash(MAX_HASH_KEY)
    assert set(merged.parent_ids) == {upper_child.shard_id, high.shard_id}
    assert merged.starting_hash_key == cut
    assert assert_predictions(url, stream, after_merge, seed=3) == 2


async def test_aggregates_packed_per_shard_land_on_their_shard(kinesis_url: str) -> None:
    """The producer's recipe: pack sub-records by predicted shard, send each aggregate
    with the first key as partition key and the shard's landing hash key."""
    stream = create_stream(kinesis_url, shards=3)
    shard_map = await load(kinesis_url, stream)
    builders = {s.shard_id: AggregateBuilder() for s in shard_map}
    expected: dict[str, list[tuple[str, str | None, bytes]]] = {s.shard_id: [] for s in shard_map}
    for i in range(300):
        key = f"user-{i % 97}"
        shard_id = shard_map.shard_for_key(key).shard_id
        assert builders[shard_id].add(key, None, b"event-%d" % i) == len(expected[shard_id])
        expected[shard_id].append((key, None, b"event-%d" % i))
    entries = [
        {
            "Data": builders[shard.shard_id].build(),
            "PartitionKey": builders[shard.shard_id].partition_key,
            "ExplicitHashKey": landing_hash_key(shard),
        }
        for shard in shard_map
    ]
    response = kinesis(kinesis_url).put_records(StreamName=stream, Records=entries)
    assert [r["ShardId"] for r in response["Records"]] == [s.shard_id for s in shard_map]
    stored = read_stream(kinesis_url, stream)
    assert len(stored) == 3
    for item in stored:
        records = deaggregate(item["Data"])
        assert records == expected[item["ShardId"]]
        shard = shard_map.get(item["ShardId"])
        assert shard is not None
        assert all(shard.contains(hash_key(pk)) for pk, _, _ in records)


async def test_shard_map_of_a_missing_stream(kinesis_url: str) -> None:
    with pytest.raises(errors.StreamNotFound):
        await load(kinesis_url, unique_name("missing"))
