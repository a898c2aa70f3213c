"""Split and merge on kinesalite (moto's are wrong) while a Producer writes and a
Consumer reads: nothing lost, nothing repeated, each key's order kept end to end.

The producer (``ordered=True``, through a FaultProxy that throttles 5 % of the entries,
so retries straddle the reshards) puts continuously; the test splits shard 0 once enough
records are delivered, later merges the split's upper child with shard 1, and stops the
producer after more records. The consumer checkpoints every record. The consumer alone
under resharding (records written with boto3) is tests/integration/test_consumer_resharding.py.
"""

from __future__ import annotations

import asyncio

import anyio
import pytest

from shardflow import Consumer, MemoryCheckpointer, Producer, PutResult, Record
from shardflow.testing import FaultProxy

from support import create_stream, list_shards
from support_consumer import POLL, no_more, wait_until
from support_reliability import (
    faults,
    merge,
    open_shards,
    out_of_order,
    read_user_records,
    report,
    split_in_half,
    tally,
)

pytestmark = pytest.mark.slow

KEYS = 40
STEP = 700  # records delivered between reshards


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregate"])
async def test_split_and_merge_while_producing_and_consuming(
    kinesalite_url: str, aggregate: bool
) -> None:
    url = kinesalite_url
    name = create_stream(url, shards=2)
    sent: list[bytes] = []
    futures: list[asyncio.Future[PutResult]] = []
    got: list[Record] = []
    stop = anyio.Event()
    checkpointer = MemoryCheckpointer()

    def delivered() -> int:
        return sum(f.done() for f in futures)

    async with FaultProxy(url, seed=17, throttle_fraction=0.05) as proxy, Producer(
        name, endpoint_url=proxy.url, ordered=True, aggregate=aggregate, linger=0.01,
        record_ttl=120,
    ) as producer, Consumer(
        name, endpoint_url=url, poll_interval=POLL, app_name="app", checkpointer=checkpointer,
        get_records_limit=100, resync_interval=0.3,
    ) as consumer:

        async def produce() -> None:
            n = 0
            while not stop.is_set():
                for key in range(KEYS):
                    data = b"key-%d:%d" % (key, n)
                    sent.append(data)
                    futures.append(await producer.put(data, partition_key=f"key-{key}"))
                n += 1
                await anyio.sleep(0.01)  # pace: the reshards happen mid-stream

        async def consume() -> None:
            async for record in consumer:
                got.append(record)
                await consumer.checkpoint(record)

        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            tg.start_soon(produce)
            await wait_until(lambda: delivered() >= STEP, within=30)
            await anyio.to_thread.run_sync(split_in_half, url, name, "shardId-000000000000")
            mark = delivered()
            await wait_until(lambda: delivered() >= mark + STEP, within=30)
            _, upper, right = (s["ShardId"] for s in open_shards(url, name))
            await anyio.to_thread.run_sync(merge, url, name, upper, right)
            mark = delivered()
            await wait_until(lambda: delivered() >= mark + STEP, within=30)
            stop.set()
            await producer.flush()
            await wait_until(lambda: len({r.data for r in got}) >= len(sent), within=60)
            assert await no_more(consumer) == []
            tg.cancel_scope.cancel()
        counts = dict(proxy.counts)
        shards_done = consumer.stats().shards_done

    await asyncio.gather(*futures)  # every delivery succeeded
    stored, aggregates = await read_user_records(url, name)
    in_stream = tally(sent, [r.data for r in stored])
    end_to_end = tally(sent, [r.data for r in got])
    disorder = out_of_order([r.data for r in got])
    report(
        f"split+merge while producing and consuming (kinesalite, aggregate={aggregate})",
        records=len(sent), shards=len(list_shards(url, name)), shards_done=shards_done,
        faults=f"[{faults(counts)}]", aggregates=aggregates,
        stream_duplicates=in_stream.duplicates, consumer_repeats=end_to_end.duplicates,
        lost=len(end_to_end.missing), out_of_order=len(disorder),
    )
    assert len(list_shards(url, name)) == 5
    assert shards_done == 3
    assert not in_stream.missing
    assert not in_stream.unexpected
    assert in_stream.duplicates == 0  # no resets here: nothing is written twice
    assert not end_to_end.missing
    assert not end_to_end.unexpected
    assert end_to_end.duplicates == 0
    assert disorder == []
    # Records landed on parents and on children.
    assert {r.shard_id for r in got} == {s["ShardId"] for s in list_shards(url, name)}
