"""Helpers for the sink tests: build Records, and read S3 back with boto3 (the referee)."""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import boto3
import orjson

from shardflow import Record

from support import unique_name

UTC = timezone.utc
T0 = datetime(2024, 3, 5, 7, 15, 0, tzinfo=UTC)
BASE_SEQ = 49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_000


def seq(n: int) -> str:
    """A Kinesis-looking sequence number; numeric order follows ``n``."""
    return str(BASE_SEQ + n)


def make_record(
    n: int,
    *,
    shard: str = "shardId-000000000000",
    at: datetime | None = None,
    data: bytes | None = None,
    sub: int | None = None,
    key: str | None = None,
) -> Record:
    return Record(
        data=data if data is not None else orjson.dumps({"n": n, "shard": shard}),
        partition_key=key or f"user-{n % 7}",
        sequence_number=seq(n),
        sub_sequence_number=sub,
        shard_id=shard,
        arrival_time=at if at is not None else T0 + timedelta(milliseconds=n),
    )


def make_records(
    count: int, *, shard: str = "shardId-000000000000", start: int = 0, step_ms: float = 1.0
) -> list[Record]:
    return [
        make_record(n, shard=shard, at=T0 + timedelta(milliseconds=n * step_ms))
        for n in range(start, start + count)
    ]


def s3(url: str) -> Any:
    return boto3.client("s3", endpoint_url=url, region_name="us-east-1")


def new_bucket(url: str) -> str:
    name = unique_name("bucket")
    s3(url).create_bucket(Bucket=name)
    return name


def list_keys(url: str, bucket: str, prefix: str = "") -> list[str]:
    client = s3(url)
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", ()))
    return sorted(keys)


def read_object(url: str, bucket: str, key: str) -> bytes:
    """The stored bytes, uncompressed when the key ends in .gz."""
    body: bytes = s3(url).get_object(Bucket=bucket, Key=key)["Body"].read()
    return gzip.decompress(body) if key.endswith(".gz") else body


def read_lines(url: str, bucket: str, key: str) -> list[Any]:
    data = read_object(url, bucket, key)
    assert data.endswith(b"\n"), "NDJSON ends with a newline"
    return [orjson.loads(line) for line in data.split(b"\n")[:-1]]


def all_lines(url: str, bucket: str, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key in list_keys(url, bucket, prefix):
        for line in read_lines(url, bucket, key):
            yield key, line


def etags(url: str, bucket: str) -> dict[str, str]:
    client = s3(url)
    return {
        key: client.head_object(Bucket=bucket, Key=key)["ETag"] for key in list_keys(url, bucket)
    }


async def wait_for(
    condition: Callable[[], Any], within: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``condition`` (sync) until it returns something truthy; fail after ``within`` s.

    ``condition`` runs in a worker thread, so a blocking call to the single-threaded moto
    server cannot stall the loop while the code under test is half-way through sending it
    a request (that deadlock lasts until botocore's 60 s read timeout)."""
    deadline = time.monotonic() + within
    while True:
        value = await anyio.to_thread.run_sync(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await anyio.sleep(0.02)
