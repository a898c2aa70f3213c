"""boto3, one shard after another, get_records until caught up (aws-kinesis-agg for
aggregates)."""

from __future__ import annotations

import boto3

from . import ReadContext
from .aiobotocore_naive import user_records

NAME = "boto3_sequential"
DESCRIPTION = "boto3 get_records, shard after shard (+ aws-kinesis-agg for aggregates)"


def run(ctx: ReadContext) -> None:
    client = boto3.client("kinesis", endpoint_url=ctx.url, region_name=ctx.region)
    shards = client.list_shards(StreamName=ctx.stream)["Shards"]
    with ctx.timer:
        for s in shards:
            iterator = client.get_shard_iterator(StreamName=ctx.stream, ShardId=s["ShardId"],
                                                 ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
            while True:
                answer = client.get_records(ShardIterator=iterator, Limit=10_000)
                ctx.seen += user_records(ctx, answer["Records"])
                iterator = answer["NextShardIterator"]
                if not answer["Records"] or ctx.seen >= ctx.records:
                    break
