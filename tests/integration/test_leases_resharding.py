"""A split while a consumer group reads (kinesalite: moto's Split/Merge is wrong): the
children's leases appear when the parent reaches SHARD_END, children are read only after
it, nothing is lost and each key keeps its order."""

from __future__ import annotations

import anyio

from support import create_stream, kinesis, list_shards, unique_name, wait_active
from support_consumer import numbered, put_records
from support_leases import Delivery, GroupWorker, lease_items, wait_for, wait_loads

PARENT = "shardId-000000000000"


def split_in_half(url: str, name: str, shard_id: str) -> None:
    shard = next(s for s in list_shards(url, name) if s["ShardId"] == shard_id)
    low = int(shard["HashKeyRange"]["StartingHashKey"])
    high = int(shard["HashKeyRange"]["EndingHashKey"])
    kinesis(url).split_shard(
        StreamName=name, ShardToSplit=shard_id, NewStartingHashKey=str((low + high) // 2 + 1)
    )
    wait_active(url, name)


async def test_split_while_a_group_reads(kinesalite_url: str, moto_url: str) -> None:
    stream = create_stream(kinesalite_url, shards=2)
    table = unique_name("leases")
    log: list[Delivery] = []
    # Small reads: the parent still has a backlog when its children get their records.
    common = dict(kinesis_url=kinesalite_url, dynamodb_url=moto_url, stream=stream, table=table,
                  failover_time=2.0, log=log, get_records_limit=10, max_buffer_records=20)
    workers = [GroupWorker(name, **common) for name in ("a", "b")]
    # One counter across both phases, so that per-key order spans the split.
    items = [
        (key, f"r:{key}:{phase * 1000 + int(data.decode().rsplit(':', 1)[1])}".encode())
        for phase in range(2)
        for key, data in numbered(300, keys=41)
    ]
    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
        await wait_loads(moto_url, table, lambda c: sorted(c.values()) == [1, 1], within=30)
        await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, items[:300])
        await wait_for(lambda: len(log) >= 60, within=30)
        await anyio.to_thread.run_sync(split_in_half, kinesalite_url, stream, PARENT)
        await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, items[300:])
        backlog = 300 - len(log)
        everything = {data for _, data in items}
        await wait_for(lambda: {d.data for d in log} >= everything, within=40)
        for worker in workers:
            await worker.close()

    shards = list_shards(kinesalite_url, stream)
    children = {s["ShardId"] for s in shards if s.get("ParentShardId") == PARENT}
    assert len(children) == 2
    parent_at = [i for i, d in enumerate(log) if d.shard_id == PARENT]
    child_at = [i for i, d in enumerate(log) if d.shard_id in children]
    assert parent_at
    assert child_at
    assert max(parent_at) < min(child_at), "a child was read before its parent ended"
    print(f"\n{backlog} records of the first phase were still unread when the children got theirs")

    first_seen: dict[bytes, Delivery] = {}
    for delivery in log:
        first_seen.setdefault(delivery.data, delivery)
    assert set(first_seen) == {data for _, data in items}
    # Each key's records were first delivered in write order, across the split.
    last: dict[str, int] = {}
    for data in first_seen:
        _, key, i = data.decode().rsplit(":", 2)
        assert int(i) > last.get(key, -1), f"{key}: {i} after {last.get(key)}"
        last[key] = int(i)

    stored = await anyio.to_thread.run_sync(lease_items, moto_url, table)
    assert stored[PARENT]["checkpoint"] == {"S": "SHARD_END"}
    assert stored[PARENT]["childShardIds"] == {"SS": sorted(children)}
    for child in children:
        assert stored[child]["parentShardId"] == {"SS": [PARENT]}
        shard = next(s for s in shards if s["ShardId"] == child)
        assert stored[child]["startingHashKey"] == {"S": shard["HashKeyRange"]["StartingHashKey"]}
        assert stored[child]["endingHashKey"] == {"S": shard["HashKeyRange"]["EndingHashKey"]}
