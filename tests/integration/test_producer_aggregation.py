"""The aggregating producer against moto and kinesalite: what it writes deaggregates
exactly with aws-kinesis-agg (the AWS library) and with shardflow's Consumer, with the
sub-sequence numbers its PutResults announced; aggregates never mix shards; large
records go alone; a split while producing loses nothing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from typing import Any

import anyio
from aws_kinesis_agg import deaggregator

from shardflow import Consumer, Producer, PutResult, Record
from shardflow.aggregation import deaggregate
from shardflow.producer import WRONG_SHARD

from support import create_stream, kinesis, list_shards, read_stream, wait_active
from support_consumer import POLL, collect
from support_kcl import read_with_kcl_rules

Sub = tuple[str, "str | None", bytes]


async def read_back(url: str, name: str) -> list[dict[str, Any]]:
    return await anyio.to_thread.run_sync(read_stream, url, name)


def their_deaggregate(record: dict[str, Any]) -> list[Sub] | None:
    """aws-kinesis-agg's reading of one raw Kinesis record: its sub-records, or None when
    it is not an aggregate."""
    out: list[Sub] = []
    boto3_record = {**record, "ApproximateArrivalTimestamp": 0}
    for item in deaggregator.iter_deaggregate_records([boto3_record], data_format="Boto3"):
        data = item["kinesis"]
        if not data.get("aggregated"):
            return None
        out.append(
            (data["partitionKey"], data.get("explicitHashKey"), base64.b64decode(data["data"]))
        )
    return out


def ranges(url: str, name: str) -> dict[str, tuple[int, int]]:
    return {
        s["ShardId"]: (
            int(s["HashKeyRange"]["StartingHashKey"]),
            int(s["HashKeyRange"]["EndingHashKey"]),
        )
        for s in list_shards(url, name)
    }


def hash_of(key: str, ehk: str | None) -> int:
    return int(ehk) if ehk is not None else int(hashlib.md5(key.encode()).hexdigest(), 16)


Where = tuple[str, str, "int | None"]
"""(shard id, sequence number, sub-sequence number or None): moto numbers per shard."""


def where_of(result: PutResult) -> Where:
    return (result.shard_id, result.sequence_number, result.sub_sequence_number)


def unpacked(records: list[dict[str, Any]]) -> dict[Where, tuple[str, bytes]]:
    """Where -> (partition key, data) of every user record, read with aws-kinesis-agg;
    checks that shardflow's own decoder agrees on every aggregate."""
    out: dict[Where, tuple[str, bytes]] = {}
    for record in records:
        subs = their_deaggregate(record)
        assert deaggregate(record["Data"]) == subs
        at = (record["ShardId"], record["SequenceNumber"])
        if subs is None:
            out[(*at, None)] = (record["PartitionKey"], record["Data"])
        else:
            for index, (key, _, data) in enumerate(subs):
                out[(*at, index)] = (key, data)
    return out


def assert_no_mixed_shards(url: str, name: str, records: list[dict[str, Any]]) -> int:
    """Every aggregate's sub-records hash into the shard it is on; returns how many
    aggregates there are."""
    shard_ranges = ranges(url, name)
    aggregates = 0
    for record in records:
        subs = deaggregate(record["Data"])
        if subs is None:
            continue
        aggregates += 1
        low, high = shard_ranges[record["ShardId"]]
        for key, ehk, _ in subs:
            assert low <= hash_of(key, ehk) <= high, (record["ShardId"], key)
    return aggregates


async def test_aggregates_deaggregate_exactly_with_aws_kinesis_agg(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=4)
    events = [
        (f"user-{i % 300}", b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i % 200))) for i in range(3000)
    ]
    async with Producer(name, endpoint_url=kinesis_url, aggregate=True, linger=0.05) as producer:
        futures = [await producer.put(data, partition_key=key) for key, data in events]
        results: list[PutResult] = await asyncio.gather(*futures)
        stats = producer.stats()
    records = await read_back(kinesis_url, name)
    assert len(records) == stats.kinesis_records < len(events) / 10
    assert assert_no_mixed_shards(kinesis_url, name, records) >= 4
    where = unpacked(records)
    assert len(where) == len(events)  # nothing lost, nothing twice
    for (key, data), result in zip(events, results, strict=True):
        assert where[where_of(result)] == (key, data)


