"""The consumer's OpenTelemetry instruments move as README's "Metrics and logs" says
(real SDK, in-memory reader; moto, FaultProxy for read throttles, DynamoDB leases on moto).
"""

from __future__ import annotations

import anyio

from shardflow import Consumer, DynamoDBLeases, SQLiteCheckpointer
from shardflow.testing import FaultProxy

from support import create_stream, unique_name
from support_consumer import POLL, collect, numbered, put_records, wait_until
from support_metrics import Metrics

BEHIND = "shardflow.consumer.millis_behind_latest"


async def test_reads_checkpoints_and_lag_falling_to_zero(moto_url: str, tmp_path: object) -> None:
    name = create_stream(moto_url, shards=1)
    put_records(moto_url, name, numbered(10, prefix="early"))
    await anyio.sleep(1.2)  # the next records arrive later: the first reads are behind
    put_records(moto_url, name, numbered(10, prefix="late"))
    m = Metrics()
    attrs = {"aws.kinesis.stream": name, "shardflow.app": "billing"}
    async with Consumer(
        name, endpoint_url=moto_url, app_name="billing", poll_interval=POLL,
        checkpointer=SQLiteCheckpointer(f"{tmp_path}/cp.db"),
        get_records_limit=5, max_buffer_records=5, meter_provider=m.provider,
    ) as consumer:
        first = await collect(consumer, 1)
        behind = m.points(BEHIND)
        assert len(behind) == 1
        assert behind[0].value > 0, behind
        assert behind[0].attributes["aws.kinesis.shard"] == first[0].shard_id
        records = first + await collect(consumer, 19)
        await consumer.checkpoint(records[-1])
        await wait_until(lambda: m.points(BEHIND)[0].value == 0)  # caught up
        assert m.unit(BEHIND) == "ms"
        assert m.value("shardflow.consumer.records.read", attrs) == 20
        assert m.value("shardflow.consumer.records.delivered", attrs) == 20
        assert m.value("shardflow.consumer.get_records.calls", attrs) >= 4
        assert m.value("shardflow.consumer.checkpoints.written", attrs) == 1
        assert m.value("shardflow.consumer.checkpoint.duration", attrs) == 1
        assert m.value("shardflow.consumer.leases.held", attrs) == 1
        assert m.value("shardflow.consumer.leases.taken", attrs) == 1
        assert m.value("shardflow.consumer.leases.lost", attrs) == 0
        assert m.value("shardflow.consumer.records.dropped", {"reason": "out_of_range"}) == 0
    assert m.points(BEHIND) == []  # closed: no shard reported


async def test_read_throttles_are_counted(moto_url: str) -> None:
    name = create_stream(moto_url, shards=2)
    put_records(moto_url, name, numbered(100))
    m = Metrics()
    async with FaultProxy(moto_url, seed=5, read_throttle_fraction=0.4) as proxy:
        async with Consumer(
            name, endpoint_url=proxy.url, poll_interval=POLL, get_records_limit=10,
            meter_provider=m.provider,
        ) as consumer:
            await collect(consumer, 100)
            stats = consumer.stats()
            throttled = m.value("shardflow.consumer.get_records.throttled")
        counts = dict(proxy.counts)
    assert counts["read_throttled"] > 0
    assert throttled == stats.throttled
    assert 0 < throttled <= counts["read_throttled"]


async def test_leases_taken_and_lost_in_a_group(moto_url: str) -> None:
    name = create_stream(moto_url, shards=2)
    table = unique_name("leases")
    ma, mb = Metrics(), Metrics()

    def worker(worker_id: str, m: Metrics) -> Consumer:
        leases = DynamoDBLeases(
            table, worker_id=worker_id, failover_time=1.0, endpoint_url=moto_url,
            meter_provider=m.provider,
        )
        return Consumer(
            name, endpoint_url=moto_url, app_name="group", checkpointer=leases,
            poll_interval=POLL, meter_provider=m.provider,
        )

    async with worker("a", ma):
        await wait_until(lambda: ma.value("shardflow.consumer.leases.taken") == 2, within=20)
        assert ma.value("shardflow.consumer.leases.held") == 2
        async with worker("b", mb):
            # b steals one lease from a (the KCL's taker: one at a time, up to its share)
            await wait_until(lambda: mb.value("shardflow.consumer.leases.taken") == 1, within=20)
            await wait_until(lambda: ma.value("shardflow.consumer.leases.lost") == 1, within=20)
            assert ma.value("shardflow.consumer.leases.held") == 1
            assert mb.value("shardflow.consumer.leases.held") == 1
            table_attrs = {"aws.dynamodb.table": table, "shardflow.app": "group"}
            await wait_until(lambda: ma.value("shardflow.leases.workers", table_attrs) == 2)
            assert ma.value("shardflow.leases.owned", table_attrs) == 1
            assert mb.value("shardflow.leases.owned", table_attrs) == 1
            assert ma.value("shardflow.leases.total", table_attrs) == 2
