"""shardflow's Consumer through enhanced fan-out (SubscribeToShard), ``async for``."""

from __future__ import annotations

from shardflow import Consumer

from . import ReadContext

NAME = "shardflow_fan_out"
DESCRIPTION = "shardflow Consumer, fan_out=True, async for, TRIM_HORIZON"


async def run(ctx: ReadContext) -> None:
    async with Consumer(ctx.stream, app_name="bench", fan_out=True,
                        endpoint_url=ctx.url) as consumer, ctx.timer:
        async for _record in consumer:
            ctx.seen += 1
            if ctx.seen >= ctx.records:
                break
