"""The ceiling: unsigned aiohttp POSTs of PutRecords bodies built before the clock starts.

No client library, no signing, no serialising in the timed region: what is left is HTTP
and reading each answer's FailedRecordCount. Anything slower pays for something else.
"""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import orjson

from . import RunContext

NAME = "raw_aiohttp"
DESCRIPTION = "raw aiohttp POSTs of pre-built PutRecords bodies (ceiling, unsigned)"
AGGREGATES = False

HEADERS = {
    "X-Amz-Target": "Kinesis_20131202.PutRecords",
    "Content-Type": "application/x-amz-json-1.1",
    # A constant, unsigned Authorization header: endpoints that route by the credential
    # scope's service (moto) need one; none of the local endpoints checks signatures.
    "Authorization": "AWS4-HMAC-SHA256 Credential=bench/20240101/us-east-1/kinesis/"
                     "aws4_request, SignedHeaders=host, Signature=0",
}


def bodies(ctx: RunContext, batch: int = 500) -> list[bytes]:
    events = ctx.events
    out = []
    for i in range(0, len(events), batch):
        records = [{"Data": base64.b64encode(orjson.dumps(event)).decode(), "PartitionKey": key}
                   for key, event in events[i:i + batch]]
        out.append(orjson.dumps({"StreamName": ctx.stream, "Records": records}))
    return out


async def run(ctx: RunContext) -> None:
    todo = bodies(ctx)
    todo.reverse()
    connector = aiohttp.TCPConnector(limit=ctx.in_flight)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while todo:
                body = todo.pop()
                async with session.post(ctx.url, data=body, headers=HEADERS) as resp:
                    answer = orjson.loads(await resp.read())
                    if resp.status != 200 or answer["FailedRecordCount"]:
                        raise RuntimeError(f"PutRecords failed: {resp.status} {answer}")

        warm_up = {**HEADERS, "X-Amz-Target": "Kinesis_20131202.DescribeStreamSummary"}
        body = orjson.dumps({"StreamName": ctx.stream})
        async with session.post(ctx.url, data=body, headers=warm_up) as resp:
            await resp.read()
        async with ctx.timer:
            await asyncio.gather(*(worker() for _ in range(ctx.in_flight)))
