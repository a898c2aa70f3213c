"""The lease session (renewal, scans, expiry watch, taking, stealing, releasing, creation)
run by several workers against the in-memory lease table (the seam the benchmark uses;
tests/integration/test_leases_store.py checks it answers as DynamoDB does): a group
balances to max - min <= 1 from a cold table and from one worker holding all, takes a
killed worker's leases, and admits a joiner. Conditions are polled with deadlines."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone

import anyio
import anyio.abc

from shardflow.consumer.checkpoint import ConsumerScope
from shardflow.consumer.lease_session import LeaseSession
from shardflow.consumer.lease_store import MemoryLeaseTable
from shardflow.consumer.lease_table import Lease
from shardflow.models import Shard

FAILOVER = 0.5
MAX_HASH = 2**128 - 1


class Listener:
    def __init__(self) -> None:
        self.wanted = anyio.Event()

    def revoke(self, shard_id: str) -> None:
        pass

    def reassign(self) -> None:
        self.wanted.set()


class Group:
    def __init__(self, shards: int, seed: int) -> None:
        self.table = MemoryLeaseTable(latency=0.001)
        step = (MAX_HASH + 1) // shards
        self.listing = [Shard(f"shardId-{i:012d}", i * step, (i + 1) * step - 1)
                        for i in range(shards)]
        self.rng = random.Random(seed)
        self.scopes: dict[str, anyio.CancelScope] = {}

    async def worker(self, name: str) -> None:
        listener = Listener()
        session = LeaseSession(
            self.table.store(name), ConsumerScope("app", "s", "s", "TRIM_HORIZON"), listener,
            FAILOVER, rng=random.Random(self.rng.random()),
        )
        with self.scopes[name]:
            await session.start()
            async with anyio.create_task_group() as tg:
                await session.assign(self.listing)
                await session.run(tg)
                while True:
                    await listener.wanted.wait()
                    listener.wanted = anyio.Event()
                    await session.assign(self.listing)

    def spawn(self, tg: anyio.abc.TaskGroup, name: str) -> None:
        self.scopes[name] = anyio.CancelScope()  # counted as live from now on
        tg.start_soon(self.worker, name)

    def kill(self, name: str) -> None:
        """Stop a worker without releasing anything (its leases expire)."""
        self.scopes[name].cancel()
        del self.scopes[name]

    def loads(self) -> Counter[str | None]:
        return Counter(lease.owner for lease in self.table.items.values())

    def balanced(self) -> bool:
        loads = self.loads()
        live = [loads.get(name, 0) for name in self.scopes]
        return (
            len(self.table.items) == len(self.listing)
            and sum(live) == len(self.listing)
            and max(live) - min(live) <= 1
        )


async def until(condition: Callable[[], bool], within: float, what: str) -> None:
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 (polling the shared table)
            await anyio.sleep(0.02)
    assert condition(), what


async def test_a_group_balances_takes_over_a_killed_worker_and_admits_a_joiner() -> None:
    group = Group(shards=23, seed=1)
    async with anyio.create_task_group() as tg:
        for i in range(5):
            group.spawn(tg, f"w{i}")
        await until(group.balanced, 30, "balanced from a cold table")
        failed_creates = group.table.stats.failed_by_operation.get("create", 0)
        assert failed_creates <= 16  # one worker created them; at most one batch raced
        victim = group.loads().most_common(1)[0][0]
        assert victim is not None
        group.kill(victim)
        await until(lambda: victim not in group.loads(), 30, "the killed worker's leases")
        await until(group.balanced, 30, "balanced again on four workers")
        group.spawn(tg, "joiner")
        await until(lambda: group.balanced() and group.loads()["joiner"] >= 23 // 5, 30,
                    "a joiner gets its share")
        tg.cancel_scope.cancel()


async def test_one_worker_holding_every_lease_gives_the_others_their_share() -> None:
    group = Group(shards=40, seed=2)
    async with anyio.create_task_group() as tg:
        group.spawn(tg, "first")
        await until(lambda: group.loads() == Counter(first=40), 30, "first holds all")
        for i in range(7):
            group.spawn(tg, f"w{i}")
        await until(group.balanced, 30, "balanced: 5 leases each")
        assert set(group.loads().values()) == {5}
        tg.cancel_scope.cancel()


async def test_a_lease_without_a_checkpoint_starts_at_its_sentinel() -> None:
    # IteratorBuilder starts a lease from its sentinel; the KCL keeps AT_TIMESTAMP's time
    # in the worker's InitialPositionInStreamExtended, not in the lease.
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    for start_at, at_timestamp in (("LATEST", "TRIM_HORIZON"), (when, when)):
        table = MemoryLeaseTable()
        for n, checkpoint in enumerate(
            ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "4959033827149", "SHARD_END"]
        ):
            table.items[f"s{n}"] = Lease(f"s{n}", checkpoint=checkpoint)
        session = LeaseSession(
            table.store("me"), ConsumerScope("app", "s", "s", start_at), Listener(), FAILOVER
        )
        await session.start()
        assert [session.start_position(f"s{n}") for n in range(6)] == [
            "TRIM_HORIZON", "LATEST", at_timestamp, None, None, None
        ]
