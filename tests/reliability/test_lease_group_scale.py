"""A consumer group of six worker processes on 32 shards (kinesalite streams, DynamoDB on
moto): the group balances to max - min <= 1 leases per worker within a bounded time from
a cold table, every record is delivered, and a seventh worker joining the full group gets
its share (DynamoDBLeaseTaker's rule: a worker needing more than one lease steals from a
worker at the target). Records are written while the group forms and after the join."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import anyio
import pytest

from support import create_stream, unique_name
from support_consumer import numbered, put_records
from support_leases import WorkerProcess, wait_for, wait_loads
from support_reliability import report

pytestmark = pytest.mark.slow

SHARDS = 32
WORKERS = 6
FAILOVER = 1.5


def balanced(names: list[str]) -> Callable[[Counter[str | None]], bool]:
    def check(counts: Counter[str | None]) -> bool:
        loads = [counts.get(name, 0) for name in names]
        return (
            None not in counts
            and set(counts) == set(names)
            and sum(loads) == SHARDS
            and max(loads) - min(loads) <= 1
        )

    return check


async def test_six_workers_balance_32_shards_lose_nothing_and_a_joiner_gets_its_share(
    kinesalite_url: str, moto_url: str
) -> None:
    stream = create_stream(kinesalite_url, shards=SHARDS)
    table = unique_name("leases")
    common = dict(kinesis_url=kinesalite_url, dynamodb_url=moto_url, stream=stream,
                  table=table, failover_time=FAILOVER, checkpoint_every=5)
    names = [f"w{i}" for i in range(WORKERS)]
    workers = [WorkerProcess(name, **common) for name in names]
    joiner: WorkerProcess | None = None
    try:
        first = numbered(1600, keys=251, prefix="a")
        await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, first)
        started = time.monotonic()
        counts = await wait_loads(moto_url, table, balanced(names), within=60)
        to_balance = time.monotonic() - started

        def delivered() -> Counter[str]:
            everyone = [*workers, *([joiner] if joiner else [])]
            return Counter(r["data"] for w in everyone for r in w.records)

        await wait_for(lambda: set(delivered()) >= {d.decode() for _, d in first}, within=60)

        joiner = WorkerProcess("joiner", **common)
        joined = time.monotonic()
        after = await wait_loads(
            moto_url, table, balanced([*names, "joiner"]), within=60
        )
        to_share = time.monotonic() - joined
        assert after["joiner"] >= SHARDS // (WORKERS + 1)

        second = numbered(800, keys=251, prefix="b")
        await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, second)
        everything = {d.decode() for _, d in first + second}
        await wait_for(lambda: set(delivered()) >= everything, within=60)
        seen = delivered()
        assert set(seen) == everything  # 0 lost, nothing that was not written
        repeats = sum(seen.values()) - len(seen)
        report(
            f"lease group of {WORKERS} worker processes on {SHARDS} shards",
            failover_time=FAILOVER,
            balanced=sorted(counts.values()),
            balanced_after_s=round(to_balance, 1),
            joiner_share=sorted(after.values()),
            joiner_share_after_s=round(to_share, 1),
            records=len(everything),
            lost=0,
            delivered_twice=repeats,
        )
    finally:
        for worker in [*workers, *([joiner] if joiner else [])]:
            worker.stop()
