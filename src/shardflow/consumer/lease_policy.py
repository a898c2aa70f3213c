"""The decisions of the lease protocol, without I/O: expiry, creation, taking, stealing.

- **Expiry** (:class:`ExpiryClock`): a lease is expired when its ``leaseCounter`` has not
  changed for ``failover_time`` seconds on this observer's monotonic clock (hosts' clocks
  are never compared). An unowned lease is free at once.
- **Creation** (:func:`plan_new_leases`): a shard gets a lease once all its parents are
  done; shards whose parents are gone from the stream are roots.
- **Parents first** (:func:`may_process`): a shard is read only when every parent's
  lease is at SHARD_END (or the parent is gone, or its lease was deleted after a child
  started, as the KCL's lease clean-up does).
- **Balance** (:func:`plan_takes`): DynamoDBLeaseTaker's rules: target = ceil(leases /
  workers), workers being the owners of unexpired leases plus this worker; take expired
  or unowned leases first; otherwise steal one lease from the most loaded worker when
  it is above the target, or at it while this worker needs more than one. A worker
  above target + 1 releases its excess.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ..models import Shard
from .lease_table import AT_TIMESTAMP, LATEST, SHARD_END_MARK, TRIM_HORIZON, Lease

__all__ = [
    "ExpiryClock",
    "TakePlan",
    "counts_toward_load",
    "has_started_child",
    "initial_checkpoint",
    "is_parent_done",
    "may_process",
    "plan_new_leases",
    "plan_takes",
    "undone_parents",
]


class ExpiryClock:
    """When each lease's counter last changed, on this observer's monotonic clock."""

    __slots__ = ("_failover", "_looked", "_seen")

    def __init__(self, failover_time: float) -> None:
        self._failover = failover_time
        self._seen: dict[str, tuple[int, float]] = {}
        self._looked: dict[str, float] = {}

    def observe(self, leases: Iterable[Lease], now: float) -> None:
        """Record a full scan: a new or changed counter restarts that lease's clock."""
        seen: dict[str, tuple[int, float]] = {}
        looked: dict[str, float] = {}
        for lease in leases:
            previous = self._seen.get(lease.shard_id)
            if previous is not None and previous[0] == lease.counter:
                seen[lease.shard_id] = previous
            else:
                seen[lease.shard_id] = (lease.counter, now)
            looked[lease.shard_id] = now
        self._seen = seen
        self._looked = looked

    def observe_some(self, leases: Iterable[Lease], now: float) -> None:
        """Record a partial scan (one segment): only these leases' clocks move."""
        seen = self._seen
        for lease in leases:
            previous = seen.get(lease.shard_id)
            if previous is None or previous[0] != lease.counter:
                seen[lease.shard_id] = (lease.counter, now)
            self._looked[lease.shard_id] = now

    def expired(
        self, lease: Lease, now: float, *, grace: float = 0.0, as_seen: bool = False
    ) -> bool:
        """Unowned, or its counter unchanged for failover_time (+ ``grace``) (False if
        never observed). ``as_seen``: judged at this clock's last look at the lease, not
        at ``now`` (a lease outside the segments just read is not judged on old news)."""
        if lease.owner is None:
            return True
        seen = self._seen.get(lease.shard_id)
        if seen is None or seen[0] != lease.counter:
            return False
        if as_seen:
            now = min(now, self._looked.get(lease.shard_id, now))
        return now - seen[1] > self._failover + grace


def is_parent_done(
    parent_id: str, listing: Mapping[str, Shard], leases: Mapping[str, Lease]
) -> bool:
    """True when a child of ``parent_id`` may be read as far as this parent is concerned."""
    if parent_id not in listing:
        return True  # gone from the stream (trimmed): nothing left to read
    lease = leases.get(parent_id)
    if lease is not None:
        return lease.finished
    # No lease although the shard exists: done only if a child already started (the KCL
    # deletes a finished parent's lease once its children are under way).
    return has_started_child(parent_id, listing, leases)


def has_started_child(
    shard_id: str, listing: Mapping[str, Shard], leases: Mapping[str, Lease]
) -> bool:
    """Some lease of a child of ``shard_id`` (per the lease or the listing) has a position."""
    return any(
        other.started and shard_id in _parents(other.shard_id, listing, leases)
        for other in leases.values()
    )


