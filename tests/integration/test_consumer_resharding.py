"""Resharding while reading (kinesalite: moto's Split/Merge is wrong): nothing lost, no
duplicates, per-key order kept, parents before children, SHARD_END recorded."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from shardflow import Consumer, MemoryCheckpointer, Record, ShardReader
from shardflow.consumer import SHARD_END

from support import create_stream, kinesis, list_shards, wait_active
from support_consumer import (
    POLL,
    assert_per_key_order,
    collect,
    no_more,
    numbered,
    put_records,
    wait_until,
)


def split_in_half(url: str, name: str, shard_id: str) -> None:
    shard = next(s for s in list_shards(url, name) if s["ShardId"] == shard_id)
    low = int(shard["HashKeyRange"]["StartingHashKey"])
    high = int(shard["HashKeyRange"]["EndingHashKey"])
    kinesis(url).split_shard(
        StreamName=name, ShardToSplit=shard_id, NewStartingHashKey=str((low + high) // 2 + 1)
    )
    wait_active(url, name)


def merge(url: str, name: str, shard_id: str, adjacent_id: str) -> None:
    kinesis(url).merge_shards(
        StreamName=name, ShardToMerge=shard_id, AdjacentShardToMerge=adjacent_id
    )
    wait_active(url, name)


def open_shards(url: str, name: str) -> list[dict[str, Any]]:
    shards = [
        s for s in list_shards(url, name) if "EndingSequenceNumber" not in s["SequenceNumberRange"]
    ]
    return sorted(shards, key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))


async def test_split_and_merge_while_reading(kinesalite_url: str) -> None:
    url = kinesalite_url
    name = create_stream(url, shards=2)
    checkpointer = MemoryCheckpointer()
    phases = [numbered(200, keys=32, prefix=f"p{p}") for p in range(3)]
    # One counter across phases so that per-key order spans the reshards.
    items = [
        (key, f"r:{key}:{p * 1000 + int(data.decode().rsplit(':', 1)[1])}".encode())
        for p, phase in enumerate(phases)
        for key, data in phase
    ]
    got: list[Record] = []
    # Small reads and a fast re-sync: children are discovered while parents still drain.
    async with Consumer(
        name, endpoint_url=url, poll_interval=POLL, app_name="app", checkpointer=checkpointer,
        get_records_limit=20, max_buffer_records=40, resync_interval=0.3,
    ) as consumer:

        async def read_all() -> None:
            async for record in consumer:
                got.append(record)
                await consumer.checkpoint(record)
                if len(got) >= len(items):
                    return

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_all)
            await anyio.to_thread.run_sync(put_records, url, name, items[:200])
            await wait_until(lambda: len(got) >= 60)
            # Split shard 0 while its records are being read.
            await anyio.to_thread.run_sync(split_in_half, url, name, "shardId-000000000000")
            await anyio.to_thread.run_sync(put_records, url, name, items[200:400])
            # Merge the upper child of the split with shard 1 (different generations).
            _, upper, right = (s["ShardId"] for s in open_shards(url, name))
            assert right == "shardId-000000000001"
            await anyio.to_thread.run_sync(merge, url, name, upper, right)
            await anyio.to_thread.run_sync(put_records, url, name, items[400:])
            with anyio.fail_after(30):
                await wait_until(lambda: len(got) >= len(items), within=30)
        assert await no_more(consumer) == []
        # The sync after each shard end found every child.
        await wait_until(lambda: consumer.stats().shards_done == 3)

    assert sorted(r.data for r in got) == sorted(d for _, d in items)
    assert_per_key_order(got)
    shards = {s["ShardId"]: s for s in list_shards(url, name)}
    assert len(shards) == 5
    stored = await checkpointer.checkpoints("app", name)
    for shard_id, shard in shards.items():
        closed = "EndingSequenceNumber" in shard["SequenceNumberRange"]
        if closed:
            assert stored[shard_id] == SHARD_END, shard_id
        else:
            assert stored[shard_id] != SHARD_END, shard_id
    # Records of a child were delivered only after all its parents' records.
    last_of = {sid: max(i for i, r in enumerate(got) if r.shard_id == sid) for sid in shards
               if any(r.shard_id == sid for r in got)}
    first_of = {sid: min(i for i, r in enumerate(got) if r.shard_id == sid) for sid in last_of}
    for shard_id, shard in shards.items():
        for parent in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")):
            if parent and shard_id in first_of and parent in last_of:
                assert last_of[parent] < first_of[shard_id], (parent, shard_id)


async def test_shards_mode_children_appear_after_parents(kinesalite_url: str) -> None:
    url = kinesalite_url
    name = create_stream(url, shards=1)
    items = numbered(200, keys=8)
    put_records(url, name, items[:100])
    split_in_half(url, name, "shardId-000000000000")
    put_records(url, name, items[100:])
    appeared: list[tuple[str, bool]] = []  # (shard, parent already ended)
    readers: dict[str, ShardReader] = {}
    got: list[Record] = []

    async with Consumer(name, endpoint_url=url, poll_interval=POLL) as consumer:

        async def drain(reader: ShardReader) -> None:
            async for record in reader:
                got.append(record)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                async for reader in consumer.shards():
                    parent = reader.shard.parent_shard_id
                    appeared.append((reader.shard_id, parent is None or readers[parent].ended))
                    readers[reader.shard_id] = reader
                    tg.start_soon(drain, reader)
                    if len(readers) == 3:
                        break
                await wait_until(lambda: len(got) >= len(items))
                tg.cancel_scope.cancel()
        with pytest.raises(RuntimeError, match=r"shards\(\)"):
            await consumer.__anext__()

    assert appeared[0][0] == "shardId-000000000000"
    assert all(parent_ended for _, parent_ended in appeared)
    assert readers["shardId-000000000000"].ended
    assert sorted(r.data for r in got) == sorted(d for _, d in items)
    assert_per_key_order(got)


async def test_resume_after_split_reads_children_once(kinesalite_url: str) -> None:
    # A parent checkpointed at SHARD_END is skipped on restart; children resume.
    url = kinesalite_url
    name = create_stream(url, shards=1)
    items = numbered(120, keys=6)
    put_records(url, name, items[:60])
    split_in_half(url, name, "shardId-000000000000")
    put_records(url, name, items[60:])
    checkpointer = MemoryCheckpointer()
    async with Consumer(
        name, endpoint_url=url, poll_interval=POLL, app_name="a", checkpointer=checkpointer
    ) as consumer:
        first = await collect(consumer, 90)
        for record in first:
            await consumer.checkpoint(record)
    stored = await checkpointer.checkpoints("a", name)
    assert stored["shardId-000000000000"] == SHARD_END
    async with Consumer(
        name, endpoint_url=url, poll_interval=POLL, app_name="a", checkpointer=checkpointer
    ) as consumer:
        rest = await collect(consumer, 30)
        assert await no_more(consumer) == []
    assert sorted(r.data for r in first + rest) == sorted(d for _, d in items)


async def test_latest_continues_a_lineage_it_has_read(kinesalite_url: str) -> None:
    # start_at="LATEST" applies only to shards whose lineage this application never read:
    # after a checkpointed parent split, the children are read from their beginning.
    url = kinesalite_url
    name = create_stream(url, shards=1)
    items = numbered(40, keys=4)
    put_records(url, name, items[:20])
    checkpointer = MemoryCheckpointer()
    options: dict[str, Any] = {
        "endpoint_url": url, "poll_interval": POLL, "app_name": "a", "checkpointer": checkpointer
    }
    async with Consumer(name, **options) as consumer:
        first = await collect(consumer, 20)
        await consumer.checkpoint(first[9])
    split_in_half(url, name, "shardId-000000000000")
    put_records(url, name, items[20:])
    async with Consumer(name, start_at="LATEST", **options) as consumer:
        rest = await collect(consumer, 30)
        assert await no_more(consumer) == []
    assert sorted(r.data for r in rest) == sorted(d for _, d in items[10:])
    assert_per_key_order(rest)
    # A new application at LATEST reads nothing of the past.
    async with Consumer(name, **{**options, "app_name": "new"}, start_at="LATEST") as consumer:
        assert await no_more(consumer) == []
