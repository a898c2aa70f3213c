"""The seam between the lease protocol and its table: :class:`LeaseStore`.

:class:`~.lease_session.LeaseSession` (renewal, balancing, checkpoints) talks to its
table only through this protocol, so the same code runs against DynamoDB
(:class:`~.lease_table.LeaseTable`, the KCL's item layout) and against
:class:`MemoryLeaseTable`, an in-memory table with the same conditional writes, a
configurable latency and counters of what DynamoDB would bill. The in-memory table is
for benchmarks (``python -m benchmarks.leases``) and unit tests; it is private API.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Protocol

import anyio

from .. import errors
from .lease_table import SHARD_END_MARK, Lease

__all__ = ["LeaseStore", "MemoryLeaseStore", "MemoryLeaseTable", "TableStats"]

Segment = tuple[int, int]
"""A parallel-scan segment: (segment, total_segments), as DynamoDB's Scan takes them."""


class LeaseStore(Protocol):
    """One worker's conditional reads and writes on the lease items of one scope.

    Every write by a holder is conditional on ``owner`` and the lease's counter and
    raises errors.ConditionFailed when the condition does not hold; other failures are
    errors.AWSError subclasses.
    """

    @property
    def table(self) -> str:
        """The table's name (for messages)."""
        ...

    @property
    def scope(self) -> str:
        """``app:stream`` of the consumer."""
        ...

    @property
    def owner(self) -> str:
        """This worker's id (``leaseOwner``)."""
        ...

    async def ensure(self) -> None:
        """Create the table when missing; wait until usable."""

    async def scan(self, segment: Segment | None = None) -> tuple[list[Lease], list[str]]:
        """The leases of this scope (one segment of the table, or all) and the keys of
        foreign leases (another application's or stream's)."""
        ...

    async def get(self, shard_id: str) -> Lease | None:
        """The lease of ``shard_id`` (consistent read), or None."""
        ...

    async def create(self, lease: Lease) -> bool:
        """Put ``lease`` unless it exists; False when it does."""
        ...

    async def take(self, lease: Lease) -> Lease:
        """Become the owner of ``lease`` as last seen; the lease as written."""
        ...

    async def renew(self, shard_id: str, counter: int) -> None:
        """Counter + 1 if this worker owns the lease at ``counter``."""

    async def checkpoint(
        self,
        shard_id: str,
        counter: int,
        sequence_number: str,
        sub_sequence_number: int,
        children: frozenset[str] = frozenset(),
    ) -> None:
        """Store a position if this worker owns the lease at ``counter``."""

    async def set_children(self, shard_id: str, children: frozenset[str]) -> None:
        """Record a finished lease's children."""

    async def release(self, shard_id: str, counter: int) -> None:
        """Give the lease up if this worker owns it at ``counter``."""


# --- in memory ------------------------------------------------------------------------------

ITEM_BYTES = 330
"""Size of a lease item as the KCL writes it (names, a 56-digit sequence number, hash
keys of up to 39 digits): what a scan is billed for per item."""


@dataclass(slots=True)
class TableStats:
    """What the table served, in DynamoDB's billing units (on-demand, consistent reads:
    one read unit per 4 KB read, one write unit per write of an item under 1 KB)."""

    read_units: float = 0.0
    write_units: float = 0.0
    scans: int = 0
    items_scanned: int = 0
    gets: int = 0
    writes: int = 0
    failed_writes: int = 0
    by_operation: dict[str, int] = field(default_factory=dict)
    failed_by_operation: dict[str, int] = field(default_factory=dict)

    def count(self, operation: str) -> None:
        self.by_operation[operation] = self.by_operation.get(operation, 0) + 1

    def fail(self, operation: str) -> None:
        self.failed_writes += 1
        self.failed_by_operation[operation] = self.failed_by_operation.get(operation, 0) + 1


class MemoryLeaseTable:
    """A lease table in memory, shared by the workers of a simulation (one event loop).

    Each operation waits ``latency`` seconds (on the event loop's clock) before it takes
    effect, as a DynamoDB request would; ``stats`` counts what DynamoDB would bill.
    """

    def __init__(self, name: str = "leases", *, latency: float = 0.0) -> None:
        self.name = name
        self.latency = latency
        self.items: dict[str, Lease] = {}
        self.stats = TableStats()

    def store(self, owner: str, scope: str = "app:stream") -> MemoryLeaseStore:
        """The view of one worker."""
        return MemoryLeaseStore(self, owner, scope)

    async def _wait(self) -> None:
        if self.latency > 0:
            await anyio.sleep(self.latency)

    def _write(self, operation: str) -> None:
        self.stats.count(operation)
        self.stats.writes += 1
        self.stats.write_units += 1

    def _failed(self, operation: str, shard_id: str) -> errors.ConditionFailed:
        self.stats.fail(operation)
        return errors.ConditionFailed(
            "ConditionalCheckFailedException", f"lease {shard_id} changed", operation
        )


