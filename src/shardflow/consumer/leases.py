"""DynamoDBLeases: N consumer processes share a stream's shards through a KCL lease table.

Used as a :class:`~shardflow.Consumer`'s checkpointer. Each worker holds leases (one per
shard) in a DynamoDB table laid out as the Java KCL's (see :mod:`.lease_table`), so a
shard is read by one worker at a time, positions survive crashes, and shardflow and KCL
workers can share a table (the KCL's single-stream layout).

How it works, per binding (one consumer = one worker):

- **Renewal**: every ``failover_time / 3`` the worker increments ``leaseCounter`` of each
  lease it holds, conditional on owner and counter. A failed condition means the lease
  was taken: the shard is revoked at once. If no renewal succeeded for ``failover_time``
  (measured from when that renewal was sent), the shard is stopped as well, since others
  may consider the lease expired; it restarts if a later renewal still succeeds.
- **Taking**: every ``failover_time / 3`` the worker scans the table. A lease is expired
  when its counter has not changed for ``failover_time`` on this worker's monotonic
  clock; unowned leases are free at once. The target is ceil(leases / workers), workers
  being the owners of unexpired leases plus this one. The worker takes free leases up to
  the target, else steals at most one lease from the most loaded worker when it is below
  the target and that worker above it (see :mod:`.lease_policy`).
- **Checkpoints** are conditional on owner and counter: a worker that lost a lease gets
  :class:`errors.LeaseLost` and the shard is revoked (nothing more is delivered from it).
- **Graceful close**: the consumer writes its pending checkpoints, then the binding ends
  and releases every lease (``leaseOwner`` removed, as the KCL's eviction does), so other
  workers take them at their next scan instead of waiting for expiry.
- **Resharding**: a listed shard gets a lease once all its parents are done; a parent
  reaching SHARD_END writes its ``childShardIds``, creates its children's leases and is
  released. A shard is granted only when each parent's lease is at SHARD_END.

Lease keys: by default the table is dedicated to one application reading one stream,
and the lease key is the shard id (what the KCL writes); binding another application or
stream to a table holding leases of a different one raises
:class:`errors.LeaseTableConflict`. With ``shared_table=True`` lease keys are
``"{app_name}:{stream_name}:{shardId}"`` and any number of applications and streams share
the table (such keys are shardflow's own; the KCL does not read them).

Under ``start_at="LATEST"``, a shard already closed when its lineage first gets a lease
is recorded at SHARD_END without being read, and its children are read from their start.
"""

from __future__ import annotations

import logging
import math
import os
import random
import re
import socket
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.abc

from .. import _aws, errors
from ..models import Shard
from .checkpoint import SHARD_END, AssignmentListener, Checkpoint, CheckpointSession, ConsumerScope
from .lease_policy import ExpiryClock, may_process, plan_new_leases, plan_takes, undone_parents
from .lease_table import KeyScheme, Lease, LeaseTable
from .shard_reader import backoff_delay

__all__ = ["DynamoDBLeases"]

log = logging.getLogger("shardflow.consumer.leases")

MIN_FAILOVER_TIME = 0.5
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{3,255}$")


@dataclass(slots=True, eq=False)
class _Held:
    """A lease this worker holds: the counter it last wrote and until when it is sure."""

    shard_id: str
    counter: int
    valid_until: float
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    suspended: bool = False  # not renewed within failover_time: shard stopped for now
    renewing: bool = False


def _position(lease: Lease) -> Checkpoint | None:
    if lease.finished:
        return SHARD_END
    if lease.checkpoint.isdigit():
        return Checkpoint(lease.checkpoint, lease.sub_sequence_number)
    return None  # TRIM_HORIZON / LATEST / AT_TIMESTAMP: the consumer's start_at applies


