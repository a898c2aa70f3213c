"""Consumer groups at scale: shardflow's real lease code on an in-memory table, virtual time.

    python -m benchmarks.leases [--groups 10x200,50x1000,100x4000] [--latency 0.012]
                                [--failover 10] [--seed 1] [--out DIR]

Each worker is a real :class:`~shardflow.consumer.lease_session.LeaseSession` (renewal,
full scans, expiry watch, taking, stealing, releasing, lease creation), talking to a
:class:`~shardflow.consumer.lease_store.MemoryLeaseTable` whose every request takes
``--latency`` seconds. The event loop runs on a virtual clock (time jumps to the next
timer when every task waits), so minutes of group life take seconds of CPU. A stand-in
for the consumer calls ``assign`` at start and whenever the session asks (reassign).

Per group size W x N (workers x shards), three runs on a fresh table:

- **cold**: every worker starts within 2 s on an empty table; time until every lease is
  owned and max - min <= 1 leases per worker, then 60 s of steady state; then one worker
  is killed (no release) and the time until its leases are owned again is measured.
- **one holds all**: one worker creates and takes every lease, then the others start.

Reported: seconds and taker cycles (2 x (failover + 0.025) s each) to balance; time until
every worker held a lease; DynamoDB read and write units per second (on-demand billing:
a consistent scan costs one read unit per 4 KB of items, ~330 bytes per lease) in steady
state and at the busiest second; failed conditional writes; idle workers at the end;
failover after the kill. Prints a Markdown table, writes ``benchmarks/results/leases.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import random
import selectors
import statistics
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from shardflow.consumer.checkpoint import ConsumerScope
from shardflow.consumer.lease_session import EPSILON, LeaseSession
from shardflow.consumer.lease_store import MemoryLeaseTable
from shardflow.models import Shard

from benchmarks.common import Timer, fmt_float, fmt_int, markdown_table, write_results

MAX_HASH = 2**128 - 1
STEADY = 60.0
DEADLINE = 900.0


# --- a virtual clock for asyncio ------------------------------------------------------------


class _Selector:
    """Wraps the loop's selector: never blocks; a wait for a timer advances the clock."""

    def __init__(self, loop: VirtualClockLoop, real: selectors.BaseSelector) -> None:
        self._loop = loop
        self._real = real

    def select(self, timeout: float | None = None) -> list[Any]:
        events = self._real.select(0)
        if not events and timeout is not None and timeout > 0:
            self._loop.now += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose clock is virtual: sleeping costs no wall time."""

    def __init__(self) -> None:
        self.now = 0.0
        super().__init__(_Selector(self, selectors.DefaultSelector()))  # type: ignore[arg-type]

    def time(self) -> float:
        return self.now


# --- the group --------------------------------------------------------------------------------


class _Listener:
    def __init__(self) -> None:
        self.wanted = anyio.Event()
        self.revoked = 0

    def revoke(self, shard_id: str) -> None:
        self.revoked += 1

    def reassign(self) -> None:
        self.wanted.set()


@dataclass
class Worker:
    name: str
    session: LeaseSession
    listener: _Listener
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    alive: bool = False


class Group:
    def __init__(
        self, shards: int, failover: float, latency: float, seed: int, **session: Any
    ) -> None:
        self.session_options = session
        self.table = MemoryLeaseTable(latency=latency)
        step = (MAX_HASH + 1) // shards
        self.listing = [
            Shard(f"shardId-{i:012d}", i * step,
                  MAX_HASH if i == shards - 1 else (i + 1) * step - 1)
            for i in range(shards)
        ]
        self.shards = shards
        self.failover = failover
        self.rng = random.Random(seed)
        self.workers: list[Worker] = []
        self.samples: list[dict[str, float]] = []
        self.expected = 0  # live workers a balanced group has

    def new_worker(self) -> Worker:
        name = f"worker-{len(self.workers):03d}"
        listener = _Listener()
        scope = ConsumerScope("app", "stream", "stream", "TRIM_HORIZON")
        session = LeaseSession(
            self.table.store(name), scope, listener, self.failover,
            rng=random.Random(self.rng.random()), **self.session_options,
        )
        worker = Worker(name, session, listener)
        self.workers.append(worker)
        return worker

    async def run_worker(self, worker: Worker, delay: float) -> None:
        await anyio.sleep(delay)
        with worker.scope:
            worker.alive = True
            session = worker.session
            await session.start()
            async with anyio.create_task_group() as tg:
                await session.assign(self.listing)
                await session.run(tg)
                while True:
                    await worker.listener.wanted.wait()
                    worker.listener.wanted = anyio.Event()
                    await session.assign(self.listing)
        worker.alive = False

    def loads(self) -> tuple[Counter[str], int]:
        live = {w.name for w in self.workers if w.alive}
        counts: Counter[str] = Counter({name: 0 for name in live})
        unowned = 0
        for lease in self.table.items.values():
            if lease.owner in live:
                counts[lease.owner] += 1
            else:
                unowned += 1
        return counts, unowned

    def balanced(self) -> bool:
        counts, unowned = self.loads()
        return (
            unowned == 0
            and len(counts) == self.expected
            and len(self.table.items) == self.shards
            and bool(counts)
            and max(counts.values()) - min(counts.values()) <= 1
        )

    async def sample(self) -> None:
        last = (0.0, 0.0)
        while True:
            await anyio.sleep(1.0)
            stats = self.table.stats
            counts, unowned = self.loads()
            self.samples.append({
                "t": anyio.current_time(),
                "rcu": stats.read_units - last[0],
                "wcu": stats.write_units - last[1],
                "idle": sum(1 for n in counts.values() if n == 0),
                "unowned": unowned,
            })
            last = (stats.read_units, stats.write_units)

    async def until(self, condition: Callable[[], bool], step: float = 0.25) -> float:
        start = anyio.current_time()
        while not condition():
            if anyio.current_time() - start > DEADLINE:
                raise TimeoutError("not within the simulation deadline")
            await anyio.sleep(step)
        return anyio.current_time() - start


def _rates(samples: list[dict[str, float]], since: float, until: float) -> dict[str, float]:
    window = [s for s in samples if since < s["t"] <= until]
    if not window:
        return {"rcu": 0.0, "wcu": 0.0, "rcu_peak": 0.0, "wcu_peak": 0.0}
    return {
        "rcu": statistics.fmean(s["rcu"] for s in window),
        "wcu": statistics.fmean(s["wcu"] for s in window),
        "rcu_peak": max(s["rcu"] for s in window),
        "wcu_peak": max(s["wcu"] for s in window),
    }


async def cold(workers: int, shards: int, failover: float, latency: float, seed: int,
               *, kill: bool = True, **session: Any) -> dict[str, Any]:
    group = Group(shards, failover, latency, seed, **session)
    async with anyio.create_task_group() as tg:
        tg.start_soon(group.sample)
        group.expected = workers
        for _ in range(workers):
            tg.start_soon(group.run_worker, group.new_worker(), group.rng.uniform(0, 2))
        first_lease = await group.until(
            lambda: bool(group.loads()[0]) and len(group.loads()[0]) == workers
            and min(group.loads()[0].values()) > 0
        )
        start_balance = anyio.current_time()
        balance = first_lease + await group.until(group.balanced)
        del start_balance
        t0 = anyio.current_time()
        failed_before = group.table.stats.failed_writes
        failed_by = dict(group.table.stats.failed_by_operation)
        await anyio.sleep(STEADY)
        t1 = anyio.current_time()
        steady = _rates(group.samples, t0, t1)
        startup = _rates(group.samples, 0.0, t0)
        if not kill:
            tg.cancel_scope.cancel()
            return {"balance_s": balance, "steady": steady, "startup": startup}
        victim = group.workers[0]
        held = {x.shard_id for x in group.table.items.values() if x.owner == victim.name}
        victim.scope.cancel()  # killed: no release
        victim.alive = False
        group.expected -= 1
        failover_s = await group.until(
            lambda: all(group.table.items[s].owner not in (None, victim.name) for s in held),
            step=0.05,
        )
        rebalance = failover_s + await group.until(group.balanced)
        counts, _ = group.loads()
        tg.cancel_scope.cancel()
    return {
        "first_lease_s": first_lease,
        "balance_s": balance,
        "balance_cycles": balance / (2 * (failover + EPSILON)),
        "startup": startup,
        "steady": steady,
        "failed_writes_startup": failed_before,
        "failed_writes_startup_by_operation": failed_by,
        "failover_s": failover_s,
        "failover_x": failover_s / failover,
        "rebalance_after_kill_s": rebalance,
        "idle_end": sum(1 for n in counts.values() if n == 0),
        "loads_end": [min(counts.values()), max(counts.values())],
    }


async def hold_all(workers: int, shards: int, failover: float, latency: float, seed: int
                   ) -> dict[str, Any]:
    group = Group(shards, failover, latency, seed + 1)
    async with anyio.create_task_group() as tg:
        tg.start_soon(group.sample)
        first = group.new_worker()
        group.expected = workers
        tg.start_soon(group.run_worker, first, 0.0)
        await group.until(lambda: group.loads()[0].get(first.name, 0) == shards)
        t0 = anyio.current_time()
        for _ in range(workers - 1):
            tg.start_soon(group.run_worker, group.new_worker(), group.rng.uniform(0, 2))
        balance = await group.until(group.balanced)
        rates = _rates(group.samples, t0, anyio.current_time())
        counts, _ = group.loads()
        tg.cancel_scope.cancel()
    return {
        "balance_s": balance,
        "balance_cycles": balance / (2 * (failover + EPSILON)),
        "rates": rates,
        "idle_end": sum(1 for n in counts.values() if n == 0),
    }


def run_group(workers: int, shards: int, args: argparse.Namespace) -> dict[str, Any]:
    def sim(fn: Any) -> dict[str, Any]:
        result: dict[str, Any] = {}

        async def main() -> None:
            result.update(await fn(workers, shards, args.failover, args.latency, args.seed))

        with Timer() as timer:
            anyio.run(main, backend="asyncio", backend_options={"loop_factory": VirtualClockLoop})
        result["cpu_s"] = timer.result.cpu_seconds
        return result

    result = {"workers": workers, "shards": shards, "cold": sim(cold), "hold_all": sim(hold_all)}
    if args.compare:
        # The cadence before issue 18, same code otherwise: every worker scans the whole
        # table every failover_time / 3, no expiry watch.
        result["old_cadence"] = sim(functools.partial(
            cold, kill=False, scan_interval=args.failover / 3, watch=False
        ))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--groups", default="10x200,50x1000,100x4000",
                        help="workers x shards, comma-separated")
    parser.add_argument("--latency", type=float, default=0.012,
                        help="seconds per DynamoDB request (default 0.012)")
    parser.add_argument("--failover", type=float, default=10.0,
                        help="failover_time in seconds (default 10, the KCL's)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--compare", action="store_true",
                        help="also run each group with every worker scanning the whole "
                             "table every failover/3 and no expiry watch (the cadence "
                             "before issue 18): steady reads in the same run")
    parser.add_argument("--out", default=None, help="results folder")
    args = parser.parse_args(argv)
    groups = [tuple(int(x) for x in g.split("x")) for g in args.groups.split(",")]
    results = []
    for workers, shards in groups:
        print(f"simulating {workers} workers x {shards} shards ...", file=sys.stderr)
        results.append(run_group(workers, shards, args))
    headers = [
        "workers x shards", "cold: balanced s (cycles)", "first lease s",
        "hold-all: balanced s (cycles)", "steady RCU/s", "steady WCU/s",
        "peak RCU/s", "peak WCU/s", "failed writes (start)", "failover s (x)",
        "idle (end)", "CPU s",
    ]
    rows = []
    for r in results:
        c, h = r["cold"], r["hold_all"]
        rows.append([
            f"{r['workers']} x {r['shards']:,}",
            f"{fmt_float(c['balance_s'])} ({fmt_float(c['balance_cycles'])})",
            fmt_float(c["first_lease_s"]),
            f"{fmt_float(h['balance_s'])} ({fmt_float(h['balance_cycles'])})",
            fmt_float(c["steady"]["rcu"]), fmt_float(c["steady"]["wcu"]),
            fmt_int(max(c["startup"]["rcu_peak"], c["steady"]["rcu_peak"])),
            fmt_int(max(c["startup"]["wcu_peak"], c["steady"]["wcu_peak"])),
            fmt_int(c["failed_writes_startup"]),
            f"{fmt_float(c['failover_s'])} ({fmt_float(c['failover_x'], 2)})",
            str(c["idle_end"] + h["idle_end"]),
            fmt_float(c["cpu_s"] + h["cpu_s"]),
        ])
    print(f"\nLease groups: failover_time {args.failover} s, DynamoDB latency "
          f"{args.latency * 1000:g} ms, virtual time\n")
    print(markdown_table(headers, rows))
    if args.compare:
        compared = []
        for r in results:
            new, old = r["cold"]["steady"], r["old_cadence"]["steady"]
            compared.append([
                f"{r['workers']} x {r['shards']:,}", fmt_float(old["rcu"]), fmt_float(new["rcu"]),
                fmt_float(old["rcu"] / new["rcu"] if new["rcu"] else None, 2),
                fmt_float(old["wcu"]), fmt_float(new["wcu"]),
            ])
        print("\nSteady reads, same run: scanning everything every failover/3 (old) vs now\n")
        print(markdown_table(
            ["workers x shards", "old RCU/s", "now RCU/s", "old / now", "old WCU/s",
             "now WCU/s"], compared))
    from pathlib import Path

    path = write_results(
        "leases",
        {"failover_time": args.failover, "latency": args.latency, "seed": args.seed,
         "groups": results},
        directory=Path(args.out) if args.out else None,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
