"""shardflow's Consumer, ``async for record in consumer`` (read pacing by bytes lifted)."""

from __future__ import annotations

from shardflow import Consumer, KinesisLimits

from . import ReadContext

NAME = "shardflow"
DESCRIPTION = "shardflow Consumer, async for, TRIM_HORIZON"


async def run(ctx: ReadContext) -> None:
    limits = KinesisLimits(shard_read_bytes_per_s=10**12)
    async with Consumer(ctx.stream, endpoint_url=ctx.url, poll_interval=0.2,
                        limits=limits) as consumer, ctx.timer:
        async for _record in consumer:
            ctx.seen += 1
            if ctx.seen >= ctx.records:
                break