class _LeaseSession:
    """One worker's leases for one (application, stream): the CheckpointSession."""

    def __init__(
        self,
        table: LeaseTable,
        scope: ConsumerScope,
        listener: AssignmentListener,
        failover_time: float,
    ) -> None:
        self._table = table
        self._scope = scope
        self._listener = listener
        self._me = table.owner
        self._failover = failover_time
        self._interval = failover_time / 3
        self._clock = ExpiryClock(failover_time)
        self._rng = random.Random()
        self._listing: dict[str, Shard] = {}
        self._leases: dict[str, Lease] = {}  # the table as last seen or written
        self._held: dict[str, _Held] = {}
        self._finished_here: set[str] = set()
        self._last_granted: frozenset[str] = frozenset()
        self._listed = anyio.Event()
        self._wake = anyio.Event()
        self._cycle_lock = anyio.Lock()
        self._relisted_at = -math.inf

    # --- CheckpointSession ------------------------------------------------------------

    async def assign(self, shards: Sequence[Shard]) -> Collection[str]:
        """Create missing leases; the held leases whose parents are all done.

        The first call also scans and takes this worker's share. Raises non-retriable
        errors.AWSError subclasses (a transient failure leaves the work to the next cycle).
        """
        self._listing = {shard.shard_id: shard for shard in shards}
        try:
            async with self._cycle_lock:
                if not self._listed.is_set():
                    await self._cycle(notify=False)
                else:
                    await self._create_missing()
        except errors.AWSError as exc:
            if not exc.retriable:
                raise
            log.warning("lease table %s: %s (retried at the next cycle)", self._table.table, exc)
        finally:
            self._listed.set()
        granted = await self._granted()
        self._last_granted = granted
        return granted | (self._finished_here & self._listing.keys())

    async def get(self, shard_id: str) -> Checkpoint | None:
        """The position stored in ``shard_id``'s lease (consistent read).

        A KCL sentinel (TRIM_HORIZON, LATEST, AT_TIMESTAMP) is None: the consumer's
        start_at applies. Raises errors.LeaseLost when this worker holds the lease and the
        table says someone else owns it, and errors.AWSError subclasses.
        """
        lease = await self._table.get(shard_id)
        if lease is None:
            self._leases.pop(shard_id, None)
            started_child = any(
                shard_id in other.parents and other.started for other in self._leases.values()
            )
            return SHARD_END if started_child else None
        self._leases[shard_id] = lease
        held = self._held.get(shard_id)
        if held is not None and lease.owner != self._me:
            raise self._lose(held, f"lease for {shard_id} is owned by {lease.owner}")
        return _position(lease)

    async def save(self, shard_id: str, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` in the lease, conditional on owner and counter.

        Transient failures are retried while the lease is still certainly held. Raises
        errors.LeaseLost (and revokes the shard) when this worker does not own the lease,
        and non-retriable errors.AWSError subclasses. At SHARD_END the children's leases
        are created and the lease is released. Cancellation leaves the stored position
        as it was or moved to ``checkpoint``, never otherwise.
        """
        held = self._held.get(shard_id)
        if held is None or held.suspended:
            self._listener.revoke(shard_id)
            raise errors.LeaseLost(shard_id)
        children: frozenset[str] = frozenset()
        if checkpoint.is_shard_end:
            children = frozenset(
                s.shard_id for s in self._listing.values() if shard_id in s.parent_ids
            )
        async with held.lock:
            await self._write_checkpoint(held, checkpoint, children)
        if checkpoint.is_shard_end:
            await self._finish(held)

    # --- conditional writes -------------------------------------------------------------

    def _lose(self, held: _Held, why: str) -> errors.LeaseLost:
        """Forget ``held`` and revoke its shard; the error to raise."""
        if self._held.get(held.shard_id) is held:
            del self._held[held.shard_id]
            log.warning("%s lost %s: %s", self._me, held.shard_id, why)
        self._listener.revoke(held.shard_id)
        return errors.LeaseLost(held.shard_id, why)

    async def _write_checkpoint(
        self, held: _Held, checkpoint: Checkpoint, children: frozenset[str]
    ) -> None:
        shard_id = held.shard_id
        seq, sub = checkpoint.sequence_number, checkpoint.sub_sequence_number or 0
        attempt = 0
        while True:
            if self._held.get(shard_id) is not held or held.suspended:
                raise self._lose(held, "lease given up while checkpointing")
            sent = anyio.current_time()
            if sent > held.valid_until:
                raise self._lose(held, f"not renewed within {self._failover}s")
            try:
                await self._table.checkpoint(shard_id, held.counter, seq, sub, children)
            except errors.ConditionFailed:
                current = await self._reread(shard_id)
                if current is None or current.owner != self._me:
                    raise self._lose(
                        held, f"owned by {current.owner if current else 'nobody'}"
                    ) from None
                held.counter = current.counter  # an earlier write of ours did land
                if (current.checkpoint, current.sub_sequence_number) == (seq, sub):
                    self._leases[shard_id] = current
                    return
                continue
            except errors.AWSError as exc:
                if not exc.retriable:
                    raise
                log.debug("checkpoint of %s failed (%s); retrying", shard_id, exc)
                await anyio.sleep(backoff_delay(attempt))
                attempt += 1
                continue
            held.counter += 1
            held.valid_until = sent + self._failover
            previous = self._leases.get(shard_id) or Lease(shard_id)
            self._leases[shard_id] = replace(
                previous,
                owner=self._me,
                counter=held.counter,
                checkpoint=seq,
                sub_sequence_number=sub,
                owner_switches=0,
                children=children or previous.children,
            )
            return

    async def _reread(self, shard_id: str) -> Lease | None:
        """The lease as stored now; retried until it can be read (bounded by the caller's
        lease validity through the checkpoint loop)."""
        attempt = 0
        while True:
            try:
                return await self._table.get(shard_id)
            except errors.AWSError as exc:
                if not exc.retriable:
                    raise
                await anyio.sleep(backoff_delay(attempt))
                attempt += 1

    async def _finish(self, held: _Held) -> None:
        """After SHARD_END: children's leases, then release the finished lease."""
        self._finished_here.add(held.shard_id)
        await self._release(held)
        try:
            async with self._cycle_lock:
                await self._create_missing()
        except errors.AWSError as exc:
            log.warning("child leases of %s not created yet (%s)", held.shard_id, exc)
        self._wake.set()

    async def _release(self, held: _Held) -> None:
        """Give a lease up (conditional on owner and counter); never raises AWS errors."""
        async with held.lock:
            if self._held.get(held.shard_id) is not held:
                return
            for _ in range(3):
                try:
                    try:
                        await self._table.release(held.shard_id, held.counter)
                    except errors.ConditionFailed:
                        current = await self._table.get(held.shard_id)
                        if current is not None and current.owner == self._me:
                            held.counter = current.counter  # an earlier write did land
                            continue
                except errors.AWSError as exc:
                    log.warning("could not release %s (%s); it will expire", held.shard_id, exc)
                else:
                    log.info("%s released %s", self._me, held.shard_id)
                    lease = self._leases.get(held.shard_id)
                    if lease is not None:
                        self._leases[held.shard_id] = replace(
                            lease, owner=None, counter=held.counter + 1
                        )
                break
            self._held.pop(held.shard_id, None)

    async def release_all(self) -> None:
        """Release every held lease (graceful close)."""
        async with anyio.create_task_group() as tg:
            for held in list(self._held.values()):
                tg.start_soon(self._release, held)

    async def _renew(self, held: _Held) -> None:
        try:
            async with held.lock:
                if self._held.get(held.shard_id) is not held:
                    return
                sent = anyio.current_time()
                try:
                    await self._table.renew(held.shard_id, held.counter)
                except errors.ConditionFailed:
                    try:
                        current = await self._table.get(held.shard_id)
                    except errors.AWSError:
                        return  # unknown: the next renewal tells
                    if current is None or current.owner != self._me:
                        self._lose(held, f"owned by {current.owner if current else 'nobody'}")
                    else:
                        held.counter = current.counter  # an earlier renewal did land
                    return
                except errors.AWSError as exc:
                    log.debug("renewal of %s failed (%s)", held.shard_id, exc)
                    return
                held.counter += 1
                held.valid_until = sent + self._failover
                if held.suspended:
                    held.suspended = False
                    log.info("%s renewed %s again: resuming it", self._me, held.shard_id)
                    self._listener.reassign()
        finally:
            held.renewing = False

    async def _take(self, lease: Lease) -> bool:
        sent = anyio.current_time()
        try:
            taken = await self._table.take(lease)
        except errors.ConditionFailed:
            return False  # renewed or taken meanwhile
        except errors.AWSError as exc:
            log.info("could not take %s (%s)", lease.shard_id, exc)
            return False
        self._leases[taken.shard_id] = taken
        self._held[taken.shard_id] = _Held(taken.shard_id, taken.counter, sent + self._failover)
        log.info("%s took %s from %s", self._me, taken.shard_id, lease.owner or "nobody")
        return True

    async def _create_missing(self) -> None:
        planned = plan_new_leases(
            self._listing, self._leases, self._scope.start_at, self._table.scope
        )
        for lease in planned:
            if await self._table.create(lease):
                log.info("created lease %s (%s)", lease.shard_id, lease.checkpoint)
                self._leases[lease.shard_id] = lease
            else:
                existing = await self._table.get(lease.shard_id)
                if existing is not None:
                    self._leases[lease.shard_id] = existing
        if planned:
            self._wake.set()

    # --- assignment ---------------------------------------------------------------------

    def _grantable(self) -> frozenset[str]:
        return frozenset(
            shard_id
            for shard_id, held in self._held.items()
            if not held.suspended
            and shard_id in self._listing
            and may_process(shard_id, self._listing, self._leases)
        )

    async def _granted(self) -> frozenset[str]:
        """Like _grantable, re-reading the parents the snapshot says are not done."""
        for shard_id, held in list(self._held.items()):
            if held.suspended or shard_id not in self._listing:
                continue
            for parent in undone_parents(shard_id, self._listing, self._leases):
                try:
                    lease = await self._table.get(parent)
                except errors.AWSError:
                    break
                if lease is None:
                    self._leases.pop(parent, None)
                else:
                    self._leases[parent] = lease
        return self._grantable()

    # --- background loops ---------------------------------------------------------------

    async def start(self) -> None:
        """First scan; raises errors.LeaseTableConflict for another consumer's table."""
        leases, foreign = await self._table.scan()
        if foreign:
            raise errors.LeaseTableConflict(
                f"table {self._table.table!r} holds leases of another application or stream "
                f"(e.g. {foreign[0]!r}); use one table per application and stream, or "
                f"DynamoDBLeases(..., shared_table=True)"
            )
        self._leases = {lease.shard_id: lease for lease in leases}
        self._clock.observe(leases, anyio.current_time())

    async def _cycle(self, *, notify: bool = True) -> None:
        """Scan, create missing leases, release finished ones, take and steal."""
        leases, _ = await self._table.scan()
        now = anyio.current_time()
        self._leases = {lease.shard_id: lease for lease in leases}
        self._clock.observe(leases, now)
        for held in list(self._held.values()):
            # Taken by someone else since we last wrote (a write of ours in flight, or
            # a release after SHARD_END, may be what the scan saw: left to the writer).
            lease = self._leases.get(held.shard_id)
            if (
                lease is not None
                and lease.owner != self._me
                and not held.lock.locked()
                and held.shard_id not in self._finished_here
            ):
                self._lose(held, f"owned by {lease.owner or 'nobody'}")
        await self._create_missing()
        for held in list(self._held.values()):
            lease = self._leases.get(held.shard_id)
            if lease is not None and lease.finished:
                await self._release(held)
        active = [lease for lease in self._leases.values() if not lease.finished]
        plan = plan_takes(
            active, self._me, self._held.keys(), lambda x: self._clock.expired(x, now), self._rng
        )
        took = False
        for lease in (*plan.take, *(() if plan.steal is None else (plan.steal,))):
            took = await self._take(lease) or took
        if not notify:
            return
        stale_listing = any(
            lease.finished
            and lease.shard_id in self._listing
            and not any(lease.shard_id in s.parent_ids for s in self._listing.values())
            for lease in self._leases.values()
        )
        if stale_listing and now - self._relisted_at > self._failover:
            self._relisted_at = now  # a parent ended elsewhere: list its children
            took = True
        if took or self._grantable() != self._last_granted:
            self._listener.reassign()

    async def take_loop(self) -> None:
        """Every failover_time / 3 (or when woken): a balancing cycle. Never raises AWS
        errors (they are logged and the next cycle tries again)."""
        await self._listed.wait()
        while True:
            with anyio.move_on_after(self._interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                async with self._cycle_lock:
                    await self._cycle()
            except errors.AWSError as exc:
                log.warning("lease cycle on %s failed: %s", self._table.table, exc)

    async def renew_loop(self, task_group: anyio.abc.TaskGroup) -> None:
        """Every failover_time / 3: stop leases not renewed in time, renew each lease."""
        while True:
            await anyio.sleep(self._interval)
            now = anyio.current_time()
            for held in list(self._held.values()):
                if not held.suspended and now > held.valid_until:
                    held.suspended = True
                    log.warning(
                        "%s: %s not renewed within %ss; stopping it", self._me, held.shard_id,
                        self._failover,
                    )
                    self._listener.revoke(held.shard_id)
                if not held.renewing:
                    held.renewing = True
                    task_group.start_soon(self._renew, held)


class DynamoDBLeases:
    """A consumer group's checkpointer: KCL-compatible leases in a DynamoDB table.

    ``table`` is created on first use when missing (on-demand billing, hash key
    ``leaseKey``) or used as it is. ``worker_id`` names this worker in ``leaseOwner``
    (default: host name, process id and a random suffix); it must be unique among live
    workers. ``failover_time`` is how long a lease may go without renewal before others
    take it; renewals and balancing run every third of it. ``shared_table=True`` lets
    several applications and streams share the table (keys ``app:stream:shardId``).
    DynamoDB is reached through ``endpoint_url`` / ``region_name`` / ``credentials``, or
    an injected aiobotocore ``client`` (left open).

    One instance is one worker: give each consumer process its own. An instance may be
    bound by consumers of different applications or streams at once (with
    ``shared_table=True``), not twice to the same one. See the module documentation.
    """

    def __init__(
        self,
        table: str,
        *,
        worker_id: str | None = None,
        failover_time: float = 10.0,
        shared_table: bool = False,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        credentials: _aws.CredentialSource | None = None,
    ) -> None:
        if not isinstance(table, str) or not _TABLE_NAME.match(table):
            raise ValueError(
                f"table must be a DynamoDB table name (3-255 of A-Z a-z 0-9 _ . -), got {table!r}"
            )
        if worker_id is None:
            worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if not isinstance(worker_id, str) or not worker_id.strip() or len(worker_id) > 1024:
            raise ValueError(f"worker_id must be a non-empty string, got {worker_id!r}")
        if isinstance(failover_time, bool) or not isinstance(failover_time, int | float):
            raise TypeError(f"failover_time must be a number of seconds, got {failover_time!r}")
        if not math.isfinite(failover_time) or failover_time < MIN_FAILOVER_TIME:
            raise ValueError(
                f"failover_time must be >= {MIN_FAILOVER_TIME} seconds, got {failover_time!r}"
            )
        if not isinstance(shared_table, bool):
            raise TypeError(f"shared_table must be a bool, got {shared_table!r}")
        if credentials is not None and not isinstance(credentials, _aws.CredentialSource):
            raise TypeError("credentials must provide botocore_credentials()")
        self._table = table
        self._worker_id = worker_id
        self._failover = float(failover_time)
        self._shared = shared_table
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._client = client
        self._credentials = credentials
        self._bound: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return (
            f"DynamoDBLeases({self._table!r}, worker_id={self._worker_id!r}, "
            f"failover_time={self._failover})"
        )

    @property
    def table(self) -> str:
        return self._table

    @property
    def worker_id(self) -> str:
        return self._worker_id

    @property
    def failover_time(self) -> float:
        return self._failover

    @property
    def shared_table(self) -> bool:
        return self._shared

    def bind(
        self, scope: ConsumerScope, listener: AssignmentListener
    ) -> AbstractAsyncContextManager[CheckpointSession]:
        """Join the group for ``scope``'s application and stream (see the module docs).

        Entering creates the table if needed and scans it; it raises
        errors.LeaseTableConflict, errors.AccessDenied and other errors.AWSError
        subclasses, and RuntimeError when this instance is already bound to that
        application and stream. Leaving releases the held leases (shielded, within
        failover_time).
        """
        return self._binding(scope, listener)

    @asynccontextmanager
    async def _binding(
        self, scope: ConsumerScope, listener: AssignmentListener
    ) -> AsyncIterator[CheckpointSession]:
        name = (scope.app_name, scope.stream_name)
        if name in self._bound:
            raise RuntimeError(
                f"{self!r} is already bound to application {name[0]!r} on stream {name[1]!r}; "
                "each worker needs its own DynamoDBLeases"
            )
        self._bound.add(name)
        stack = AsyncExitStack()
        try:
            client = await _aws.open_client(
                stack,
                "dynamodb",
                endpoint_url=self._endpoint_url,
                region_name=self._region_name,
                client=self._client,
                credentials=self._credentials,
                connect_timeout=min(5.0, self._failover),
                read_timeout=max(5.0, self._failover),
            )
            table = LeaseTable(
                client,
                self._table,
                KeyScheme.for_scope(scope.app_name, scope.stream_name, shared=self._shared),
                scope=f"{scope.app_name}:{scope.stream_name}",
                owner=self._worker_id,
            )
            await table.ensure()
            session = _LeaseSession(table, scope, listener, self._failover)
            await session.start()
            async with anyio.create_task_group() as tg:
                tg.start_soon(session.renew_loop, tg, name="shardflow lease renewal")
                tg.start_soon(session.take_loop, name="shardflow lease balancing")
                try:
                    yield session
                finally:
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True), anyio.move_on_after(self._failover):
                        await session.release_all()
        finally:
            self._bound.discard(name)
            with anyio.CancelScope(shield=True):
                await stack.aclose()
