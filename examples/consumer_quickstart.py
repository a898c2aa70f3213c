"""Consumer quick start: read every shard, checkpoint, stop, and resume where you left off.

    python examples/consumer_quickstart.py

Runs on the embedded local endpoint (moto on 127.0.0.1): it creates a stream, writes 50
orders, processes 30 of them with checkpoints in an SQLite file, stops, and starts again:
the second run gets exactly the 20 orders not processed yet. Against AWS, drop
``local_endpoint()`` and ``endpoint_url``. For several processes sharing the work, see
``examples/consumer_group.py`` (DynamoDB leases).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import anyio

from shardflow import Consumer, Producer, SQLiteCheckpointer, create_stream, local_endpoint

STREAM = "consumer-quickstart"
ORDERS = 50


async def write_orders(endpoint_url: str) -> None:
    async with Producer(STREAM, endpoint_url=endpoint_url, linger=0.05) as producer:
        for n in range(ORDERS):
            customer = f"customer-{n % 7}"
            await producer.put({"order": n, "customer": customer}, partition_key=customer)
        await producer.flush()


async def process(endpoint_url: str, checkpointer: SQLiteCheckpointer, count: int) -> list[int]:
    """Process ``count`` orders (checkpointing each), then stop."""
    done: list[int] = []
    async with Consumer(
        STREAM,
        app_name="billing",  # positions are kept per application, stream and shard
        checkpointer=checkpointer,
        start_at="TRIM_HORIZON",  # where a shard without a checkpoint starts
        endpoint_url=endpoint_url,
        poll_interval=0.2,
    ) as consumer:
        with anyio.fail_after(30):
            async for record in consumer:  # in order within each shard
                order = record.json()
                done.append(order["order"])
                await consumer.checkpoint(record)  # this record and all before it: done
                if len(done) == count:
                    break
    return done


async def main(endpoint_url: str, checkpoints: Path) -> None:
    await create_stream(STREAM, shard_count=2, endpoint_url=endpoint_url)
    await write_orders(endpoint_url)
    checkpointer = SQLiteCheckpointer(checkpoints)

    first = await process(endpoint_url, checkpointer, 30)
    print(f"first run: processed {len(first)} orders, then stopped")
    second = await process(endpoint_url, checkpointer, ORDERS - len(first))
    print(f"second run: resumed from the checkpoints and processed {len(second)} orders")
    both = first + second
    print(f"{len(set(both))} distinct orders of {ORDERS}, {len(both) - len(set(both))} "
          "processed twice")


if __name__ == "__main__":
    with local_endpoint() as url, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(main(url, Path(tmp) / "checkpoints.db"), timeout=60))
