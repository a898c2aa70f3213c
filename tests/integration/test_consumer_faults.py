"""The consumer under read faults (shardflow.testing.FaultProxy in front of kinesalite):
every record is delivered exactly once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio

from shardflow import Consumer, Shard
from shardflow.consumer import AssignmentListener, Checkpoint, ConsumerScope
from shardflow.testing import FaultProxy

from support import create_stream
from support_consumer import (
    POLL,
    assert_per_key_order,
    collect,
    no_more,
    numbered,
    put_records,
    wait_until,
)


async def read_through(proxy: FaultProxy, name: str, n: int, **options: Any) -> Consumer:
    consumer = Consumer(
        name, endpoint_url=proxy.url, poll_interval=POLL, get_records_limit=40, **options
    )
    async with consumer:
        got = await collect(consumer, n, within=60)
        assert await no_more(consumer) == []
    assert len({r.data for r in got}) == n
    assert_per_key_order(got)
    return consumer


async def test_expired_iterators_lose_and_repeat_nothing(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=3)
    items = numbered(600)
    put_records(kinesalite_url, name, items)
    async with FaultProxy(kinesalite_url, seed=3, expire_iterator_fraction=0.3) as proxy:
        consumer = await read_through(proxy, name, len(items))
        assert proxy.counts["expired_iterators"] > 0
    assert consumer.stats().iterators_renewed == proxy.counts["expired_iterators"]


async def test_read_throttling_and_transport_errors(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=3)
    items = numbered(400)
    put_records(kinesalite_url, name, items)
    async with FaultProxy(
        kinesalite_url,
        seed=5,
        read_throttle_fraction=0.25,
        error_5xx_fraction=0.05,
        reset_before_fraction=0.05,
        reset_after_fraction=0.05,
        operations={"*"},
    ) as proxy:
        consumer = await read_through(proxy, name, len(items))
        counts = dict(proxy.counts)
    stats = consumer.stats()
    assert counts["read_throttled"] > 0
    # A throttled answer can also be dropped by a reset: the client then sees the reset.
    assert 0 < stats.throttled <= counts["read_throttled"]
    assert stats.retries > 0
    assert counts["resets_after"] + counts["errors_5xx"] + counts["resets_before"] > 0


async def test_pacing_stays_within_aws_read_limits(kinesalite_url: str) -> None:
    # 5 GetRecords calls/s per shard, enforced by the proxy: the consumer never exceeds it.
    name = create_stream(kinesalite_url, shards=2)
    items = numbered(800)
    put_records(kinesalite_url, name, items)
    async with FaultProxy(kinesalite_url, enforce_read_limits=True) as proxy:
        consumer = await read_through(proxy, name, len(items))
        counts = dict(proxy.counts)
    assert consumer.stats().get_records_calls >= 800 // 40
    assert counts["read_limited"] == 0


class HangingCheckpointer:
    """Every shard is ours; saves never complete (a store that stopped answering)."""

    @asynccontextmanager
    async def bind(
        self, scope: ConsumerScope, listener: AssignmentListener
    ) -> AsyncIterator[HangingCheckpointer]:
        yield self

    async def assign(self, shards: Sequence[Shard]) -> Collection[str]:
        return {s.shard_id for s in shards}

    async def get(self, shard_id: str) -> Checkpoint | None:
        return None

    async def save(self, shard_id: str, checkpoint: Checkpoint) -> None:
        await anyio.sleep_forever()


async def test_close_never_hangs(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=2)
    put_records(kinesalite_url, name, numbered(20))
    async with FaultProxy(kinesalite_url) as proxy:
        consumer = Consumer(
            name, endpoint_url=proxy.url, poll_interval=POLL, app_name="app",
            checkpointer=HangingCheckpointer(), close_timeout=0.5,
        )
        with anyio.fail_after(10):
            async with consumer, anyio.create_task_group() as tg:
                got = await collect(consumer, 20)
                tg.start_soon(consumer.checkpoint, got[-1])  # never returns
                proxy.configure(stall=True)  # and every read hangs from now on
                await wait_until(lambda: proxy.counts["stalled"] > 0)
                await consumer.aclose()
                tg.cancel_scope.cancel()
        assert consumer.stats().shards_reading == 0
