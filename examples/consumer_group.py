"""Consumer group quick start: two workers share a stream's shards through DynamoDB leases.

    python examples/consumer_group.py

Runs on the embedded local endpoint (moto: Kinesis and DynamoDB on 127.0.0.1). Two
Consumers, each with its own DynamoDBLeases (worker-a and worker-b), split the stream's
four shards between them; the example writes 200 events, prints who processed what,
then closes worker-b gracefully and shows worker-a taking its leases over at once.

In production each worker is its own process or host: the same code, without
``local_endpoint()`` and ``endpoint_url`` (and with the stream created beforehand). The
lease table (KCL layout) is created on first use.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import anyio
import anyio.abc

from _resources import client
from shardflow import Consumer, DynamoDBLeases, Producer, create_stream, errors, local_endpoint

STREAM = "group-events"
TABLE = "group-example-leases"
FAILOVER_TIME = 3.0  # seconds without renewal before another worker takes a lease


class Worker:
    """One member of the group: a Consumer whose checkpointer is its DynamoDBLeases."""

    def __init__(self, name: str, endpoint_url: str) -> None:
        self.name = name
        leases = DynamoDBLeases(
            TABLE, worker_id=name, failover_time=FAILOVER_TIME, endpoint_url=endpoint_url
        )
        self.consumer = Consumer(
            STREAM,
            app_name="group-example",
            checkpointer=leases,
            endpoint_url=endpoint_url,
            poll_interval=0.2,
        )
        self.by_shard: Counter[str] = Counter()
        self.events: list[int] = []
        self.lost = 0
        self.done = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        try:
            async with self.consumer as consumer:
                task_status.started()
                async for record in consumer:
                    self.events.append(record.json()["n"])
                    self.by_shard[record.shard_id] += 1
                    try:
                        await consumer.checkpoint(record)  # done: remember it in the lease
                    except errors.LeaseLost:
                        # Another worker took the shard (it resumes from the last stored
                        # checkpoint); this consumer already stopped reading it.
                        self.lost += 1
        finally:
            self.done.set()

    @property
    def reading(self) -> int:
        return self.consumer.stats().shards_reading

    async def close(self) -> None:
        """Graceful: pending checkpoints are written, then the leases are released."""
        await self.consumer.aclose()
        await self.done.wait()


async def lease_owners(endpoint_url: str) -> dict[str, str]:
    """leaseKey (the shard id) -> leaseOwner, as stored in the lease table."""
    async with client("dynamodb", endpoint_url) as dynamodb:
        try:
            page = await dynamodb.scan(TableName=TABLE, ConsistentRead=True)
        except dynamodb.exceptions.ResourceNotFoundException:
            return {}
    return {
        item["leaseKey"]["S"]: item.get("leaseOwner", {}).get("S", "-")
        for item in page["Items"]
    }


async def wait_for_owners(endpoint_url: str, expected: Counter[str]) -> float:
    start = time.monotonic()
    with anyio.fail_after(30):
        while Counter((await lease_owners(endpoint_url)).values()) != expected:  # noqa: ASYNC110
            await anyio.sleep(0.1)  # polling the table: nothing to wait on
    return time.monotonic() - start


async def main(endpoint_url: str) -> None:
    await create_stream(STREAM, shard_count=4, endpoint_url=endpoint_url)

    a, b = Worker("worker-a", endpoint_url), Worker("worker-b", endpoint_url)
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await tg.start(b.run)  # joins: takes its share from worker-a, one lease per cycle
        took = await wait_for_owners(endpoint_url, Counter({"worker-a": 2, "worker-b": 2}))
        # A worker learns that a lease was taken from it at its next renewal (within a
        # third of failover_time); wait until each reads exactly the shards it holds.
        with anyio.fail_after(30):
            while (a.reading, b.reading) != (2, 2):  # noqa: ASYNC110
                await anyio.sleep(0.05)
        print(f"the group shares the stream's 4 shards 2/2 after {took:.1f}s:")
        for shard, owner in sorted((await lease_owners(endpoint_url)).items()):
            print(f"  {shard}: {owner}")

        async with Producer(STREAM, endpoint_url=endpoint_url, linger=0.05) as producer:
            for n in range(200):
                await producer.put({"n": n}, partition_key=f"user-{n % 37}")
            await producer.flush()
        with anyio.fail_after(30):
            while len(a.events) + len(b.events) < 200:  # noqa: ASYNC110
                await anyio.sleep(0.05)

        for worker in (a, b):
            shards = ", ".join(f"{s} ({n})" for s, n in sorted(worker.by_shard.items()))
            print(f"{worker.name} processed {len(worker.events)} events from {shards}")
        seen = Counter(a.events + b.events)
        twice = sum(1 for n in seen.values() if n > 1)
        print(f"{len(seen)} distinct events processed, {twice} more than once")

        held_by_b = {k for k, o in (await lease_owners(endpoint_url)).items() if o == "worker-b"}
        started = time.monotonic()
        await b.close()
        still = {k for k, o in (await lease_owners(endpoint_url)).items() if o == "worker-b"}
        print(f"worker-b closed gracefully: {len(held_by_b - still)} of its "
              f"{len(held_by_b)} leases released")
        await wait_for_owners(endpoint_url, Counter({"worker-a": 4}))
        print(f"worker-a took them over {time.monotonic() - started:.1f}s after the close "
              f"(a crashed worker's leases would wait for failover_time, {FAILOVER_TIME}s)")
        await a.close()


if __name__ == "__main__":
    with local_endpoint() as url:
        asyncio.run(asyncio.wait_for(main(url), timeout=90))
