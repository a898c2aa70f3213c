"""shardflow's Consumer, ``async for batch in consumer.batches()``."""

from __future__ import annotations

from shardflow import Consumer, KinesisLimits

from . import ReadContext

NAME = "shardflow_batches"
DESCRIPTION = "shardflow Consumer, batches(), TRIM_HORIZON"


async def run(ctx: ReadContext) -> None:
    limits = KinesisLimits(shard_read_bytes_per_s=10**12)
    async with Consumer(ctx.stream, endpoint_url=ctx.url, poll_interval=0.2,
                        limits=limits) as consumer, ctx.timer:
        async for batch in consumer.batches():
            ctx.seen += len(batch)
            if ctx.seen >= ctx.records:
                break
