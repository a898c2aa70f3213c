"""Log records carry ``stream`` and ``shard`` as extra fields where they apply, so that
a JSON log formatter (or a filter) can use them without parsing messages."""

from __future__ import annotations

import logging

import pytest

from shardflow import Consumer, DynamoDBLeases, Producer, errors
from shardflow.testing import FaultProxy

from support import create_stream, unique_name
from support_consumer import POLL, collect, numbered, put_records


async def test_consumer_records_carry_stream_and_shard(
    moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = create_stream(moto_url, shards=2)
    put_records(moto_url, name, numbered(60))
    caplog.set_level(logging.DEBUG, logger="shardflow")
    leases = DynamoDBLeases(unique_name("leases"), worker_id="w1", endpoint_url=moto_url)
    async with FaultProxy(moto_url, seed=3, read_throttle_fraction=0.5) as proxy, Consumer(
        name, endpoint_url=proxy.url, app_name="billing", checkpointer=leases,
        poll_interval=POLL, get_records_limit=10,
    ) as consumer:
        records = await collect(consumer, 60)
        await consumer.checkpoint(records[-1])
    shard_ids = {r.shard_id for r in records}
    ours = [r for r in caplog.records if r.name.startswith("shardflow.consumer")]
    assert ours
    for record in ours:
        assert getattr(record, "stream", None) == name, record.getMessage()
        assert getattr(record, "app", None) == "billing", record.getMessage()
    # the readers' lines (GetRecords throttled and retried) name their shard
    retried = [r for r in ours if r.getMessage().startswith("GetRecords on")]
    assert retried
    for record in retried:
        assert record.getMessage().startswith(f"GetRecords on {record.shard}")  # type: ignore[attr-defined]
    # lease lines name the shard they are about
    took = [r for r in ours if " took " in r.getMessage()]
    assert {r.shard for r in took} == shard_ids  # type: ignore[attr-defined]


async def test_producer_records_carry_the_stream(
    moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="shardflow")
    async with Producer("no-such-stream", endpoint_url=moto_url, record_ttl=2.0) as producer:
        deliveries = [producer.put_nowait(b"x", partition_key=f"k{i}") for i in range(3)]
        for delivery in deliveries:
            with pytest.raises(errors.DeliveryFailed):
                await delivery
    ours = [r for r in caplog.records if r.name == "shardflow.producer"]
    assert [r.levelname for r in ours if "not delivered" in r.getMessage()] == ["WARNING"]
    for record in ours:
        assert getattr(record, "stream", None) == "no-such-stream", record.getMessage()
