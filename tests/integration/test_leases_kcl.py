"""shardflow workers on a lease table the KCL wrote (rules in support_kcl_leases, from the
KCL's sources): a KCL 3.x table's non-lease items are skipped and left untouched, a
lease's stored position wins over the consumer's start_at (sentinels included, as the
KCL's IteratorBuilder starts from them), worker ids may hold ':', and two shardflow
workers balance 2/2 on four KCL leases whose KCL owner died."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import anyio

from support import create_stream, kinesis, list_shards, unique_name
from support_kcl_leases import is_lease, lease_item, non_lease_items
from support_leases import Delivery, GroupWorker, dynamodb, lease_items, wait_for, wait_loads

DEAD_KCL_WORKER = "ip-10-0-0-7.ec2.internal:4f8c1e2a-9b7d"  # KCL ids often hold ':'


def create_table(url: str, table: str) -> None:
    """The lease table as the KCL creates it (leaseKey, on-demand)."""
    dynamodb(url).create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )


def put_to(url: str, stream: str, shard: dict[str, Any], datas: list[bytes]) -> list[str]:
    """Write ``datas`` to one shard (its starting hash key); their sequence numbers."""
    client = kinesis(url)
    out = []
    for data in datas:
        response = client.put_record(
            StreamName=stream, Data=data, PartitionKey="k",
            ExplicitHashKey=shard["HashKeyRange"]["StartingHashKey"],
        )
        assert response["ShardId"] == shard["ShardId"]
        out.append(response["SequenceNumber"])
    return out


async def test_two_workers_take_over_a_kcl3_table_and_start_where_its_leases_say(
    kinesalite_url: str, moto_url: str
) -> None:
    stream = create_stream(kinesalite_url, shards=4)
    shards = sorted(list_shards(kinesalite_url, stream), key=lambda s: s["ShardId"])
    ids = [s["ShardId"] for s in shards]
    table = unique_name("leases")

    def batch(tag: str) -> dict[str, list[bytes]]:
        return {sid: [f"{tag}-{sid}-{i}".encode() for i in range(3)] for sid in ids}

    # A: before the timestamp; B: after it, before the workers start.
    before = batch("A")
    seq_a = {
        sid: put_to(kinesalite_url, stream, s, before[sid])
        for sid, s in zip(ids, shards, strict=True)
    }
    await anyio.sleep(1.2)  # arrival timestamps have millisecond precision: a clear gap
    start_at = datetime.now(timezone.utc)
    await anyio.sleep(1.2)
    after = batch("B")
    for sid, s in zip(ids, shards, strict=True):
        put_to(kinesalite_url, stream, s, after[sid])

    # The KCL's table: one lease per sentinel and one with a position, owned by a dead
    # KCL worker (its counter never moves again), one in a 3.x hand-off; the leader
    # lock, the migration state and worker metrics (keyed by worker ids with ':').
    create_table(moto_url, table)
    client = dynamodb(moto_url)
    kcl_leases = [
        lease_item(ids[0], "TRIM_HORIZON", owner=DEAD_KCL_WORKER, counter=41),
        lease_item(ids[1], "LATEST", owner=DEAD_KCL_WORKER, counter=7,
                   checkpoint_owner="other:worker"),
        lease_item(ids[2], "AT_TIMESTAMP", owner=DEAD_KCL_WORKER, counter=3),
        lease_item(ids[3], seq_a[ids[3]][-1], owner=DEAD_KCL_WORKER, counter=12, version=2),
    ]
    others = non_lease_items([DEAD_KCL_WORKER, "ip-10-0-0-8.ec2.internal:77aa01"])
    for item in (*kcl_leases, *others):
        client.put_item(TableName=table, Item=item)

    log: list[Delivery] = []
    workers = [
        GroupWorker(
            name, kinesis_url=kinesalite_url, dynamodb_url=moto_url, stream=stream,
            table=table, failover_time=1.0, log=log, start_at=start_at,
        )
        for name in ("sf:a", "sf:b")
    ]
    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
        await wait_loads(
            moto_url, table, lambda c: c == Counter({"sf:a": 2, "sf:b": 2}), within=30
        )
        await wait_for(lambda: all(w.reading == 2 for w in workers), within=15)
        # C: written after the workers started, until the LATEST shard delivers one.
        written: dict[str, list[bytes]] = {sid: [] for sid in ids}
        deadline = time.monotonic() + 30
        n = 0
        while not any(d.shard_id == ids[1] and d.data.startswith(b"C-") for d in log):
            assert time.monotonic() < deadline, "the LATEST lease's shard delivered nothing"
            for sid, s in zip(ids, shards, strict=True):
                data = f"C-{sid}-{n}".encode()
                await anyio.to_thread.run_sync(put_to, kinesalite_url, stream, s, [data])
                written[sid].append(data)
            n += 1
            await anyio.sleep(0.3)
        expected = {
            ids[0]: before[ids[0]] + after[ids[0]] + written[ids[0]],  # TRIM_HORIZON
            ids[2]: after[ids[2]] + written[ids[2]],  # AT_TIMESTAMP: the consumer's time
            ids[3]: after[ids[3]] + written[ids[3]],  # after the stored sequence number
        }

        def seen(sid: str) -> set[bytes]:
            return {d.data for d in log if d.shard_id == sid}

        await wait_for(
            lambda: all(seen(sid) >= set(want) for sid, want in expected.items()), within=30
        )
        for worker in workers:
            await worker.close()

    for sid, want in expected.items():
        assert seen(sid) == set(want), sid
    # LATEST: nothing written before the lease was taken (neither A nor B), whereas the
    # consumer's own start_at would have read B.
    assert seen(ids[1])
    assert all(d.startswith(b"C-") for d in seen(ids[1]))
    assert set(Counter(d.data for d in log).values()) == {1}

    stored = await anyio.to_thread.run_sync(lease_items, moto_url, table)
    for item in others:  # never modified
        assert stored[item["leaseKey"]["S"]] == item
    leases = {k: v for k, v in stored.items() if is_lease(v)}
    assert set(leases) == set(ids)
    for sid in ids:  # taken from the dead KCL worker, then released at close
        assert "leaseOwner" not in leases[sid]
        assert "checkpointOwner" not in leases[sid]  # the 3.x hand-off ended by the take
