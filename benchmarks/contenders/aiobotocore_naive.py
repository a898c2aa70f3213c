"""A naive aiobotocore loop: put_records of 500 events at a time, a few calls in flight,
failed entries sent again. What most asyncio code does by hand."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiobotocore.session import get_session
from botocore.config import Config

from . import RunContext

NAME = "aiobotocore_naive"
DESCRIPTION = "aiobotocore put_records loop, 500 per call, 4 in flight"
AGGREGATES = False


async def put_all(client: Any, stream: str, entries: list[dict[str, Any]]) -> None:
    for _ in range(20):
        answer = await client.put_records(StreamName=stream, Records=entries)
        if not answer["FailedRecordCount"]:
            return
        entries = [e for e, r in zip(entries, answer["Records"], strict=True) if "ErrorCode" in r]
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{len(entries)} records still failing after 20 tries")


async def run(ctx: RunContext) -> None:
    config = Config(max_pool_connections=ctx.in_flight, retries={"mode": "standard"})
    async with get_session().create_client("kinesis", endpoint_url=ctx.url,
                                           region_name=ctx.region, config=config) as client:
        await client.describe_stream_summary(StreamName=ctx.stream)  # warm-up
        events = ctx.events
        async with ctx.timer:
            starts = list(range(0, len(events), 500))
            starts.reverse()

            async def worker() -> None:
                while starts:
                    i = starts.pop()
                    entries = [{"Data": orjson.dumps(event), "PartitionKey": key}
                               for key, event in events[i:i + 500]]
                    await put_all(client, ctx.stream, entries)

            await asyncio.gather(*(worker() for _ in range(ctx.in_flight)))