async def test_the_consumer_reads_what_the_put_results_announced(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    events = [(f"k{i % 40}", b"event-%d" % i) for i in range(1500)]
    async with Producer(name, endpoint_url=kinesis_url, aggregate=True, linger=0.05) as producer:
        futures = [await producer.put(data, partition_key=key) for key, data in events]
        results: list[PutResult] = await asyncio.gather(*futures)
    announced = {
        (r.shard_id, r.sequence_number, r.sub_sequence_number): event
        for r, event in zip(results, events, strict=True)
    }
    assert any(sub is not None for _, _, sub in announced)
    async with Consumer(name, endpoint_url=kinesis_url, poll_interval=POLL) as consumer:
        read: list[Record] = await collect(consumer, len(events), within=60)
    got = {
        (r.shard_id, r.sequence_number, r.sub_sequence_number): (r.partition_key, r.data)
        for r in read
    }
    assert got == announced


async def test_records_larger_than_the_aggregate_limit_go_alone(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    sizes = [10, 900, 5000, 20, 1500, 3, 999, 40_000] * 5
    events = [(f"k{i % 5}", bytes([97 + i % 26]) * size) for i, size in enumerate(sizes)]
    async with Producer(
        name, endpoint_url=kinesis_url, aggregate=True, max_aggregate_bytes=1000, linger=0.05
    ) as producer:
        futures = [await producer.put(data, partition_key=key) for key, data in events]
        results: list[PutResult] = await asyncio.gather(*futures)
    records = await read_back(kinesis_url, name)
    where = unpacked(records)
    assert len(where) == len(events)
    for (key, data), result in zip(events, results, strict=True):
        assert where[where_of(result)] == (key, data)
        if len(data) + len(key) > 1000:
            assert result.sub_sequence_number is None
    for record in records:
        if deaggregate(record["Data"]) is not None:
            assert len(record["Data"]) + len(record["PartitionKey"]) <= 1000
    assert assert_no_mixed_shards(kinesis_url, name, records) > 0


async def test_a_split_while_producing_loses_nothing_and_packing_follows(
    kinesalite_url: str,
) -> None:
    url = kinesalite_url
    name = create_stream(url, shards=2)
    keys = [f"user-{i}" for i in range(200)]
    async with Producer(name, endpoint_url=url, aggregate=True, linger=0.02) as producer:
        futures: list[asyncio.Future[PutResult]] = []
        for n in range(6):
            if n == 2:  # split the first shard at a third of its range, mid-stream
                low = min(ranges(url, name).items(), key=lambda item: item[1][0])
                cut = low[1][0] + (low[1][1] - low[1][0]) // 3
                kinesis(url).split_shard(
                    StreamName=name, ShardToSplit=low[0], NewStartingHashKey=str(cut)
                )
                await anyio.to_thread.run_sync(wait_active, url, name)
            for key in keys:
                futures.append(await producer.put(b"%s:%d" % (key.encode(), n), partition_key=key))
            await asyncio.sleep(0.05)
        results: list[PutResult] = await asyncio.gather(*futures)
        late = [await producer.put(b"%s:late" % k.encode(), partition_key=k) for k in keys]
        late_results: list[PutResult] = await asyncio.gather(*late)
        stats = producer.stats()
    assert stats.shard_map_refreshes >= 1
    assert stats.misrouted > 0  # aggregates packed with the old map landed on a child
    resent = [r for r in results if any(a.error_code == WRONG_SHARD for a in r.attempts)]
    print(f"misrouted aggregates: {stats.misrouted}; records sent again: {len(resent)}")
    assert resent
    records = await read_back(url, name)
    by_seq = {(r["ShardId"], r["SequenceNumber"]): r for r in records}
    where = unpacked(records)
    expected = [(k, b"%s:%d" % (k.encode(), n)) for n in range(6) for k in keys]
    expected += [(k, b"%s:late" % k.encode()) for k in keys]
    assert {v for v in where.values()} == set(expected)  # nothing lost
    # where each result points, a KCL application sees the record (support_kcl applies
    # AggregatorUtil's rules: an aggregate holding any record outside its shard's range
    # is dropped whole, so such an aggregate must not count as delivered)
    seen = {r.where: (r.partition_key, r.data) for r in await read_with_kcl_rules(url, name)}
    for (key, data), result in zip(expected, results + late_results, strict=True):
        assert where[where_of(result)] == (key, data)
        assert seen.get(where_of(result)) == (key, data)
    assert {v for v in seen.values()} == set(expected)  # the KCL sees every record
    # after the refresh, every aggregate is packed for the open shards
    open_ids = {
        s["ShardId"]
        for s in list_shards(url, name)
        if "EndingSequenceNumber" not in s["SequenceNumberRange"]
    }
    assert {r.shard_id for r in late_results} <= open_ids
    late_seqs = {(r.shard_id, r.sequence_number) for r in late_results}
    assert_no_mixed_shards(url, name, [by_seq[s] for s in late_seqs])