def segment_of(key: str, total: int) -> int:
    """The parallel-scan segment of ``key`` among ``total`` (a hash of the key)."""
    return zlib.crc32(key.encode()) % total


class MemoryLeaseStore:
    """One worker's :class:`LeaseStore` on a :class:`MemoryLeaseTable`."""

    def __init__(self, table: MemoryLeaseTable, owner: str, scope: str) -> None:
        self._t = table
        self._owner = owner
        self._scope = scope

    @property
    def table(self) -> str:
        return self._t.name

    @property
    def scope(self) -> str:
        return self._scope

    @property
    def owner(self) -> str:
        return self._owner

    async def ensure(self) -> None:
        await self._t._wait()

    async def scan(self, segment: Segment | None = None) -> tuple[list[Lease], list[str]]:
        t = self._t
        await t._wait()
        if segment is None:
            leases = list(t.items.values())
        else:
            index, total = segment
            leases = [x for k, x in t.items.items() if segment_of(k, total) == index]
        t.stats.count("scan")
        t.stats.scans += 1
        t.stats.items_scanned += len(leases)
        t.stats.read_units += max(1, -(-len(leases) * ITEM_BYTES // 4096))
        return leases, []

    async def get(self, shard_id: str) -> Lease | None:
        t = self._t
        await t._wait()
        t.stats.count("get")
        t.stats.gets += 1
        t.stats.read_units += 1
        return t.items.get(shard_id)

    async def create(self, lease: Lease) -> bool:
        t = self._t
        await t._wait()
        t._write("create")
        if lease.shard_id in t.items:
            t.stats.fail("create")
            return False
        t.items[lease.shard_id] = lease
        return True

    def _held(self, operation: str, shard_id: str, counter: int) -> Lease:
        t = self._t
        t._write(operation)
        lease = t.items.get(shard_id)
        if lease is None or lease.owner != self._owner or lease.counter != counter:
            raise t._failed(operation, shard_id)
        return lease

    async def take(self, lease: Lease) -> Lease:
        t = self._t
        await t._wait()
        t._write("take")
        current = t.items.get(lease.shard_id)
        if current is None or current.counter != lease.counter or current.owner != lease.owner:
            raise t._failed("take", lease.shard_id)
        switched = (lease.owner is not None and lease.owner != self._owner) or (
            lease.checkpoint_owner is not None and lease.checkpoint_owner == self._owner
        )
        taken = replace(
            current,
            owner=self._owner,
            counter=current.counter + 1,
            owner_switches=current.owner_switches + int(switched),
            checkpoint_owner=None,
        )
        t.items[lease.shard_id] = taken
        return taken

    async def renew(self, shard_id: str, counter: int) -> None:
        await self._t._wait()
        lease = self._held("renew", shard_id, counter)
        self._t.items[shard_id] = replace(lease, counter=counter + 1)

    async def checkpoint(
        self,
        shard_id: str,
        counter: int,
        sequence_number: str,
        sub_sequence_number: int,
        children: frozenset[str] = frozenset(),
    ) -> None:
        await self._t._wait()
        lease = self._held("checkpoint", shard_id, counter)
        self._t.items[shard_id] = replace(
            lease,
            counter=counter + 1,
            checkpoint=sequence_number,
            sub_sequence_number=sub_sequence_number,
            owner_switches=0,
            children=children or lease.children,
        )

    async def set_children(self, shard_id: str, children: frozenset[str]) -> None:
        t = self._t
        await t._wait()
        t._write("set_children")
        lease = t.items.get(shard_id)
        if lease is None or lease.checkpoint != SHARD_END_MARK:
            raise t._failed("set_children", shard_id)
        t.items[shard_id] = replace(lease, children=children)

    async def release(self, shard_id: str, counter: int) -> None:
        await self._t._wait()
        lease = self._held("release", shard_id, counter)
        self._t.items[shard_id] = replace(lease, owner=None, counter=counter + 1)
