"""shardflow's Producer, aggregation off: every event put() with its partition key, then
every record's delivery checked, so per-record results are part of the cost.

``READ_RESULTS = False`` checks each delivery's outcome (``exception()``); the variant in
:mod:`benchmarks.contenders.shardflow_results` also reads every record's PutResult
(shard id and sequence number), which builds one PutResult object per record.
"""

from __future__ import annotations

import asyncio

from shardflow import KinesisLimits, Producer, PutResult

from . import RunContext

NAME = "shardflow"
DESCRIPTION = "shardflow Producer (per-record delivery checked), 8 in flight"
AGGREGATES = False
READ_RESULTS = False


async def produce(
    ctx: RunContext,
    *,
    read_results: bool,
    aggregate: bool = False,
    rate_limit: float | None = None,
    limits: KinesisLimits | None = None,
) -> None:
    """Put every event, flush, then check every delivery (timed); raise if one failed.

    Client-side pacing is off (``rate_limit=None``) unless asked, as for every contender.
    """
    async with Producer(
        ctx.stream, endpoint_url=ctx.url, region_name=ctx.region, rate_limit=rate_limit,
        aggregate=aggregate, limits=limits,
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
            failed = [d for d in deliveries if d.exception() is not None]
            if failed:
                raise RuntimeError(f"{len(failed)} records failed: {failed[0].exception()!r}")
            if read_results:
                missing = sum(1 for d in deliveries if not d.result().sequence_number)
                if missing:
                    raise RuntimeError(f"{missing} results without a sequence number")


async def run(ctx: RunContext) -> None:
    await produce(ctx, read_results=READ_RESULTS)
