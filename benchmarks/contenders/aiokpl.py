"""aiokpl (PyPI): a pure-Python port of the Java KPL, aggregation on (its default).

Its per-shard rate limiter is lifted, as every contender's rate limiting is. Every
record's Outcome is awaited before the clock stops.
"""

from __future__ import annotations

import importlib.util

import orjson

from . import RunContext

NAME = "aiokpl"
DESCRIPTION = "aiokpl Producer, KPL aggregation (its default), limiter lifted"
AGGREGATES = True


def unavailable() -> str | None:
    if importlib.util.find_spec("aiokpl") is None:
        return "aiokpl is not installed (pip install -e '.[bench]')"
    return None


async def run(ctx: RunContext) -> None:
    from aiokpl import Config, Producer  # type: ignore[import-untyped]

    config = Config(
        region=ctx.region,
        endpoint_url=ctx.url,
        rate_limit_records_per_sec_per_shard=1e12,
        rate_limit_bytes_per_sec_per_shard=1e15,
    )
    async with Producer(config) as producer:
        # Warm-up: the pipeline (ListShards) is built on the first record.
        first = await producer.put_record(stream=ctx.stream, partition_key="warm-up",
                                          data=b"{}")
        await producer.flush()
        await first.wait()
        ctx.extra_records += 1
        async with ctx.timer:
            outcomes = [
                await producer.put_record(stream=ctx.stream, partition_key=key,
                                          data=orjson.dumps(event))
                for key, event in ctx.events
            ]
            await producer.flush()
            for outcome in outcomes:
                result = await outcome.wait()
                if not result.success:
                    raise RuntimeError(f"aiokpl failed a record: {result.attempts[-1]}")
