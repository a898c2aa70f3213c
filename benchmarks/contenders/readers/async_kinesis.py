"""async-kinesis (PyPI ``async-kinesis``): its Consumer with StringProcessor (plain) or
KPLStringProcessor (aggregates), fetch rate per shard lifted."""

from __future__ import annotations

import importlib.util
import logging

from . import ReadContext

NAME = "async_kinesis"
DESCRIPTION = "async-kinesis Consumer, string processor (KPL for aggregates), rate lifted"


def unavailable() -> str | None:
    if importlib.util.find_spec("kinesis") is None:
        return "async-kinesis is not installed (pip install -e '.[bench]')"
    return None


async def run(ctx: ReadContext) -> None:
    from kinesis import Consumer  # type: ignore[import-untyped]
    from kinesis.processors import (  # type: ignore[import-untyped]
        KPLStringProcessor,
        StringProcessor,
    )

    logging.getLogger("kinesis").setLevel(logging.ERROR)
    processor = KPLStringProcessor() if ctx.aggregated else StringProcessor()
    async with Consumer(ctx.stream, endpoint_url=ctx.url, region_name=ctx.region,
                        processor=processor, shard_fetch_rate=100, sleep_time_no_records=0.2,
                        idle_timeout=30.0, max_queue_size=100_000) as consumer, ctx.timer:
        async for _item in consumer:
            ctx.seen += 1
            if ctx.seen >= ctx.records:
                break
