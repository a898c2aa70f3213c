"""The lease table as DynamoDB sees it (read back with boto3): the KCL's layout, leases the
KCL wrote are taken over and resumed, applications and streams never collide."""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from shardflow import Consumer, DynamoDBLeases, errors

from support import create_stream, list_shards, read_stream, unique_name
from support_consumer import POLL, collect, numbered, put_records
from support_kcl_leases import lease_item
from support_leases import Delivery, GroupWorker, dynamodb, lease_items, wait_for, wait_loads

# What a KCL 2.x worker writes for an owned lease with a checkpoint, no parents (a shard of
# a new stream): DynamoDBLeaseSerializer.toDynamoRecord, as support_kcl_leases states it.
KCL_LAYOUT_LEASE = lease_item("shardId-000000000000", "1", owner="w1", version=2)


def layout(item: dict[str, Any]) -> dict[str, str]:
    return {name: next(iter(value)) for name, value in item.items()}


async def test_items_have_the_kcl_names_and_types(kinesalite_url: str, moto_url: str) -> None:
    stream = create_stream(kinesalite_url, shards=2)
    table = unique_name("leases")
    items = numbered(40, keys=7)
    await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, items)
    leases = DynamoDBLeases(table, worker_id="w1", failover_time=2.0, endpoint_url=moto_url)
    async with Consumer(
        stream, app_name="billing", checkpointer=leases, endpoint_url=kinesalite_url,
        poll_interval=POLL,
    ) as consumer:
        for record in await collect(consumer, len(items)):
            await consumer.checkpoint(record)
        stored = await anyio.to_thread.run_sync(lease_items, moto_url, table)

    description = dynamodb(moto_url).describe_table(TableName=table)["Table"]
    assert description["KeySchema"] == [{"AttributeName": "leaseKey", "KeyType": "HASH"}]
    assert description["AttributeDefinitions"] == [
        {"AttributeName": "leaseKey", "AttributeType": "S"}
    ]
    assert description["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"

    written = read_stream(kinesalite_url, stream)
    shards = {s["ShardId"]: s for s in list_shards(kinesalite_url, stream)}
    assert set(stored) == set(shards)  # dedicated table: the lease key is the shard id
    for shard_id, item in stored.items():
        assert layout(item) == {**layout(KCL_LAYOUT_LEASE), "shardflowScope": "S"}
        last = [r["SequenceNumber"] for r in written if r["ShardId"] == shard_id][-1]
        assert item["checkpoint"] == {"S": last}
        assert item["checkpointSubSequenceNumber"] == {"N": "0"}
        assert item["ownerSwitchesSinceCheckpoint"] == {"N": "0"}
        assert item["leaseOwner"] == {"S": "w1"}
        assert int(item["leaseCounter"]["N"]) >= 1
        hash_range = shards[shard_id]["HashKeyRange"]
        assert item["startingHashKey"] == {"S": hash_range["StartingHashKey"]}
        assert item["endingHashKey"] == {"S": hash_range["EndingHashKey"]}
        assert item["shardflowScope"] == {"S": f"billing:{stream}"}

    released = await anyio.to_thread.run_sync(lease_items, moto_url, table)
    for shard_id, item in released.items():
        assert "leaseOwner" not in item  # a graceful close releases, as the KCL evicts
        assert item["checkpoint"] == stored[shard_id]["checkpoint"]


async def test_leases_the_kcl_wrote_are_taken_over_and_resumed(
    kinesalite_url: str, moto_url: str
) -> None:
    stream = create_stream(kinesalite_url, shards=1)
    table = unique_name("leases")
    items = numbered(10, keys=3)
    await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, items)
    written = read_stream(kinesalite_url, stream)
    [shard] = list_shards(kinesalite_url, stream)
    ddb = dynamodb(moto_url)
    ddb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "leaseKey", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "leaseKey", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # A Java KCL worker processed records 0..4, then died.
    ddb.put_item(
        TableName=table,
        Item={
            "leaseKey": {"S": shard["ShardId"]},
            "leaseOwner": {"S": "kcl-worker-1"},
            "leaseCounter": {"N": "41"},
            "checkpoint": {"S": written[4]["SequenceNumber"]},
            "checkpointSubSequenceNumber": {"N": "0"},
            "ownerSwitchesSinceCheckpoint": {"N": "0"},
            "pendingCheckpoint": {"S": written[6]["SequenceNumber"]},
            "pendingCheckpointSubSequenceNumber": {"N": "0"},
        },
    )
    leases = DynamoDBLeases(table, worker_id="py-1", failover_time=1.0, endpoint_url=moto_url)
    async with Consumer(
        stream, app_name="billing", checkpointer=leases, endpoint_url=kinesalite_url,
        poll_interval=POLL,
    ) as consumer:
        # Its lease expires (no renewal for failover_time), then it is taken and resumed.
        got = await collect(consumer, 5, within=30)
        assert [r.data for r in got] == [data for _, data in items[5:]]
        taken = (await anyio.to_thread.run_sync(lease_items, moto_url, table))[shard["ShardId"]]
        assert taken["leaseOwner"] == {"S": "py-1"}
        assert taken["ownerSwitchesSinceCheckpoint"] == {"N": "1"}
        assert int(taken["leaseCounter"]["N"]) >= 42
        await consumer.checkpoint(got[-1])
        item = (await anyio.to_thread.run_sync(lease_items, moto_url, table))[shard["ShardId"]]
    assert item["checkpoint"] == {"S": written[-1]["SequenceNumber"]}
    assert item["ownerSwitchesSinceCheckpoint"] == {"N": "0"}
    assert "pendingCheckpoint" not in item
    assert "shardflowScope" not in item  # the KCL's item keeps its own attributes


