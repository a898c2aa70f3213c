"""Creating and removing the AWS resources the demo and the CLI use (streams, buckets, tables).

Private helpers for ``shardflow demo`` and ``shardflow put --create``; every call goes
through :mod:`shardflow._core.aws`. Each function takes an aiobotocore client opened with
:func:`shardflow._core.aws.open_client` for the matching service, and raises
:mod:`shardflow.errors` exceptions.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread

from .. import errors
from . import aws as _aws

__all__ = [
    "create_bucket",
    "create_stream",
    "delete_bucket",
    "delete_stream",
    "delete_table",
    "list_keys",
    "read_object",
    "stream_exists",
    "wait_stream_active",
]

log = logging.getLogger("shardflow.resources")

_POLL = 0.1


async def stream_exists(kinesis: Any, stream: str) -> bool:
    """True if the stream exists (in any state). Raises other errors.AWSError subclasses."""
    try:
        await _aws.call(kinesis, "describe_stream_summary", **_aws.stream_params(stream))
    except errors.StreamNotFound:
        return False
    return True


async def wait_stream_active(kinesis: Any, stream: str, *, within: float = 120.0) -> None:
    """Poll until the stream is ACTIVE.

    Raises errors.StreamNotFound, errors.RequestTimeout after ``within`` seconds, and
    other errors.AWSError subclasses. Cancellation stops the wait.
    """
    with anyio.move_on_after(within):
        while True:
            summary = await _aws.call(
                kinesis, "describe_stream_summary", **_aws.stream_params(stream)
            )
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            await anyio.sleep(_POLL)
    raise errors.RequestTimeout(
        "StreamNotActive", f"stream {stream} not ACTIVE after {within:g}s", "CreateStream"
    )


async def create_stream(
    kinesis: Any, stream: str, shards: int, *, within: float = 120.0
) -> None:
    """Create a provisioned stream with ``shards`` shards and wait until it is ACTIVE.

    Raises errors.ResourceInUse if it exists already, errors.LimitExceeded, and other
    errors.AWSError subclasses. Cancelled after the request was sent, the stream may
    exist.
    """
    await _aws.call(kinesis, "create_stream", StreamName=stream, ShardCount=shards)
    await wait_stream_active(kinesis, stream, within=within)


async def delete_stream(kinesis: Any, stream: str) -> None:
    """Delete the stream (with its consumers); a missing stream is not an error."""
    try:
        await _aws.call(
            kinesis, "delete_stream", StreamName=stream, EnforceConsumerDeletion=True
        )
    except errors.StreamNotFound:
        pass


async def create_bucket(s3: Any, bucket: str) -> None:
    """Create ``bucket`` in the client's region (us-east-1 takes no location constraint).

    Raises errors.AWSError subclasses (e.g. BucketAlreadyExists as a plain AWSError).
    """
    region = _aws.client_endpoint(s3)[1]
    params: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        params["CreateBucketConfiguration"] = {"LocationConstraint": region}
    await _aws.call(s3, "create_bucket", "s3", **params)


async def list_keys(s3: Any, bucket: str, prefix: str = "") -> AsyncIterator[str]:
    """Every key under ``prefix``, in S3's order (ListObjectsV2 pages)."""
    params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    while True:
        page = await _aws.call(s3, "list_objects_v2", "s3", **params)
        for item in page.get("Contents", ()):
            yield str(item["Key"])
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated") or not token:
            return
        params["ContinuationToken"] = token


async def read_object(s3: Any, bucket: str, key: str) -> bytes:
    """The object's bytes, gunzipped (in a worker thread) when the key ends in ``.gz``."""
    answer = await _aws.call(s3, "get_object", "s3", Bucket=bucket, Key=key)
    async with answer["Body"] as body:
        data: bytes = await body.read()
    if key.endswith(".gz"):
        data = await anyio.to_thread.run_sync(gzip.decompress, data)
    return data


async def delete_bucket(s3: Any, bucket: str) -> None:
    """Delete every object of ``bucket``, then the bucket; a missing bucket is fine."""
    try:
        keys = [key async for key in list_keys(s3, bucket)]
        for start in range(0, len(keys), 1000):
            chunk = [{"Key": key} for key in keys[start : start + 1000]]
            await _aws.call(
                s3, "delete_objects", "s3", Bucket=bucket, Delete={"Objects": chunk}
            )
        await _aws.call(s3, "delete_bucket", "s3", Bucket=bucket)
    except errors.ResourceNotFound:
        pass


async def delete_table(dynamodb: Any, table: str) -> None:
    """Delete a DynamoDB table; a missing table is not an error."""
    try:
        await _aws.call(dynamodb, "delete_table", "dynamodb", TableName=table)
    except errors.ResourceNotFound:
        pass
