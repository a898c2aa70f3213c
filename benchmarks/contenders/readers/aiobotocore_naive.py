"""A naive aiobotocore loop: one task per shard, get_records until caught up; aggregates
unpacked with aws-kinesis-agg (AWS's Python deaggregator)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiobotocore.session import get_session

from . import ReadContext, read_shards

NAME = "aiobotocore_naive"
DESCRIPTION = "aiobotocore get_records loop per shard (+ aws-kinesis-agg for aggregates)"


def user_records(ctx: ReadContext, records: list[dict[str, Any]]) -> int:
    if not ctx.aggregated:
        return sum(1 for r in records if r["Data"] is not None)
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    # aws-kinesis-agg takes Lambda-shaped records (kinesis.data base64) or boto3's shape
    return sum(1 for _ in iter_deaggregate_records(records, data_format="Boto3"))


async def run(ctx: ReadContext) -> None:
    async with get_session().create_client("kinesis", endpoint_url=ctx.url,
                                           region_name=ctx.region) as client:
        shards = (await client.list_shards(StreamName=ctx.stream))["Shards"]
        iterators = [
            (await client.get_shard_iterator(StreamName=ctx.stream, ShardId=s["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON"))["ShardIterator"]
            for s in shards
        ]
        done = asyncio.Event()

        async def shard(iterator: str) -> None:
            while not done.is_set():
                answer = await client.get_records(ShardIterator=iterator, Limit=10_000)
                ctx.seen += user_records(ctx, answer["Records"])
                if ctx.seen >= ctx.records:
                    done.set()
                iterator = answer["NextShardIterator"]
                if not answer["Records"]:
                    await asyncio.sleep(0.2)

        async with ctx.timer:
            await read_shards([shard(it) for it in iterators], done)
