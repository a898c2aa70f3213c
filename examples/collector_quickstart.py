"""Collector quick start: tagged events → filters → a durable spool → Kinesis.

    python examples/collector_quickstart.py

Runs against the embedded local endpoint (moto on 127.0.0.1), creates its stream, posts a
few app events through the Collector and reads them back with a Consumer. Against AWS,
drop ``local_endpoint()`` and the ``endpoint_url`` arguments (and create the stream).
"""

from __future__ import annotations

import asyncio
import io
import tempfile
from collections import Counter
from pathlib import Path

from shardflow import (
    BufferedOutput,
    Collector,
    Consumer,
    KinesisOutput,
    Producer,
    StdoutOutput,
    add_fields,
    create_stream,
    local_endpoint,
    redact,
    sample,
)

STREAM = "quickstart-events"


async def main(endpoint_url: str, spool: Path) -> None:
    await create_stream(STREAM, shard_count=2, endpoint_url=endpoint_url)
    audit = io.StringIO()

    async with Producer(STREAM, endpoint_url=endpoint_url, linger=0.05) as producer:
        collector = Collector()
        # Filters run in the order added, on events whose tag matches.
        collector.filter("app.**", add_fields(app="quickstart", version="1.2.0"))
        collector.filter("app.login", redact("password", "user.email"))
        collector.filter("app.debug.**", sample(0.5, seed=1))  # keep about half
        # Every matching output gets its own copy of the event.
        kinesis = BufferedOutput(
            KinesisOutput(producer, partition_key="user_id"),
            spool=spool,  # committed to SQLite before post() returns
            flush_interval=0.2,
            max_batch=500,
        )
        collector.output("app.**", kinesis)
        collector.output("app.login", StdoutOutput(stream=audit))

        async with collector:
            await collector.post(
                "app.login",
                {"user_id": "u1", "password": "hunter2", "user": {"email": "u1@example.com"}},
            )
            for i in range(20):
                await collector.post("app.click", {"user_id": f"u{i % 4}", "item": i})
            for i in range(10):
                await collector.post("app.debug.timing", {"user_id": "u9", "ms": i})
            await collector.flush()
            stats = collector.stats()
            sent = kinesis.stats()
            print(f"posted {stats.posted} events; {stats.filtered_out} dropped by sampling")
            print(f"buffered output: sent {sent.sent}, dropped {sent.dropped}, "
                  f"left in spool {sent.buffered}")

    print("login event as the audit output saw it:", audit.getvalue().strip())

    expected = stats.posted - stats.filtered_out
    tags: Counter[str] = Counter()
    async with Consumer(STREAM, endpoint_url=endpoint_url, poll_interval=0.2) as consumer:
        async for record in consumer:
            event = record.json()
            tags[event["tag"]] += 1
            if sum(tags.values()) == expected:
                break
    print(f"read back {sum(tags.values())} events from Kinesis: {dict(tags)}")


if __name__ == "__main__":
    with local_endpoint() as url, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(main(url, Path(tmp) / "spool.db"), timeout=60))