def _parents(shard_id: str, listing: Mapping[str, Shard], leases: Mapping[str, Lease]) -> set[str]:
    parents: set[str] = set()
    lease = leases.get(shard_id)
    if lease is not None:
        parents.update(lease.parents)
    shard = listing.get(shard_id)
    if shard is not None:
        parents.update(shard.parent_ids)
    return parents


def may_process(shard_id: str, listing: Mapping[str, Shard], leases: Mapping[str, Lease]) -> bool:
    """Every parent of ``shard_id`` is done (see :func:`is_parent_done`)."""
    return all(is_parent_done(p, listing, leases) for p in _parents(shard_id, listing, leases))


def undone_parents(
    shard_id: str, listing: Mapping[str, Shard], leases: Mapping[str, Lease]
) -> list[str]:
    """The parents of ``shard_id`` that are not done yet."""
    return sorted(
        p for p in _parents(shard_id, listing, leases) if not is_parent_done(p, listing, leases)
    )


def initial_checkpoint(start_at: str | datetime, shard: Shard) -> str:
    """The checkpoint of a new lease for a shard with no parent in the stream.

    The consumer's ``start_at`` as the KCL writes it; under LATEST a shard that is
    already closed has nothing to read, so its lease starts at SHARD_END.
    """
    if isinstance(start_at, datetime):
        return AT_TIMESTAMP
    if start_at == LATEST:
        return LATEST if shard.is_open else SHARD_END_MARK
    return TRIM_HORIZON


def _children_index(
    listing: Mapping[str, Shard], leases: Mapping[str, Lease]
) -> dict[str, list[str]]:
    """Parent id -> ids of its children, per the listing and the leases."""
    index: dict[str, list[str]] = {}
    for shard in listing.values():
        for parent in shard.parent_ids:
            index.setdefault(parent, []).append(shard.shard_id)
    for lease in leases.values():
        for parent in lease.parents:
            index.setdefault(parent, []).append(lease.shard_id)
    return index


def _parents_first(listing: Mapping[str, Shard]) -> list[str]:
    """The listed shard ids, each after its listed parents (Kahn's order, by id)."""
    waiting = {
        shard_id: sum(1 for p in shard.parent_ids if p in listing)
        for shard_id, shard in listing.items()
    }
    children: dict[str, list[str]] = {}
    for shard_id, shard in listing.items():
        for parent in shard.parent_ids:
            if parent in listing:
                children.setdefault(parent, []).append(shard_id)
    ready = sorted((s for s, n in waiting.items() if n == 0), reverse=True)
    order: list[str] = []
    while ready:
        shard_id = ready.pop()
        order.append(shard_id)
        for child in sorted(children.get(shard_id, ()), reverse=True):
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return order


def plan_new_leases(
    listing: Mapping[str, Shard],
    leases: Mapping[str, Lease],
    start_at: str | datetime,
    scope: str,
) -> list[Lease]:
    """The leases to create: for each listed shard without a lease whose parents are all
    done (counting the leases planned here, so a chain of finished shards resolves at
    once). A child continues its parents' lineage from TRIM_HORIZON, as the KCL's
    HierarchicalShardSyncer creates descendants of leased shards. Linear in shards: one
    pass in parents-first order over an index of children."""
    if all(shard_id in leases for shard_id in listing):
        return []
    view = dict(leases)
    children = _children_index(listing, leases)

    def started_child(shard_id: str) -> bool:
        return any(c in view and view[c].started for c in children.get(shard_id, ()))

    def parent_done(parent_id: str) -> bool:
        if parent_id not in listing:
            return True
        lease = view.get(parent_id)
        return lease.finished if lease is not None else started_child(parent_id)

    planned: list[Lease] = []
    for shard_id in _parents_first(listing):
        if shard_id in view or started_child(shard_id):
            continue  # exists, or finished long ago and cleaned up
        shard = listing[shard_id]
        if not all(parent_done(p) for p in shard.parent_ids):
            continue
        lineage = any(p in listing for p in shard.parent_ids)
        checkpoint = TRIM_HORIZON if lineage else initial_checkpoint(start_at, shard)
        lease = Lease.new(shard, checkpoint, scope)
        view[shard_id] = lease
        planned.append(lease)
    return planned


