"""The producer's OpenTelemetry instruments move as README's "Metrics and logs" says
(real SDK, in-memory reader; moto behind FaultProxy for throttles)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from shardflow import Producer, errors
from shardflow.testing import FaultProxy

from support import create_stream
from support_metrics import Metrics

STREAM = "aws.kinesis.stream"
THROTTLED = "ProvisionedThroughputExceededException"


async def test_throttles_retries_and_deliveries_are_counted(moto_url: str) -> None:
    name = create_stream(moto_url, shards=2)
    m = Metrics()
    async with FaultProxy(moto_url, seed=11, throttle_fraction=0.3) as proxy:
        async with Producer(
            name, endpoint_url=proxy.url, linger=0.02, meter_provider=m.provider
        ) as producer:
            futures = [await producer.put({"n": i}, partition_key=f"k{i}") for i in range(400)]
            assert m.value("shardflow.producer.records.queued") > 0
            await asyncio.gather(*futures)
            stats = producer.stats()
        throttled = proxy.counts["throttled_entries"]
    attrs = {STREAM: name}
    assert throttled > 0
    assert m.value("shardflow.producer.entries.throttled", attrs) == throttled
    assert m.value("shardflow.producer.entries.errors", {"error.type": THROTTLED}) == throttled
    assert m.value("shardflow.producer.records.retried", attrs) == stats.retried == throttled
    assert m.value("shardflow.producer.records.put", attrs) == 400
    assert m.value("shardflow.producer.records.delivered", attrs) == 400
    assert m.value("shardflow.producer.records.queued", attrs) == 0
    assert m.value("shardflow.producer.bytes.queued", attrs) == 0
    assert m.value("shardflow.producer.requests.in_flight", attrs) == 0
    assert m.value("shardflow.producer.requests", attrs) == stats.requests
    assert m.value("shardflow.producer.request.duration", attrs) == stats.requests
    assert m.unit("shardflow.producer.request.duration") == "s"
    assert m.points("shardflow.producer.records.failed") == []


async def test_failures_are_counted_by_error_code(moto_url: str) -> None:
    m = Metrics()
    async with Producer(
        "no-such-stream", endpoint_url=moto_url, meter_provider=m.provider, record_ttl=2.0
    ) as producer:
        delivery = producer.put_nowait(b"x", partition_key="k")
        with pytest.raises(errors.DeliveryFailed):
            await delivery
    not_found = {"error.type": "ResourceNotFoundException"}
    assert m.value("shardflow.producer.records.failed", not_found) == 1
    assert m.value("shardflow.producer.records.put") == 1


async def test_aggregates_and_records_per_aggregate(moto_url: str) -> None:
    name = create_stream(moto_url, shards=1)
    m = Metrics()
    async with Producer(
        name, endpoint_url=moto_url, aggregate=True, linger=0.05, meter_provider=m.provider
    ) as producer:
        puts = [producer.put_nowait(b"%d" % i, partition_key="k") for i in range(50)]
        await asyncio.gather(*puts)
    aggregates = m.points("shardflow.producer.aggregate.records")
    assert m.value("shardflow.producer.aggregates", {STREAM: name}) >= 1
    assert sum(p.sum for p in aggregates) == 50
    assert sum(p.count for p in aggregates) == m.value("shardflow.producer.aggregates")


def test_meter_provider_is_checked() -> None:
    with pytest.raises(TypeError, match="meter_provider"):
        Producer("s", region_name="us-east-1", meter_provider=object())


def test_every_producer_of_a_provider_reports_while_it_lives() -> None:
    m = Metrics()
    first = Producer("orders", region_name="us-east-1", meter_provider=m.provider)
    second = Producer("clicks", region_name="us-east-1", meter_provider=m.provider)
    streams = {p.attributes[STREAM] for p in m.points("shardflow.producer.records.put")}
    assert streams == {"orders", "clicks"}
    del second
    gc.collect()
    streams = {p.attributes[STREAM] for p in m.points("shardflow.producer.records.put")}
    assert streams == {"orders"}
    assert first.stats().queued == 0
