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
from support_consumer import POLL, collect, no_more, wait_until
from support_reliability import (
    faults,
    first_occurrences,
    merge,
    open_shards,
    out_of_order,
    read_user_records,
    report,
    split_in_half,
    tally,
)

pytestmark = pytest.mark.slow

THROTTLED = "ProvisionedThroughputExceededException"
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

    results = await asyncio.gather(*futures)  # every delivery succeeded
    stored, aggregates = await read_user_records(url, name)
    in_stream = tally(sent, [r.data for r in stored])
    end_to_end = tally(sent, [r.data for r in got])
    disorder = out_of_order(first_occurrences([r.data for r in got]))
    # Records the producer sent again after a failed try other than a throttle (e.g. an
    # aggregate that landed on another shard than predicted): the only ones that may
    # have been written twice, since no fault here drops an answer.
    resent = {
        data for data, result in zip(sent, results, strict=True)
        if any(a.error_code not in (None, THROTTLED) for a in result.attempts)
    }
    report(
        f"split+merge while producing and consuming (kinesalite, aggregate={aggregate})",
        records=len(sent), shards=len(list_shards(url, name)), shards_done=shards_done,
        faults=f"[{faults(counts)}]", aggregates=aggregates, resent_after_misroute=len(resent),
        stream_duplicates=in_stream.duplicates, consumer_repeats=end_to_end.duplicates,
        lost=len(end_to_end.missing), out_of_order=len(disorder),
    )
    assert len(list_shards(url, name)) == 5
    assert shards_done == 3
    assert not in_stream.missing
    assert not in_stream.unexpected
    assert not end_to_end.missing
    assert not end_to_end.unexpected
    assert disorder == []  # each key's first copies in put order, across the reshards
    # Copies only of re-sent records (none at all without aggregation; with it, see
    # test_a_split_while_aggregates_linger_writes_each_record_once). The consumer adds no
    # repeats of its own, and drops the copies that landed outside their shard (KCL).
    assert in_stream.repeated <= resent
    assert end_to_end.repeated <= in_stream.repeated
    assert end_to_end.duplicates <= in_stream.duplicates
    if not aggregate:
        assert in_stream.duplicates == 0
    # Records landed on the parents and on the open children (shard 3, the split's
    # upper child, is merged soon after it opens: it may hold none).
    assert {f"shardId-00000000000{i}" for i in (0, 1, 2, 4)} <= {r.shard_id for r in got}


async def test_a_split_while_aggregates_linger_writes_each_record_once(
    kinesalite_url: str,
) -> None:
    url = kinesalite_url
    name = create_stream(url, shards=1)
    sent = [b"key-%d:%d" % (i % 20, i) for i in range(200)]
    async with Producer(name, endpoint_url=url, aggregate=True, linger=5.0) as producer:
        warm = await producer.put(b"warm", partition_key="warm")
        await producer.flush()
        await warm  # the shard map is known: one shard
        futures = [await producer.put(d, partition_key=d.split(b":")[0].decode())
                   for d in sent]
        # The records wait in their aggregate (linger) while the shard splits.
        await anyio.to_thread.run_sync(split_in_half, url, name, "shardId-000000000000")
        await producer.flush()
        await asyncio.gather(*futures)
    async with Consumer(name, endpoint_url=url, poll_interval=POLL) as consumer:
        got = await collect(consumer, len(sent) + 1, within=30)
        extra = await no_more(consumer)
    stored, _ = await read_user_records(url, name)
    in_stream = tally([*sent, b"warm"], [r.data for r in stored])
    delivered = tally([*sent, b"warm"], [r.data for r in got + extra])
    report("split while aggregates linger (kinesalite)", records=len(sent),
           stream_duplicates=in_stream.duplicates, consumer_repeats=delivered.duplicates,
           lost=len(delivered.missing))
    assert not delivered.missing
    assert delivered.duplicates == 0
