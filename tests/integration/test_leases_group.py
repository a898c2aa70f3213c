"""Consumer groups on DynamoDBLeases (moto's DynamoDB, kinesalite streams): workers share
the shards evenly, each record is delivered once in steady state, a joining worker gets
its share, a graceful close hands the leases over without waiting for expiry."""

from __future__ import annotations

import time
from collections import Counter

import anyio

from support import create_stream, unique_name
from support_consumer import numbered, put_records
from support_leases import (
    Delivery,
    GroupWorker,
    WorkerProcess,
    lease_items,
    owners,
    table_loads,
    wait_for,
    wait_loads,
)


def steady(counts: Counter[str | None], expected: list[int]) -> bool:
    return None not in counts and sorted(counts.values()) == expected


async def test_three_workers_in_one_process_share_eight_shards(
    kinesalite_url: str, moto_url: str
) -> None:
    stream = create_stream(kinesalite_url, shards=8)
    table = unique_name("leases")
    log: list[Delivery] = []
    workers = [
        GroupWorker(
            f"w{i}", kinesis_url=kinesalite_url, dynamodb_url=moto_url, stream=stream,
            table=table, failover_time=2.0, log=log,
        )
        for i in range(3)
    ]
    async with anyio.create_task_group() as tg:
        for worker in workers:
            await tg.start(worker.run)
        counts = await wait_loads(moto_url, table, lambda c: steady(c, [2, 3, 3]), within=30)
        # Steady: every worker reads exactly the shards it holds.
        await wait_for(lambda: all(w.reading == counts[w.name] for w in workers), within=15)
        owner_of = await anyio.to_thread.run_sync(owners, moto_url, table)

        items = numbered(800, keys=97)
        await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, items)
        await wait_for(lambda: len({d.data for d in log}) >= len(items), within=30)

        delivered = Counter(d.data for d in log)
        assert set(delivered) == {data for _, data in items}
        assert set(delivered.values()) == {1}, "a record was delivered twice"
        assert all(owner_of[d.shard_id] == d.worker for d in log)
        assert await anyio.to_thread.run_sync(owners, moto_url, table) == owner_of
        for worker in workers:
            await worker.close()
    assert sum(w.lost for w in workers) == 0


async def test_two_worker_processes_share_eight_shards(kinesalite_url: str, moto_url: str) -> None:
    stream = create_stream(kinesalite_url, shards=8)
    table = unique_name("leases")
    procs = [
        WorkerProcess(
            f"p{i}", kinesis_url=kinesalite_url, dynamodb_url=moto_url, stream=stream,
            table=table, failover_time=2.0,
        )
        for i in range(2)
    ]
    try:
        counts = await wait_loads(moto_url, table, lambda c: steady(c, [4, 4]), within=40)
        await wait_for(
            lambda: all(p.reading == counts[p.name] for p in procs),
            within=15,
            what="each process reads the shards it holds",
        )
        owner_of = await anyio.to_thread.run_sync(owners, moto_url, table)
        items = numbered(800, keys=97)
        await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, items)
        expected = {data.decode() for _, data in items}
        await wait_for(
            lambda: {r["data"] for p in procs for r in p.records} >= expected, within=30
        )
        delivered = Counter(r["data"] for p in procs for r in p.records)
        assert set(delivered) == expected
        assert set(delivered.values()) == {1}, "a record was delivered twice"
        for proc in procs:
            assert {owner_of[r["shard"]] for r in proc.records} == {proc.name}
    finally:
        for proc in procs:
            proc.stop()
    for proc in procs:
        assert proc.proc.returncode == 0, proc.diagnostics()
        assert proc.of("closed"), proc.diagnostics()


async def test_joining_worker_gets_its_share_and_close_hands_over(
    kinesalite_url: str, moto_url: str
) -> None:
    failover = 3.0
    stream = create_stream(kinesalite_url, shards=8)
    table = unique_name("leases")
    log: list[Delivery] = []

    def worker(name: str) -> GroupWorker:
        return GroupWorker(
            name, kinesis_url=kinesalite_url, dynamodb_url=moto_url, stream=stream,
            table=table, failover_time=failover, log=log,
        )

    a, b = worker("a"), worker("b")
    async with anyio.create_task_group() as tg:
        await tg.start(a.run)
        await wait_loads(moto_url, table, lambda c: c == Counter(a=8), within=20)
        await wait_for(lambda: a.reading == 8, within=10)

        joined = time.monotonic()
        await tg.start(b.run)
        await wait_loads(moto_url, table, lambda c: c == Counter(a=4, b=4), within=10 * failover)
        await wait_for(lambda: (a.reading, b.reading) == (4, 4), within=10)
        print(f"\njoining worker got its share after {time.monotonic() - joined:.2f}s "
              f"(balancing every {failover / 3:.2f}s, one steal per cycle)")

        items = numbered(200, keys=31)
        await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, items)
        await wait_for(lambda: len({d.data for d in log}) >= len(items), within=30)

        before = await anyio.to_thread.run_sync(lease_items, moto_url, table)
        of_b = {k for k, item in before.items() if item["leaseOwner"]["S"] == "b"}
        closing = time.monotonic()
        await b.close()
        # Released at once: no owner, counter moved on, position kept.
        after = await anyio.to_thread.run_sync(lease_items, moto_url, table)
        for key in of_b:
            item = after[key]
            assert "leaseOwner" not in item or item["leaseOwner"]["S"] == "a", item
            assert int(item["leaseCounter"]["N"]) > int(before[key]["leaseCounter"]["N"])
            assert item["checkpoint"] == before[key]["checkpoint"]

        await wait_loads(moto_url, table, lambda c: c == Counter(a=8), within=10 * failover)
        handover = time.monotonic() - closing
        taken = await anyio.to_thread.run_sync(lease_items, moto_url, table)
        # Taken as released leases: an expired lease taken from b would count an owner
        # switch; a released one has no owner to switch from.
        for key in of_b:
            assert (
                taken[key]["ownerSwitchesSinceCheckpoint"]
                == after[key]["ownerSwitchesSinceCheckpoint"]
            )
        print(f"graceful handover took {handover:.2f}s (failover_time {failover}s)")
        await wait_for(lambda: a.reading == 8, within=10)

        more = numbered(100, keys=31, prefix="late")
        await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, more)
        await wait_for(lambda: {data for _, data in more} <= {d.data for d in log}, within=30)
        assert {d.worker for d in log if d.data.startswith(b"late")} == {"a"}
        await a.close()
    assert Counter(d.data for d in log if not d.data.startswith(b"late")).most_common(1)[0][1] == 1
    assert await table_loads(moto_url, table) == Counter({None: 8})
