"""Shared by the examples: create a stream or a bucket on the local endpoint.

Against AWS you would create them once, with the console, the AWS CLI or your
infrastructure code (``aws kinesis create-stream --stream-name logs --shard-count 2``).
"""

from __future__ import annotations

from typing import Any

from aiobotocore.session import get_session


def client(service: str, endpoint_url: str) -> Any:
    """An aiobotocore client for the local endpoint (which accepts any credentials)."""
    return get_session().create_client(
        service,
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )


async def create_stream(endpoint_url: str, name: str, shards: int) -> None:
    """Create the stream and wait until it is ACTIVE."""
    async with client("kinesis", endpoint_url) as kinesis:
        await kinesis.create_stream(StreamName=name, ShardCount=shards)
        await kinesis.get_waiter("stream_exists").wait(
            StreamName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )


async def create_bucket(endpoint_url: str, name: str) -> None:
    async with client("s3", endpoint_url) as s3:
        await s3.create_bucket(Bucket=name)
