"""shardflow's Producer, aggregation off: every event put() with its partition key, and
every record's delivery future checked, so the per-record results are part of the cost."""

from __future__ import annotations

import asyncio

from shardflow import Producer, PutResult

from . import RunContext

NAME = "shardflow"
DESCRIPTION = "shardflow Producer (per-record results, signed fast path), 8 in flight"
AGGREGATES = False


async def run(ctx: RunContext) -> None:
    async with Producer(
        ctx.stream, endpoint_url=ctx.url, region_name=ctx.region, rate_limit=None
    ) as producer:
        await producer.put_and_wait({"warm": "up"}, partition_key="warm-up")
        ctx.extra_records += 1
        events = ctx.events
        put = producer.put
        async with ctx.timer:
            deliveries: list[asyncio.Future[PutResult]] = [
                await put(event, partition_key=key) for key, event in events
            ]
            await producer.flush()
            failed = sum(1 for d in deliveries if d.exception() is not None)
            if failed:
                raise RuntimeError(f"{failed} records failed: {deliveries[0].exception()!r}")
