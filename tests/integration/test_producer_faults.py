"""The producer under injected faults: shardflow.testing.FaultProxy in front of moto and
kinesalite. Per-entry throttling, request-level 5xx, connection resets, a stalled endpoint.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from typing import Any

import anyio

from shardflow import KinesisLimits, Producer, PutResult, errors
from shardflow.testing import FaultProxy

from support import create_stream, read_stream

THROTTLED = "ProvisionedThroughputExceededException"
SMALL_BATCHES = KinesisLimits(max_batch_records=20)  # many requests, so many faults


async def read_back(url: str, name: str) -> list[dict[str, Any]]:
    return await anyio.to_thread.run_sync(read_stream, url, name)


async def test_throttled_entries_are_retried_until_everything_is_delivered(
    kinesis_url: str,
) -> None:
    name = create_stream(kinesis_url, shards=2)
    async with FaultProxy(kinesis_url, seed=7, throttle_fraction=0.2) as proxy:
        async with Producer(name, endpoint_url=proxy.url, linger=0.02) as producer:
            futures = [
                await producer.put({"n": i}, partition_key=f"user-{i % 100}") for i in range(3000)
            ]
            results: list[PutResult] = await asyncio.gather(*futures)
            stats = producer.stats()
        counts = dict(proxy.counts)
    throttled = counts["throttled_entries"]
    assert throttled > 3000 * 0.1
    # every throttled entry is one failed attempt on the record it belonged to
    recorded = sum(a.error_code == THROTTLED for r in results for a in r.attempts)
    assert recorded == throttled
    assert stats.retried == throttled
    assert sum(len(r.attempts) > 1 for r in results) > 0
    assert all(r.attempts[-1].ok for r in results)
    for result in results:
        starts = [a.started_at for a in result.attempts]
        assert starts == sorted(starts)
    records = await read_back(kinesis_url, name)
    assert Counter(r["Data"] for r in records) == Counter(b'{"n":%d}' % i for i in range(3000))
    landed = {(r["ShardId"], r["SequenceNumber"]) for r in records}
    assert {(r.shard_id, r.sequence_number) for r in results} == landed


async def test_ordered_keeps_per_key_order_under_throttling(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    keys = [f"user-{i}" for i in range(30)]
    async with FaultProxy(
        kinesis_url, seed=3, throttle_fraction=0.2, internal_failure_fraction=0.05
    ) as proxy:
        async with Producer(
            name, endpoint_url=proxy.url, ordered=True, linger=0.01, max_in_flight=8
        ) as producer:
            futures = []
            for n in range(40):
                for key in keys:
                    futures.append(
                        await producer.put(b"%s:%d" % (key.encode(), n), partition_key=key)
                    )
            await asyncio.gather(*futures)
        assert proxy.counts["throttled_entries"] > 0
    records = await read_back(kinesis_url, name)
    by_key: dict[str, list[int]] = defaultdict(list)
    for record in records:  # read_stream returns each shard in sequence order
        key, n = record["Data"].split(b":")
        by_key[key.decode()].append(int(n))
    assert dict(by_key) == {key: list(range(40)) for key in keys}


async def test_5xx_and_resets_before_forwarding_are_retried_without_duplicates(
    kinesis_url: str,
) -> None:
    name = create_stream(kinesis_url)
    async with FaultProxy(
        kinesis_url, seed=11, error_5xx_fraction=0.2, reset_before_fraction=0.2
    ) as proxy:
        async with Producer(
            name, endpoint_url=proxy.url, linger=0.01, limits=SMALL_BATCHES
        ) as producer:
            futures = [
                await producer.put(b"%d" % i, partition_key=f"k{i % 10}") for i in range(600)
            ]
            results: list[PutResult] = await asyncio.gather(*futures)
        counts = dict(proxy.counts)
    assert counts["errors_5xx"] + counts["resets_before"] > 0
    codes = Counter(a.error_code for r in results for a in r.attempts if not a.ok)
    assert codes  # the failed tries are recorded
    assert set(codes) <= {"InternalFailure", "ServiceUnavailable", "EndpointUnreachable"}
    records = await read_back(kinesis_url, name)
    assert sorted(r["Data"] for r in records) == sorted(b"%d" % i for i in range(600))


async def test_resets_after_the_write_deliver_at_least_once(kinesis_url: str) -> None:
    name = create_stream(kinesis_url)
    async with FaultProxy(kinesis_url, seed=5, reset_after_fraction=0.3) as proxy:
        async with Producer(
            name, endpoint_url=proxy.url, linger=0.01, limits=SMALL_BATCHES
        ) as producer:
            futures = [
                await producer.put(b"%d" % i, partition_key=f"k{i % 10}") for i in range(300)
            ]
            await asyncio.gather(*futures)
        assert proxy.counts["resets_after"] > 0
    records = await read_back(kinesis_url, name)
    assert {r["Data"] for r in records} == {b"%d" % i for i in range(300)}


async def test_stalled_endpoint_backpressure_and_close_does_not_hang(kinesis_url: str) -> None:
    name = create_stream(kinesis_url)
    async with FaultProxy(kinesis_url, stall=True) as proxy:
        producer = Producer(
            name, endpoint_url=proxy.url, max_queue_records=200, linger=0, record_ttl=60
        )
        async with producer:
            futures = [await producer.put(b"x", partition_key=f"k{i}") for i in range(200)]
            try:
                producer.put_nowait(b"y", partition_key="k")
            except errors.QueueFull:
                pass
            else:  # pragma: no cover - the assertion below reports it
                raise AssertionError("put_nowait accepted a record past the bound")
            with anyio.move_on_after(0.3) as scope:
                await producer.put(b"y", partition_key="k")
            assert scope.cancelled_caught
            stats = producer.stats()
            assert stats.queued == 200
            with anyio.fail_after(30):
                await producer.aclose(grace=0.5)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, errors.DeliveryFailed) for o in outcomes)
    assert producer.stats().queued == 0
