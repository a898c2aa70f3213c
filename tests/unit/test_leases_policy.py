"""The lease protocol's decisions without I/O: expiry on the observer's clock, which leases
to create, take and steal; lease items and keys; DynamoDBLeases options."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import datetime, timezone

import pytest

from shardflow import DynamoDBLeases
from shardflow.consumer.lease_policy import (
    ExpiryClock,
    is_parent_done,
    may_process,
    plan_new_leases,
    plan_takes,
)
from shardflow.consumer.lease_table import KeyScheme, Lease, LeaseTable
from shardflow.models import Shard

FULL = 2**128 - 1


def shard(n: int, *parents: int, closed: bool = False, low: int = 0, high: int = FULL) -> Shard:
    ids = [f"shardId-{p:012d}" for p in parents]
    return Shard(
        f"shardId-{n:012d}", low, high,
        parent_shard_id=ids[0] if ids else None,
        adjacent_parent_shard_id=ids[1] if len(ids) > 1 else None,
        starting_sequence_number="1",
        ending_sequence_number="9" if closed else None,
    )


def sid(n: int) -> str:
    return f"shardId-{n:012d}"


def lease(n: int, owner: str | None = None, counter: int = 1, checkpoint: str = "TRIM_HORIZON",
          parents: tuple[int, ...] = ()) -> Lease:
    return Lease(sid(n), owner=owner, counter=counter, checkpoint=checkpoint,
                 parents=frozenset(sid(p) for p in parents))


# --- expiry -------------------------------------------------------------------------------


def test_expiry_is_measured_on_the_observers_clock() -> None:
    clock = ExpiryClock(failover_time=10.0)
    owned, free = lease(1, "a", counter=5), lease(2, None, counter=3)
    assert clock.expired(free, now=0.0)  # unowned: free at once
    assert not clock.expired(owned, now=1000.0)  # never observed: not expired
    clock.observe([owned, free], now=100.0)
    assert not clock.expired(owned, now=110.0)
    assert clock.expired(owned, now=110.1)
    # The counter moved: its clock restarts from this observation.
    renewed = lease(1, "a", counter=6)
    clock.observe([renewed], now=109.0)
    assert not clock.expired(renewed, now=119.0)
    assert clock.expired(renewed, now=119.5)
    # Observing the same counter again does not restart it.
    clock.observe([renewed], now=115.0)
    assert clock.expired(renewed, now=119.5)
    # A lease observed with a counter the clock has not seen is not judged expired.
    assert not clock.expired(lease(1, "a", counter=7), now=500.0)


# --- taking and stealing ------------------------------------------------------------------


def never(_: Lease) -> bool:
    return False


def test_a_new_worker_takes_every_unowned_lease_when_alone() -> None:
    leases = [lease(i) for i in range(8)]
    plan = plan_takes(leases, "me", set(), lambda x: x.owner is None, random.Random(1))
    assert plan.target == 8
    assert sorted(x.shard_id for x in plan.take) == [sid(i) for i in range(8)]
    assert plan.steal is None


def test_a_joining_worker_steals_one_lease_per_cycle_from_the_most_loaded() -> None:
    leases = [lease(i, "a" if i < 5 else "b") for i in range(8)]
    plan = plan_takes(leases, "me", set(), never, random.Random(1))
    assert plan.target == math.ceil(8 / 3)
    assert plan.take == ()
    assert plan.steal is not None
    assert plan.steal.owner == "a"


def test_no_steal_when_nobody_is_above_the_target() -> None:
    # 3 / 3 / 2: the worker with 2 is below the target (3) but nobody is above it.
    leases = [lease(i, "a" if i < 3 else "b" if i < 6 else "me") for i in range(8)]
    held = {sid(6), sid(7)}
    assert plan_takes(leases, "me", held, never, random.Random(1)) == plan_takes(
        leases, "me", held, never, random.Random(2)
    )
    plan = plan_takes(leases, "me", held, never, random.Random(1))
    assert (plan.target, plan.take, plan.steal) == (3, (), None)


def test_expired_leases_are_taken_before_any_steal_and_dead_owners_do_not_count() -> None:
    leases = [lease(i, "a" if i < 4 else "dead") for i in range(8)]
    plan = plan_takes(leases, "me", set(), lambda x: x.owner == "dead", random.Random(1))
    assert plan.target == 4  # workers: a and me
    assert sorted(x.shard_id for x in plan.take) == [sid(i) for i in range(4, 8)]
    assert plan.steal is None


def test_leases_the_table_says_are_mine_are_reclaimed() -> None:
    leases = [lease(0, "me"), lease(1, "a"), lease(2, "a")]
    plan = plan_takes(leases, "me", set(), never, random.Random(1))
    assert [x.shard_id for x in plan.take] == [sid(0)]


def simulate(n_leases: int, n_workers: int, seed: int) -> tuple[int, Counter[str]]:
    """Workers balance an in-memory table one after another; cycles until stable."""
    rng = random.Random(seed)
    owners: dict[str, str | None] = {sid(i): None for i in range(n_leases)}
    names = [f"w{i}" for i in range(n_workers)]
    for cycle in range(1, 200):
        changed = False
        for me in rng.sample(names, len(names)):
            leases = [Lease(s, owner=o) for s, o in owners.items()]
            held = {s for s, o in owners.items() if o == me}
            plan = plan_takes(leases, me, held, lambda x: x.owner is None, rng)
            steals = [plan.steal] if plan.steal else []
            assert len(steals) <= 1
            for taken in (*plan.take, *steals):
                owners[taken.shard_id] = me
                changed = True
        if not changed:
            return cycle, Counter(o for o in owners.values() if o is not None)
    raise AssertionError("never stable")


@pytest.mark.parametrize(("n_leases", "n_workers"), [(8, 2), (8, 3), (8, 5), (16, 3), (3, 2)])
def test_workers_converge_to_the_target(n_leases: int, n_workers: int) -> None:
    for seed in range(5):
        cycles, loads = simulate(n_leases, n_workers, seed)
        target = math.ceil(n_leases / n_workers)
        assert sum(loads.values()) == n_leases
        assert max(loads.values()) <= target
        assert cycles <= n_leases + 2


# --- creating leases ----------------------------------------------------------------------


def listing(*shards: Shard) -> dict[str, Shard]:
    return {s.shard_id: s for s in shards}


@pytest.mark.parametrize(
    ("start_at", "open_cp", "closed_cp"),
    [
        ("TRIM_HORIZON", "TRIM_HORIZON", "TRIM_HORIZON"),
        ("LATEST", "LATEST", "SHARD_END"),
        (datetime(2024, 1, 1, tzinfo=timezone.utc), "AT_TIMESTAMP", "AT_TIMESTAMP"),
    ],
)
def test_roots_start_where_the_consumer_starts(
    start_at: str | datetime, open_cp: str, closed_cp: str
) -> None:
    shards = listing(shard(0, closed=True), shard(1), shard(2, 0))
    planned = {x.shard_id: x for x in plan_new_leases(shards, {}, start_at, "app:s")}
    assert planned[sid(1)].checkpoint == open_cp
    assert planned[sid(0)].checkpoint == closed_cp
    # Under LATEST the closed root is done at once, so its child starts with it.
    if closed_cp == "SHARD_END":
        assert planned[sid(2)].checkpoint == "TRIM_HORIZON"
        assert planned[sid(2)].parents == {sid(0)}
    else:
        assert sid(2) not in planned
    assert all(x.owner is None and x.counter == 0 and x.scope == "app:s" for x in planned.values())


def test_children_get_leases_when_every_parent_is_done() -> None:
    shards = listing(
        shard(0, closed=True), shard(1, closed=True),
        shard(2, 0), shard(3, 0),  # split of 0
        shard(4, 1, 5),  # merge of 1 and 5
        shard(5, closed=True),
    )
    leases = {sid(0): lease(0, checkpoint="123"), sid(1): lease(1, checkpoint="SHARD_END"),
              sid(5): lease(5, checkpoint="77")}
    assert plan_new_leases(shards, leases, "TRIM_HORIZON", "s") == []
    leases[sid(0)] = lease(0, checkpoint="SHARD_END")
    planned = plan_new_leases(shards, leases, "TRIM_HORIZON", "s")
    assert sorted(x.shard_id for x in planned) == [sid(2), sid(3)]
    assert all(x.checkpoint == "TRIM_HORIZON" and x.parents == {sid(0)} for x in planned)
    leases[sid(5)] = lease(5, checkpoint="SHARD_END")
    [merged] = [x for x in plan_new_leases(shards, leases, "LATEST", "s") if x.shard_id == sid(4)]
    assert merged.parents == {sid(1), sid(5)}


def test_a_parent_whose_lease_was_cleaned_up_is_not_recreated() -> None:
    shards = listing(shard(0, closed=True), shard(1, 0))
    leases = {sid(1): lease(1, checkpoint="4961")}  # the child started: 0 was done
    assert plan_new_leases(shards, leases, "TRIM_HORIZON", "s") == []
    assert is_parent_done(sid(0), shards, leases)


def test_children_are_processed_only_after_all_parents() -> None:
    shards = listing(shard(0, closed=True), shard(1, closed=True), shard(2, 0, 1))
    child = lease(2, parents=(0, 1))
    leases = {sid(0): lease(0, checkpoint="SHARD_END"), sid(1): lease(1, checkpoint="5"),
              sid(2): child}
    assert not may_process(sid(2), shards, leases)
    leases[sid(1)] = lease(1, checkpoint="SHARD_END")
    assert may_process(sid(2), shards, leases)
    # A parent gone from the stream (trimmed) does not block; an existing one without a
    # lease does (it is not read yet).
    assert may_process(sid(2), listing(shard(2, 0, 1)), {sid(2): child})
    assert not may_process(sid(2), shards, {sid(2): child})


# --- items and keys -----------------------------------------------------------------------


def test_key_schemes() -> None:
    dedicated = KeyScheme.for_scope("billing", "logs", shared=False)
    assert dedicated.key("shardId-000000000001") == "shardId-000000000001"
    assert dedicated.shard_id("shardId-000000000001") == "shardId-000000000001"
    assert dedicated.shard_id("audit:logs:shardId-000000000001") is None
    shared = KeyScheme.for_scope("billing", "logs", shared=True)
    assert shared.key("shardId-1") == "billing:logs:shardId-1"
    assert shared.shard_id("billing:logs:shardId-1") == "shardId-1"
    assert shared.shard_id("audit:logs:shardId-1") is None
    assert shared.shard_id("shardId-1") is None
    # An application whose name extends another's prefix is not mistaken for it.
    scheme = KeyScheme.for_scope("billing", "x", shared=True)
    assert scheme.shard_id("billing:x:y:shardId-1") is None


def test_items_round_trip_with_the_kcl_types() -> None:
    table = LeaseTable(None, "t", KeyScheme(), scope="app:s", owner="w1")
    original = Lease(
        sid(3), owner="w1", counter=7, checkpoint="4961", sub_sequence_number=2,
        owner_switches=1, parents=frozenset({sid(1), sid(2)}), children=frozenset({sid(5)}),
        starting_hash_key="0", ending_hash_key=str(FULL), scope="app:s",
    )
    item = table.to_item(original)
    assert {name: next(iter(v)) for name, v in item.items()} == {
        "leaseKey": "S", "leaseOwner": "S", "leaseCounter": "N", "checkpoint": "S",
        "checkpointSubSequenceNumber": "N", "ownerSwitchesSinceCheckpoint": "N",
        "parentShardId": "SS", "childShardIds": "SS", "startingHashKey": "S",
        "endingHashKey": "S", "shardflowScope": "S",
    }
    assert table.parse(item) == original
    unowned = table.to_item(Lease(sid(4)))
    assert "leaseOwner" not in unowned
    assert "parentShardId" not in unowned  # DynamoDB has no empty sets
    assert Lease(sid(4), checkpoint="SHARD_END").finished
    assert Lease(sid(4), checkpoint="SHARD_END").started
    assert Lease(sid(4), checkpoint="123").started
    assert not Lease(sid(4), checkpoint="LATEST").started


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"table": "x"}, ValueError, "table"),
        ({"table": "bad name!"}, ValueError, "table"),
        ({"failover_time": 0.1}, ValueError, "failover_time"),
        ({"failover_time": math.inf}, ValueError, "failover_time"),
        ({"failover_time": "10"}, TypeError, "failover_time"),
        ({"failover_time": True}, TypeError, "failover_time"),
        ({"worker_id": ""}, ValueError, "worker_id"),
        ({"worker_id": 3}, ValueError, "worker_id"),
        ({"shared_table": 1}, TypeError, "shared_table"),
        ({"credentials": object()}, TypeError, "credentials"),
    ],
)
def test_options_are_validated(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    options: dict[str, object] = {"table": "leases", **kwargs}
    table = options.pop("table")
    with pytest.raises(error, match=match):
        DynamoDBLeases(table, **options)  # type: ignore[arg-type]


def test_defaults() -> None:
    a, b = DynamoDBLeases("leases"), DynamoDBLeases("leases")
    assert a.worker_id != b.worker_id  # unique per instance by default
    assert a.failover_time == 10.0
    assert not a.shared_table
    assert a.table == "leases"
    assert "leases" in repr(a)
    assert a.worker_id in repr(a)


# --- DynamoDBLeaseTaker's rules, uneven division, any start ---------------------------------


def test_a_worker_needing_more_than_one_steals_from_a_worker_at_the_target() -> None:
    # DynamoDBLeaseTaker.chooseLeasesToSteal: the most loaded worker has exactly the
    # target; a thief needing more than one steals one, a thief needing one does not.
    leases = [lease(i, "a" if i < 2 else "b") for i in range(4)]  # a 2/2 group, 4 shards
    plan = plan_takes(leases, "joiner", set(), never, random.Random(1))
    assert plan.target == 2  # ceil(4 / 3)
    assert plan.steal is not None
    assert plan.steal.owner in ("a", "b")
    uneven = [lease(i, "a" if i < 6 else "b" if i < 12 else "c") for i in range(17)]
    held = {sid(i) for i in range(12, 17)}  # c has 5 of target 6: needs one
    assert plan_takes(uneven, "c", held, never, random.Random(1)).steal is None


def test_finished_leases_count_while_an_owner_renews_them_and_are_never_taken() -> None:
    # DynamoDBLeaseTaker counts SHARD_END leases with their owner; released or expired
    # ones are nobody's and, having nothing left to read, are not taken.
    leases = [lease(i, "a") for i in range(2)] + [
        lease(2, "a", checkpoint="SHARD_END"), lease(3, "a", checkpoint="SHARD_END"),
        lease(4, None, checkpoint="SHARD_END"), lease(5, "dead", checkpoint="SHARD_END"),
    ]
    plan = plan_takes(leases, "me", set(), lambda x: x.owner == "dead", random.Random(1))
    assert plan.target == 2  # 4 counted leases (2 open, 2 finished held by a), 2 workers
    assert plan.take == ()
    assert plan.steal is not None
    assert not plan.steal.finished


def play(
    owners: dict[str, str | None], names: list[str], rng: random.Random, cycles: int
) -> list[int]:
    """Workers run balancing cycles one after another on the table ``owners`` (takes,
    steals, releases applied at once); the number of leases moved in each cycle."""
    moved_per_cycle = []
    for _ in range(cycles):
        moved = 0
        for me in rng.sample(names, len(names)):
            leases = [Lease(s, owner=o) for s, o in owners.items()]
            held = {s for s, o in owners.items() if o == me}
            plan = plan_takes(leases, me, held, lambda x: x.owner is None, rng)
            free = {x.shard_id for x in plan.take if x.owner is None}
            stolen = [x for x in plan.take if x.owner is not None and x.owner != me]
            assert not stolen, "only free or expired leases are taken in bulk"
            for taken in (*plan.take, *([plan.steal] if plan.steal else [])):
                owners[taken.shard_id] = me
            for shard_id in plan.shed:
                owners[shard_id] = None
            moved += len(free) + (plan.steal is not None) + len(plan.shed)
        moved_per_cycle.append(moved)
    return moved_per_cycle


def spread(owners: dict[str, str | None], names: list[str]) -> int:
    loads = Counter({n: 0 for n in names})
    loads.update(o for o in owners.values() if o is not None)
    assert None not in owners.values()
    return max(loads.values()) - min(loads.values())


@pytest.mark.parametrize(
    ("n_leases", "n_workers"),
    [(32, 6), (38, 20), (4, 3), (200, 10), (7, 7), (5, 8)],
)
@pytest.mark.parametrize("start", ["cold", "one_holds_all", "random"])
def test_any_start_converges_to_max_minus_min_at_most_one_and_stays(
    n_leases: int, n_workers: int, start: str
) -> None:
    for seed in range(3):
        rng = random.Random(seed)
        names = [f"w{i}" for i in range(n_workers)]
        keys = [sid(i) for i in range(n_leases)]
        if start == "cold":
            owners: dict[str, str | None] = dict.fromkeys(keys)
        elif start == "one_holds_all":
            owners = dict.fromkeys(keys, names[0])
        else:
            owners = {k: rng.choice(names) for k in keys}
        play(owners, names, rng, 25)
        assert spread(owners, names) <= 1 or n_workers > n_leases, (seed, owners)
        if n_workers > n_leases:
            assert Counter(owners.values()).most_common(1)[0][1] == 1
        # Stable: nothing moves any more (no ping-pong).
        assert play(owners, names, rng, 5) == [0] * 5


def test_a_joiner_to_a_full_uneven_group_gets_its_share() -> None:
    rng = random.Random(3)
    names = [f"w{i}" for i in range(6)]
    owners: dict[str, str | None] = {sid(i): None for i in range(32)}
    play(owners, names, rng, 20)
    assert sorted(Counter(owners.values()).values()) == [5, 5, 5, 5, 6, 6]
    names.append("joiner")
    play(owners, names, rng, 20)
    assert sorted(Counter(owners.values()).values()) == [4, 4, 4, 5, 5, 5, 5]


def test_lease_planning_goes_parents_first_in_one_pass() -> None:
    # 0 -> 1 -> 2 -> 3, each the single child of the previous, listed children first.
    # Under LATEST the closed root is done at once; its child continues the lineage from
    # TRIM_HORIZON and its own children wait for it.
    shards = listing(shard(3, 2), shard(2, 1, closed=True), shard(1, 0, closed=True),
                     shard(0, closed=True))
    planned = plan_new_leases(shards, {}, "LATEST", "s")
    assert [(x.shard_id, x.checkpoint) for x in planned] == [
        (sid(0), "SHARD_END"), (sid(1), "TRIM_HORIZON")
    ]
    finished = {x.shard_id: Lease(x.shard_id, checkpoint="SHARD_END") for x in planned}
    assert [x.shard_id for x in plan_new_leases(shards, finished, "LATEST", "s")] == [sid(2)]
