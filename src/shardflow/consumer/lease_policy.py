"""The decisions of the lease protocol, without I/O: expiry, creation, taking, stealing.

- **Expiry** (:class:`ExpiryClock`): a lease is expired when its ``leaseCounter`` has not
  changed for ``failover_time`` seconds on this observer's monotonic clock (hosts' clocks
  are never compared). An unowned lease is free at once.
- **Creation** (:func:`plan_new_leases`): a shard gets a lease once all its parents are
  done; shards whose parents are gone from the stream are roots.
- **Parents first** (:func:`may_process`): a shard is read only when every parent's
  lease is at SHARD_END (or the parent is gone, or its lease was deleted after a child
  started, as the KCL's lease clean-up does).
- **Balance** (:func:`plan_takes`): target = ceil(leases / workers), workers being the
  owners of unexpired leases plus this worker; take expired or unowned leases first;
  otherwise steal at most one lease, from the most loaded worker, and only when this
  worker is below the target and that worker above it.
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

    __slots__ = ("_failover", "_seen")

    def __init__(self, failover_time: float) -> None:
        self._failover = failover_time
        self._seen: dict[str, tuple[int, float]] = {}

    def observe(self, leases: Iterable[Lease], now: float) -> None:
        """Record a full scan: a new or changed counter restarts that lease's clock."""
        seen: dict[str, tuple[int, float]] = {}
        for lease in leases:
            previous = self._seen.get(lease.shard_id)
            if previous is not None and previous[0] == lease.counter:
                seen[lease.shard_id] = previous
            else:
                seen[lease.shard_id] = (lease.counter, now)
        self._seen = seen

    def expired(self, lease: Lease, now: float) -> bool:
        """Unowned, or its counter unchanged for failover_time (False if never observed)."""
        if lease.owner is None:
            return True
        seen = self._seen.get(lease.shard_id)
        if seen is None or seen[0] != lease.counter:
            return False
        return now - seen[1] > self._failover


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


def plan_new_leases(
    listing: Mapping[str, Shard],
    leases: Mapping[str, Lease],
    start_at: str | datetime,
    scope: str,
) -> list[Lease]:
    """The leases to create: for each listed shard without a lease whose parents are all
    done (counting the leases planned here, so a chain of finished shards resolves at
    once). A child continues its parents' lineage from TRIM_HORIZON."""
    view = dict(leases)
    planned: list[Lease] = []
    changed = True
    while changed:
        changed = False
        for shard_id in sorted(listing):
            if shard_id in view:
                continue
            if has_started_child(shard_id, listing, view):
                continue  # finished long ago; its lease was cleaned up
            shard = listing[shard_id]
            if not all(is_parent_done(p, listing, view) for p in shard.parent_ids):
                continue
            lineage = any(p in listing for p in shard.parent_ids)
            checkpoint = TRIM_HORIZON if lineage else initial_checkpoint(start_at, shard)
            lease = Lease.new(shard, checkpoint, scope)
            view[shard_id] = lease
            planned.append(lease)
            changed = True
    return planned


@dataclass(frozen=True, slots=True)
class TakePlan:
    """What one balancing cycle does."""

    target: int
    take: tuple[Lease, ...] = ()
    """Unowned or expired leases (and leases the table says are ours) to take."""
    steal: Lease | None = None
    """At most one lease of the most loaded worker."""


def plan_takes(
    leases: Collection[Lease],
    me: str,
    held: Collection[str],
    expired: Callable[[Lease], bool],
    rng: random.Random,
) -> TakePlan:
    """Balance: ``leases`` are the unfinished leases; ``held`` the shard ids this worker
    holds; ``expired(lease)`` the expiry clock's verdict."""
    if not leases:
        return TakePlan(target=0)
    reclaim = [x for x in leases if x.owner == me and x.shard_id not in held]
    loads: Counter[str] = Counter(
        x.owner
        for x in leases
        if x.owner is not None and x.owner != me and x.shard_id not in held and not expired(x)
    )
    workers = len(loads) + 1
    target = math.ceil(len(leases) / workers)
    mine = sum(1 for x in leases if x.shard_id in held) + len(reclaim)
    needed = target - mine
    free = [
        x
        for x in leases
        if x.shard_id not in held and x.owner != me and (x.owner is None or expired(x))
    ]
    take = list(reclaim)
    if needed > 0 and free:
        take.extend(rng.sample(free, min(needed, len(free))))
        return TakePlan(target, tuple(take))
    steal = None
    if needed > 0 and loads:
        most = max(loads.values())
        if most > target:
            victim = rng.choice(sorted(w for w, n in loads.items() if n == most))
            steal = rng.choice(
                sorted(
                    (x for x in leases if x.owner == victim and x.shard_id not in held),
                    key=lambda x: x.shard_id,
                )
            )
    return TakePlan(target, tuple(take), steal)
