"""Producer quick start: put events into a stream and see where each one landed.

    python examples/producer_quickstart.py

Runs on the embedded local endpoint (moto on 127.0.0.1) and creates its stream. Against
AWS, drop ``local_endpoint()`` and ``endpoint_url`` (credentials and region come from the
usual AWS configuration) and create the stream beforehand.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from shardflow import Producer, create_stream, errors, local_endpoint

STREAM = "producer-quickstart"


async def main(endpoint_url: str) -> None:
    await create_stream(STREAM, shard_count=2, endpoint_url=endpoint_url)

    async with Producer(STREAM, endpoint_url=endpoint_url, linger=0.05) as producer:
        # put() returns once the record is queued (it waits only while the queue is
        # full); the future it returns resolves when Kinesis has stored the record.
        deliveries = []
        for n in range(100):
            user = f"user-{n % 10}"
            event = {"user_id": user, "action": "click", "n": n}  # sent as JSON (orjson)
            deliveries.append(await producer.put(event, partition_key=user))

        # Or wait for one record's delivery right away; bytes are sent as they are.
        result = await producer.put_and_wait(b"plain bytes", partition_key="raw")
        print(f"put_and_wait: shard {result.shard_id}, sequence {result.sequence_number}, "
              f"{len(result.attempts)} attempt(s)")

        # Bad input fails at put(), for that record only.
        try:
            await producer.put({"n": -1}, partition_key="")
        except errors.InvalidPartitionKey as exc:
            print(f"refused at put(): {exc}")

        await producer.flush()  # every accepted record is now delivered or failed
        shards: Counter[str] = Counter()
        for delivery in deliveries:
            try:
                shards[(await delivery).shard_id] += 1
            except errors.DeliveryFailed as exc:  # after retries, or record_ttl ran out
                print(f"not delivered: {exc} ({len(exc.attempts)} attempts)")
        print(f"delivered {sum(shards.values())} records: " + ", ".join(
            f"{shard} {count}" for shard, count in sorted(shards.items())))
        stats = producer.stats()
        print(f"producer stats: {stats.delivered} delivered, {stats.failed} failed, "
              f"{stats.retried} retried, {stats.requests} PutRecords requests")

    # aggregate=True packs many small records into KPL aggregates (fewer Kinesis
    # records, fewer requests); consumers such as shardflow's or the KCL unpack them.
    async with Producer(STREAM, endpoint_url=endpoint_url, aggregate=True) as producer:
        packed = [await producer.put({"n": n}, partition_key=f"k{n % 50}") for n in range(1000)]
        await producer.flush()
        results = [await delivery for delivery in packed]
        inside = sum(1 for result in results if result.sub_sequence_number is not None)
        print(f"aggregate=True: {inside} of {len(packed)} records went in KPL aggregates")


if __name__ == "__main__":
    with local_endpoint() as url:
        asyncio.run(asyncio.wait_for(main(url), timeout=60))
