"""The producer against real Kinesis implementations (moto and kinesalite) over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections import Counter, defaultdict
from contextlib import AsyncExitStack
from typing import Any

import anyio
import pytest

from shardflow import KinesisLimits, Producer, PutResult, errors
from shardflow._core import aws as _aws

from support import create_stream, kinesis, list_shards, read_stream

MiB = 1024 * 1024


async def read_back(url: str, name: str) -> list[dict[str, Any]]:
    return await anyio.to_thread.run_sync(read_stream, url, name)


async def test_20000_records_with_1000_keys_read_back_exactly(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=4)
    sent: dict[bytes, str] = {}
    results: dict[bytes, asyncio.Future[PutResult]] = {}
    async with Producer(name, endpoint_url=kinesis_url) as producer:
        for i in range(20_000):
            key = f"user-{i % 1000}"
            event = {"n": i, "user": key, "pad": "x" * 150}
            future = await producer.put(event, partition_key=key)
            data = b'{"n":%d,"user":"%s","pad":"%s"}' % (i, key.encode(), b"x" * 150)
            sent[data] = key
            results[data] = future
        await producer.flush()
        stats = producer.stats()
    assert stats.delivered == 20_000
    assert stats.failed == 0
    assert stats.requests >= 40
    records = await read_back(kinesis_url, name)
    assert len(records) == 20_000
    stored = {r["Data"]: r for r in records}
    assert len(stored) == 20_000  # no duplicates
    assert set(stored) == set(sent)  # no loss, bytes exact
    for data, future in results.items():
        result = future.result()
        record = stored[data]
        assert record["PartitionKey"] == sent[data]
        assert (result.shard_id, result.sequence_number) == (
            record["ShardId"],
            record["SequenceNumber"],
        )
        assert result.sub_sequence_number is None
        assert [a.error_code for a in result.attempts] == [None]


async def test_bursts_and_mixed_sizes_up_to_1_mib_respect_request_limits(
    kinesis_url: str,
) -> None:
    # moto rejects requests over 500 records or 5 MiB and records over 1 MiB; kinesalite
    # rejects over 500 records and 1 MiB of data: a breach fails deliveries below.
    name = create_stream(kinesis_url, shards=2)
    rng = random.Random(5)
    sizes = [MiB - 2] * 6 + [rng.choice([1, 900, 64_000, 300_000, 700_000]) for _ in range(30)]
    rng.shuffle(sizes)
    payloads = [bytes([97 + i % 26]) * size for i, size in enumerate(sizes)]
    burst = [b"%d" % i for i in range(2_600)]
    # (unpaced: paced, the ~12 MiB for one key's shard would take 12 s at 1 MiB/s)
    async with Producer(name, endpoint_url=kinesis_url, linger=0.05, rate_limit=None) as producer:
        big = [await producer.put(p, partition_key="k1") for p in payloads]
        small = [await producer.put(p, partition_key=f"k{i % 7}") for i, p in enumerate(burst)]
        outcomes = await asyncio.gather(*big, *small, return_exceptions=True)
        stats = producer.stats()
    failures = [o for o in outcomes if not isinstance(o, PutResult)]
    assert failures == []
    total = sum(len(p) + 2 for p in payloads) + sum(len(p) + 2 for p in burst)
    # the requests needed at least, by bytes and by records (and not one per record)
    least = max(math.ceil(total / (5 * MiB)), math.ceil((len(payloads) + len(burst)) / 500))
    assert least <= stats.requests < len(payloads) + len(burst) / 10
    records = await read_back(kinesis_url, name)
    assert Counter(r["Data"] for r in records) == Counter(payloads + burst)


async def test_record_at_the_size_limit_is_accepted_and_one_byte_more_is_not(
    kinesis_url: str,
) -> None:
    name = create_stream(kinesis_url)
    async with Producer(name, endpoint_url=kinesis_url, linger=0) as producer:
        with pytest.raises(errors.RecordTooLarge):
            await producer.put(b"x" * (MiB - 1), partition_key="kk")
        result = await producer.put_and_wait(b"x" * (MiB - 2), partition_key="kk")
    assert result.sequence_number
    records = await read_back(kinesis_url, name)
    assert [len(r["Data"]) for r in records] == [MiB - 2]


async def test_bad_input_fails_at_put_and_good_records_still_arrive(kinesis_url: str) -> None:
    name = create_stream(kinesis_url)
    bad_calls: list[tuple[Any, dict[str, Any], type[Exception]]] = [
        (b"x", {"partition_key": ""}, errors.InvalidPartitionKey),
        (b"x", {"partition_key": "k" * 257}, errors.InvalidPartitionKey),
        (b"x", {"partition_key": "k", "explicit_hash_key": str(2**128)}, errors.InvalidHashKey),
        (b"x" * MiB, {"partition_key": "k"}, errors.RecordTooLarge),
        ({"a": object()}, {"partition_key": "k"}, errors.SerializationError),
    ]
    async with Producer(name, endpoint_url=kinesis_url, linger=0.05) as producer:
        good = []
        for n, (obj, kwargs, error) in enumerate(bad_calls):
            good.append(await producer.put({"good": n}, partition_key="k"))
            with pytest.raises(error):
                await producer.put(obj, **kwargs)
        results = await asyncio.gather(*good)
    assert len(results) == len(bad_calls)
    assert all(r.attempts[-1].ok for r in results)
    with pytest.raises(errors.ProducerClosed):
        await producer.put(b"late", partition_key="k")
    records = await read_back(kinesis_url, name)
    assert [r["Data"] for r in records] == [b'{"good":%d}' % n for n in range(len(bad_calls))]


async def test_explicit_hash_key_picks_the_shard(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=3)
    shards = list_shards(kinesis_url, name)
    async with Producer(name, endpoint_url=kinesis_url, linger=0) as producer:
        results = []
        for shard in shards:
            # (moto treats EndingHashKey as exclusive: use the start of each range)
            start = shard["HashKeyRange"]["StartingHashKey"]
            results.append(
                await producer.put_and_wait(b"x", partition_key="same", explicit_hash_key=start)
            )
    assert [r.shard_id for r in results] == [s["ShardId"] for s in shards]


async def test_ordered_producer_keeps_per_key_order(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    async with Producer(name, endpoint_url=kinesis_url, ordered=True, linger=0.01) as producer:
        for n in range(60):
            for key in ("a", "b", "c", "d", "e"):
                await producer.put(b"%s:%d" % (key.encode(), n), partition_key=key)
        await producer.flush()
    records = await read_back(kinesis_url, name)
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in records:
        key, n = record["Data"].split(b":")
        by_key[key.decode()].append(int(n))
    assert dict(by_key) == {k: list(range(60)) for k in "abcde"}


async def test_an_injected_client_and_a_stream_arn_work(moto_url: str) -> None:
    name = create_stream(moto_url)
    arn = kinesis(moto_url).describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
        "StreamARN"
    ]
    async with AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "kinesis", endpoint_url=moto_url)
        async with Producer(arn, client=client, linger=0) as producer:
            result = await producer.put_and_wait({"via": "arn"}, partition_key="k")
        # the client stays usable: the producer does not close what it did not open
        await _aws.call(client, "describe_stream_summary", StreamName=name)
    records = await read_back(moto_url, name)
    assert [(r["SequenceNumber"], r["Data"]) for r in records] == [
        (result.sequence_number, b'{"via":"arn"}')
    ]


async def test_shard_of_each_result_matches_the_md5_of_its_key(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=4)
    shards = list_shards(kinesis_url, name)

    def owner(key: str) -> str:
        h = int(hashlib.md5(key.encode()).hexdigest(), 16)
        for s in shards:
            r = s["HashKeyRange"]
            if int(r["StartingHashKey"]) <= h <= int(r["EndingHashKey"]):
                return str(s["ShardId"])
        raise AssertionError(key)

    async with Producer(name, endpoint_url=kinesis_url, limits=KinesisLimits()) as producer:
        futures = {
            f"key-{i}": await producer.put(b"x", partition_key=f"key-{i}") for i in range(50)
        }
        await producer.flush()
    for key, future in futures.items():
        assert future.result().shard_id == owner(key)