@dataclass(frozen=True, slots=True)
class TakePlan:
    """What one balancing cycle does."""

    target: int
    take: tuple[Lease, ...] = ()
    """Unowned or expired leases (and leases the table says are ours) to take."""
    steal: Lease | None = None
    """At most one lease of the most loaded worker."""
    shed: tuple[str, ...] = ()
    """Held leases to release: this worker holds more than target + 1."""
    workers: int = 1


def counts_toward_load(lease: Lease, expired: Callable[[Lease], bool]) -> bool:
    """Whether ``lease`` counts in the balancing target and in its owner's load.

    As DynamoDBLeaseTaker counts every lease, SHARD_END ones included, with its owner;
    shardflow releases a lease once it is at SHARD_END, and such a lease (or one whose
    owner stopped renewing it) is never taken again, so a finished lease counts only
    while an owner renews it (a KCL worker holding it until its clean-up deletes it).
    """
    return not lease.finished or (lease.owner is not None and not expired(lease))


def plan_takes(
    leases: Collection[Lease],
    me: str,
    held: Collection[str],
    expired: Callable[[Lease], bool],
    rng: random.Random,
    *,
    only: Collection[str] | None = None,
    greedy: bool = False,
) -> TakePlan:
    """Balance as DynamoDBLeaseTaker does: ``leases`` are every lease of the table as
    last seen, ``held`` the shard ids this worker holds, ``expired(lease)`` the expiry
    clock's verdict. ``only``: take free or expired leases among these ids only, and
    neither steal nor shed (the expiry watch between full scans); ``greedy`` takes every
    free or expired lease among them, whatever the target (a watcher takes over a dead
    worker's leases at once; the excess is released at its next full scan).

    target = ceil(counted leases / workers), workers being the owners of unexpired
    counted leases plus this one. Free and expired leases are taken up to the target at
    once; otherwise one lease is stolen from the most loaded worker when it is above the
    target, or AT it while this worker needs more than one (chooseLeasesToSteal). Every
    stable state then has max - min <= 1: no worker is below target - 1 and none above
    target. A worker above the target releases what the workers below it lack (minus
    the free leases): they take those as free leases at their next scan, so one worker
    holding all, or a worker far below the target, gets balanced in a few cycles
    instead of one lease per worker per cycle; a worker at or below the target never
    releases, so released leases go only to workers below it (no ping-pong).
    """
    counted = [x for x in leases if counts_toward_load(x, expired)]
    if not counted:
        return TakePlan(target=0)
    loads: Counter[str] = Counter()
    mine = 0
    reclaim: list[Lease] = []
    free: list[Lease] = []
    for lease in counted:
        if lease.shard_id in held:
            mine += 1
        elif lease.owner == me:
            mine += 1
            if not lease.finished:
                reclaim.append(lease)
        elif lease.owner is None or expired(lease):
            if not lease.finished and (only is None or lease.shard_id in only):
                free.append(lease)
        else:
            loads[lease.owner] += 1
    workers = len(loads) + 1
    target = math.ceil(len(counted) / workers)
    needed = target - mine
    take = list(reclaim)
    if greedy:
        return TakePlan(target, tuple(take + free), workers=workers)
    if needed > 0 and free:
        take.extend(rng.sample(free, min(needed, len(free))))
        return TakePlan(target, tuple(take), workers=workers)
    if only is not None:
        return TakePlan(target, tuple(take), workers=workers)
    steal = None
    if needed > 0 and loads:
        most = max(loads.values())
        if most > target or (most == target and needed > 1):
            victim = rng.choice(sorted(w for w, n in loads.items() if n == most))
            candidates = sorted(
                (
                    x.shard_id
                    for x in counted
                    if x.owner == victim and not x.finished and x.shard_id not in held
                ),
            )
            if candidates:
                chosen = rng.choice(candidates)
                steal = next(x for x in counted if x.shard_id == chosen)
    shed: tuple[str, ...] = ()
    if mine > target:
        lacking = sum(max(0, target - n) for n in loads.values()) - len(free)
        excess = min(mine - target, lacking)
        if excess > 0:
            mine_open = sorted(
                x.shard_id for x in counted if x.shard_id in held and not x.finished
            )
            shed = tuple(rng.sample(mine_open, min(len(mine_open), excess)))
    return TakePlan(target, tuple(take), steal, shed, workers)
