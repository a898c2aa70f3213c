"""async-kinesis (PyPI ``async-kinesis``): its Producer with the default JSON processor.

Its own throttle (1,000 records/s and 1 MiB/s per shard, counted for one shard when it
starts: about 1,000 records/s in total) is lifted, as every contender's rate limiting is.
Lifted, its bandwidth throttle still sums its log of the last second for every record, so
its cost per record grows with the rate it reaches.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from . import RunContext

NAME = "async_kinesis"
DESCRIPTION = "async-kinesis Producer, JSON processor, throttle lifted"
AGGREGATES = False

UNTHROTTLED = {"put_rate_limit_per_shard": 10**9, "put_bandwidth_limit_per_shard": 10**9}


def unavailable() -> str | None:
    if importlib.util.find_spec("kinesis") is None:
        return "async-kinesis is not installed (pip install -e '.[bench]')"
    return None


def processor() -> Any:
    return None  # the library's default JsonProcessor


async def produce(ctx: RunContext, proc: Any, *, keyed: bool = True) -> None:
    import logging

    from kinesis import Producer  # type: ignore[import-untyped]

    logging.getLogger("kinesis").setLevel(logging.ERROR)  # it warns about the lifted limits
    options: dict[str, Any] = dict(UNTHROTTLED)
    if proc is not None:
        options["processor"] = proc
    async with Producer(ctx.stream, endpoint_url=ctx.url, region_name=ctx.region,
                        batch_size=500, **options) as producer, ctx.timer:
        if keyed:
            for key, event in ctx.events:
                await producer.put(event, partition_key=key)
        else:
            for _, event in ctx.events:
                await producer.put(event)
        await producer.flush()
        if not producer.queue.empty() or producer.overflow:
            raise RuntimeError("records left in the queue after flush()")


async def run(ctx: RunContext) -> None:
    await produce(ctx, processor())
