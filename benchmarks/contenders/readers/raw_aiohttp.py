"""The ceiling: unsigned aiohttp GetRecords POSTs, one task per shard, answers read with
orjson and each record's data base64-decoded (aggregates unpacked with shardflow's
deaggregate). No user record objects, no buffering, no checkpoints."""

from __future__ import annotations

import asyncio
import binascii

import aiohttp
import orjson

from shardflow.aggregation import deaggregate

from . import ReadContext, read_shards

NAME = "raw_aiohttp"
DESCRIPTION = "raw aiohttp GetRecords, orjson, base64 (ceiling, unsigned)"

AUTH = ("AWS4-HMAC-SHA256 Credential=bench/20240101/us-east-1/kinesis/aws4_request, "
        "SignedHeaders=host, Signature=0")


def headers(op: str) -> dict[str, str]:
    return {"X-Amz-Target": f"Kinesis_20131202.{op}",
            "Content-Type": "application/x-amz-json-1.1", "Authorization": AUTH}


async def run(ctx: ReadContext) -> None:
    async with aiohttp.ClientSession() as session:

        async def call(op: str, body: dict[str, object]) -> dict[str, object]:
            async with session.post(ctx.url, data=orjson.dumps(body), headers=headers(op)) as r:
                answer: dict[str, object] = orjson.loads(await r.read())
                if r.status != 200:
                    raise RuntimeError(f"{op}: {r.status} {answer}")
                return answer

        shards = (await call("ListShards", {"StreamName": ctx.stream}))["Shards"]
        assert isinstance(shards, list)
        iterators = [str((await call("GetShardIterator", {
            "StreamName": ctx.stream, "ShardId": s["ShardId"],
            "ShardIteratorType": "TRIM_HORIZON"}))["ShardIterator"]) for s in shards]
        done = asyncio.Event()
        decode = binascii.a2b_base64

        async def shard(iterator: str) -> None:
            while not done.is_set():
                answer = await call("GetRecords", {"ShardIterator": iterator, "Limit": 10_000})
                records = answer["Records"]
                assert isinstance(records, list)
                for r in records:
                    data = decode(r["Data"])
                    if ctx.aggregated:
                        ctx.seen += len(deaggregate(data) or ())
                    else:
                        ctx.seen += 1
                if ctx.seen >= ctx.records:
                    done.set()
                iterator = str(answer["NextShardIterator"])
                if not records:
                    await asyncio.sleep(0.2)

        async with ctx.timer:
            await read_shards([shard(it) for it in iterators], done)
