"""Archive a stream to S3: ``Consumer.pipe(S3Sink(...))``.

    python examples/archive_to_s3.py

Runs on the embedded local endpoint (moto: Kinesis and S3 on 127.0.0.1). It writes 500
events, pipes the stream into an S3Sink (gzip NDJSON objects under UTC hour keys), and
lists what landed in the bucket. The consumer checkpoints only records whose object S3
has stored, so a crash at any point re-reads, never skips: an object rewritten after a
restart gets the same key. Against AWS, drop ``local_endpoint()`` and ``endpoint_url``.
"""

from __future__ import annotations

import asyncio
import gzip
import tempfile
from pathlib import Path

import anyio

from _resources import client, create_bucket
from shardflow import (
    Consumer,
    Producer,
    S3Sink,
    SQLiteCheckpointer,
    create_stream,
    local_endpoint,
)

STREAM = "clickstream"
BUCKET = "clickstream-archive"
EVENTS = 500


async def main(endpoint_url: str, checkpoints: Path) -> None:
    await create_stream(STREAM, shard_count=2, endpoint_url=endpoint_url)
    await create_bucket(endpoint_url, BUCKET)
    async with Producer(STREAM, endpoint_url=endpoint_url, linger=0.05) as producer:
        for n in range(EVENTS):
            user = f"user-{n % 25}"
            await producer.put({"user_id": user, "page": f"/items/{n}", "n": n},
                               partition_key=user)
        await producer.flush()

    async with Consumer(
        STREAM,
        app_name="archiver",
        checkpointer=SQLiteCheckpointer(checkpoints),
        endpoint_url=endpoint_url,
        poll_interval=0.2,
    ) as consumer:
        sink = S3Sink(
            BUCKET,
            prefix="clicks/",
            max_bytes=64 * 1024,  # cut an object at 64 KiB of NDJSON ...
            max_interval=1.0,  # ... or after one second (defaults: 5 MiB, 60 s)
            stream=STREAM,  # names the objects <stream>-<shard>-<first>-<last>.ndjson.gz
            endpoint_url=endpoint_url,
        )
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.pipe, sink)  # runs until the consumer closes
            with anyio.fail_after(30):
                while sink.stats().records < EVENTS:  # noqa: ASYNC110 - a demo's end
                    await anyio.sleep(0.1)
            await consumer.aclose()  # the sink writes what it holds; final checkpoints
        stats = sink.stats()
        print(f"archived {stats.records} records in {stats.objects} objects "
              f"({stats.bytes_in:,} bytes of NDJSON, {stats.bytes_out:,} stored gzipped)")

    async with client("s3", endpoint_url) as s3:
        listing = await s3.list_objects_v2(Bucket=BUCKET, Prefix="clicks/")
        keys = [item["Key"] for item in listing.get("Contents", [])]
        for key in keys:
            print(f"  s3://{BUCKET}/{key}")
        answer = await s3.get_object(Bucket=BUCKET, Key=keys[0])
        async with answer["Body"] as body:
            data = await anyio.to_thread.run_sync(gzip.decompress, await body.read())
        lines = data.splitlines()
        print(f"first line of the first object: {lines[0].decode()}")


if __name__ == "__main__":
    with local_endpoint() as url, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(main(url, Path(tmp) / "checkpoints.db"), timeout=60))
