"""Shared by the examples: a bucket on the local endpoint, and a raw client to look at it.

Streams are created with :func:`shardflow.create_stream`. Against AWS you would create
streams and buckets once, with the console, the AWS CLI or your infrastructure code
(``aws kinesis create-stream --stream-name logs --shard-count 2``).
"""

from __future__ import annotations

import os
from typing import Any

from aiobotocore.session import get_session

import shardflow


def region() -> str:
    """The region shardflow uses for a local endpoint: AWS_REGION, AWS_DEFAULT_REGION or
    us-east-1, so that what these clients see is what the Producer and Consumer see."""
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def client(service: str, endpoint_url: str) -> Any:
    """An aiobotocore client for the local endpoint (which accepts any credentials)."""
    return get_session().create_client(
        service,
        endpoint_url=endpoint_url,
        region_name=region(),
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


async def create_stream(endpoint_url: str, name: str, shards: int) -> None:
    """Create the stream and wait until it is ACTIVE (see shardflow.create_stream)."""
    await shardflow.create_stream(name, shard_count=shards, endpoint_url=endpoint_url)


async def create_bucket(endpoint_url: str, name: str) -> None:
    """Create the bucket in the region the S3Sink will use."""
    async with client("s3", endpoint_url) as s3:
        params: dict[str, Any] = {"Bucket": name}
        if region() != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": region()}
        await s3.create_bucket(**params)