async def test_applications_and_streams_share_a_shared_table(
    kinesalite_url: str, moto_url: str
) -> None:
    first, second = (create_stream(kinesalite_url, shards=2) for _ in range(2))
    table = unique_name("leases")
    a_items, b_items = numbered(60, prefix="first"), numbered(60, prefix="second")
    await anyio.to_thread.run_sync(put_records, kinesalite_url, first, a_items)
    await anyio.to_thread.run_sync(put_records, kinesalite_url, second, b_items)
    log: list[Delivery] = []
    common = dict(kinesis_url=kinesalite_url, dynamodb_url=moto_url, table=table,
                  failover_time=2.0, log=log, shared_table=True)
    workers = [
        GroupWorker("billing-1", stream=first, app="billing", **common),
        GroupWorker("audit-1", stream=first, app="audit", **common),
        GroupWorker("billing-2", stream=second, app="billing", **common),
    ]
    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
        await wait_for(lambda: len(log) >= 3 * 60, within=30)
        for worker in workers:
            await worker.close()
    by_worker = {w.name: Counter(d.data for d in log if d.worker == w.name) for w in workers}
    assert set(by_worker["billing-1"]) == {d for _, d in a_items}
    assert set(by_worker["audit-1"]) == {d for _, d in a_items}
    assert set(by_worker["billing-2"]) == {d for _, d in b_items}
    keys = set(await anyio.to_thread.run_sync(lease_items, moto_url, table))
    expected = {
        f"{app}:{stream}:{s['ShardId']}"
        for app, stream in (("billing", first), ("audit", first), ("billing", second))
        for s in list_shards(kinesalite_url, stream)
    }
    assert keys == expected


async def test_a_dedicated_table_refuses_another_application_or_stream(
    kinesalite_url: str, moto_url: str
) -> None:
    stream, other_stream = (create_stream(kinesalite_url, shards=1) for _ in range(2))
    table = unique_name("leases")
    log: list[Delivery] = []
    owner = GroupWorker("w1", kinesis_url=kinesalite_url, dynamodb_url=moto_url, stream=stream,
                        table=table, failover_time=2.0, log=log, app="billing")
    async with anyio.create_task_group() as tg:
        await tg.start(owner.run)
        await wait_loads(moto_url, table, lambda c: c == Counter(w1=1), within=20)
        for app, name in (("audit", stream), ("billing", other_stream)):
            leases = DynamoDBLeases(table, worker_id="w2", failover_time=2.0,
                                    endpoint_url=moto_url)
            with pytest.raises(errors.LeaseTableConflict, match="another application or stream"):
                async with Consumer(name, app_name=app, checkpointer=leases,
                                    endpoint_url=kinesalite_url):
                    pass
        # One instance is one worker: binding it twice to the same consumer is refused.
        with pytest.raises(RuntimeError, match="already bound"):
            async with Consumer(stream, app_name="billing", checkpointer=owner.leases,
                                endpoint_url=kinesalite_url):
                pass
        await owner.close()


async def test_a_table_with_another_key_schema_is_refused(
    kinesalite_url: str, moto_url: str
) -> None:
    stream = create_stream(kinesalite_url, shards=1)
    table = unique_name("other")
    dynamodb(moto_url).create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    leases = DynamoDBLeases(table, failover_time=2.0, endpoint_url=moto_url)
    with pytest.raises(errors.LeaseTableConflict, match="leaseKey"):
        async with Consumer(stream, app_name="app", checkpointer=leases,
                            endpoint_url=kinesalite_url):
            pass
