"""A DynamoDBLeases group reading through enhanced fan-out (kinesis-mock streams, moto's
DynamoDB): each worker subscribes only to the shards it holds, every record is delivered
once by its shard's owner, and when a worker leaves the other one subscribes to its
shards from their checkpoints."""

from __future__ import annotations

from collections import Counter

import anyio

from support import unique_name
from support_consumer import numbered, put_records
from support_fan_out import create_mock_stream, kinesis_mock_url  # noqa: F401
from support_leases import Delivery, GroupWorker, owners, wait_for, wait_loads


async def test_two_workers_share_the_shards_and_take_over_on_leave(
    kinesis_mock_url: str,  # noqa: F811
    moto_url: str,
) -> None:
    stream = unique_name("fo")
    create_mock_stream(kinesis_mock_url, stream, shards=4)
    table = unique_name("leases")
    log: list[Delivery] = []
    workers = [
        GroupWorker(f"w{i}", kinesis_url=kinesis_mock_url, dynamodb_url=moto_url,
                    stream=stream, table=table, failover_time=2.0, log=log, fan_out=True)
        for i in range(2)
    ]
    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
        counts = await wait_loads(moto_url, table,
                                  lambda c: None not in c and sorted(c.values()) == [2, 2],
                                  within=30)
        await wait_for(lambda: all(w.reading == counts[w.name] for w in workers), within=15)
        await wait_for(lambda: all(w.consumer.stats().subscriptions >= 2 for w in workers),
                       within=15, what="each worker subscribed to its two shards")
        owner_of = await anyio.to_thread.run_sync(owners, moto_url, table)
        first = numbered(200, keys=31, prefix="a")
        await anyio.to_thread.run_sync(put_records, kinesis_mock_url, stream, first)
        await wait_for(lambda: len(log) >= len(first), within=30)
        assert Counter(d.data for d in log) == Counter(d for _, d in first)
        assert all(owner_of[d.shard_id] == d.worker for d in log)
        assert all(w.consumer.stats().get_records_calls == 0 for w in workers)

        await workers[0].close()  # graceful: checkpoints, then its leases are released
        await wait_loads(moto_url, table, lambda c: c == Counter({"w1": 4}), within=30)
        second = numbered(200, keys=31, prefix="b")
        await anyio.to_thread.run_sync(put_records, kinesis_mock_url, stream, second)
        await wait_for(lambda: len(log) >= len(first) + len(second), within=40)
        await anyio.sleep(1.0)  # anything repeated would show up now
        later = log[len(first):]
        assert Counter(d.data for d in later) == Counter(d for _, d in second)
        assert {d.worker for d in later} == {"w1"}
        await workers[1].close()
    assert sum(w.lost for w in workers) == 0
