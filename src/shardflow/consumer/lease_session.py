"""One worker's leases for one application and stream: the CheckpointSession that
:class:`~shardflow.DynamoDBLeases` binds (renewal, balancing, conditional checkpoints,
release). See :mod:`shardflow.consumer.leases` for the protocol. It reaches its table
only through :class:`~.lease_store.LeaseStore`.

Three loops, each jittered so that workers do not line up:

- renewal every failover_time / 3 (DynamoDBLeaseRenewer), with as many conditional
  writes in flight as it takes to renew every held lease within half of that interval at
  the latency measured (8 to ``max_renewals``);
- a full scan every 2 x (failover_time + epsilon) (DynamoDBLeaseCoordinator's taker
  interval): shard sync, taking, stealing, releasing excess;
- an expiry watch every failover_time / 3 that scans two parallel-scan segments of the
  table (the whole table while the group has at most two workers), so every segment is
  watched by two workers and a dead worker's leases are free again within about
  1.5 x failover_time while the table is read in full only every 2 x failover_time.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

import anyio
import anyio.abc

from .. import errors
from .._core.logs import get_logger
from ..models import Shard
from .checkpoint import SHARD_END, AssignmentListener, Checkpoint, ConsumerScope
from .lease_policy import (
    ExpiryClock,
    TakePlan,
    has_started_child,
    may_process,
    plan_new_leases,
    plan_takes,
    undone_parents,
)
from .lease_store import LeaseStore, Segment
from .lease_table import AT_TIMESTAMP, LATEST, TRIM_HORIZON, Lease
from .shard_reader import backoff_delay

__all__ = ["LeaseSession"]

log = get_logger("shardflow.consumer.leases")

EPSILON = 0.025
"""The KCL's epsilonMillis: the taker runs every 2 x (failover_time + EPSILON)."""
RENEW_CONCURRENCY = 256
"""At most this many renewals in flight at once (the holders' DynamoDB client has as many
connections, plus some for checkpoints)."""
_MIN_RENEWALS = 8
WRITE_CONCURRENCY = 32
"""Creates, takes and releases in flight at once."""


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
        return Checkpoint(lease.checkpoint, max(lease.sub_sequence_number, 0))
    return None  # a sentinel: see LeaseSession.start_position


class LeaseSession:
    """One worker's leases for one (application, stream): the CheckpointSession."""

    def __init__(
        self,
        table: LeaseStore,
        scope: ConsumerScope,
        listener: AssignmentListener,
        failover_time: float,
        *,
        rng: random.Random | None = None,
        max_renewals: int = RENEW_CONCURRENCY,
        write_concurrency: int = WRITE_CONCURRENCY,
        scan_interval: float | None = None,
        watch: bool = True,
    ) -> None:
        self._table = table
        self._scope = scope
        self._listener = listener
        self._me = table.owner
        self._failover = failover_time
        self._interval = failover_time / 3
        # scan_interval / watch exist for the benchmark's comparison with the old cadence
        # (every worker scanning everything every failover_time / 3, no watch).
        self._scan_interval = (
            2 * (failover_time + EPSILON) if scan_interval is None else scan_interval
        )
        self._watch_enabled = watch
        self._clock = ExpiryClock(failover_time)
        self._rng = rng or random.Random()
        self._max_renewals = max_renewals
        self._renewals = anyio.CapacityLimiter(min(_MIN_RENEWALS, max_renewals))
        self._renew_latency = 0.05  # seconds per renewal, moving average
        self._writes = anyio.CapacityLimiter(write_concurrency)
        self._table_was_empty = False
        self._waited_to_create = False
        self._missing_since: dict[str, float] = {}
        self._table_grew = False
        self.cycles = 0
        self._listing: dict[str, Shard] = {}
        self._leases: dict[str, Lease] = {}  # the table as last seen or written
        self._held: dict[str, _Held] = {}
        self._finished_here: set[str] = set()
        self._last_granted: frozenset[str] = frozenset()
        self._listed = anyio.Event()
        self._wake = anyio.Event()
        self._cycle_lock = anyio.Lock()
        self._relisted_at = -math.inf
        self._workers = 1

    # --- CheckpointSession ------------------------------------------------------------

    async def assign(self, shards: Sequence[Shard]) -> Collection[str]:
        """Create missing leases; the held leases whose parents are all done.

        The first call also scans and takes this worker's share. Raises non-retriable
        errors.AWSError subclasses (a transient failure leaves the work to the next cycle).
        On cancellation, leases created or taken so far stay; the next cycle goes on.
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

        A KCL sentinel (TRIM_HORIZON, LATEST, AT_TIMESTAMP) is None: the reader starts
        where :meth:`start_position` says. Raises errors.LeaseLost when this worker holds
        the lease and the table says someone else owns it, and errors.AWSError
        subclasses. Cancellation changes nothing.
        """
        lease = await self._table.get(shard_id)
        if lease is None:
            self._leases.pop(shard_id, None)
            # Its children's leases say whether it was finished (and cleaned up, as the
            # KCL does) or not begun.
            started = has_started_child(shard_id, self._listing, self._leases)
            return SHARD_END if started else None
        self._leases[shard_id] = lease
        held = self._held.get(shard_id)
        if held is not None and lease.owner != self._me:
            raise self._lose(held, f"lease for {shard_id} is owned by {lease.owner}")
        return _position(lease)

    def start_position(self, shard_id: str) -> str | datetime | None:
        """Where a lease without a checkpoint starts: its sentinel, as the KCL's
        IteratorBuilder does (StartPositions). The lease as last read or taken is exact:
        only its owner writes a checkpoint.

        The KCL stores no timestamp in an AT_TIMESTAMP lease (it reads the worker's own
        InitialPositionInStreamExtended): such a lease starts at this consumer's
        ``start_at`` when that is a datetime, and otherwise at TRIM_HORIZON (nothing
        skipped), with a warning.
        """
        lease = self._leases.get(shard_id)
        if lease is None or lease.finished or lease.checkpoint.isdigit():
            return None
        if lease.checkpoint == LATEST:
            return LATEST
        if lease.checkpoint == AT_TIMESTAMP:
            start_at = self._scope.start_at
            if isinstance(start_at, datetime):
                return start_at
            log.warning(
                "lease %s is at AT_TIMESTAMP but this consumer's start_at is %r: the lease "
                "holds no timestamp, so %s is read from TRIM_HORIZON",
                shard_id, start_at, shard_id,
            )
        return TRIM_HORIZON

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

    def _suspend(self, held: _Held) -> None:
        """Not renewed within failover_time: stop the shard until a renewal succeeds."""
        held.suspended = True
        log.warning(
            "%s: %s not renewed within %ss; stopping it", self._me, held.shard_id, self._failover
        )
        self._listener.revoke(held.shard_id)

    def _lose(self, held: _Held, why: str) -> errors.LeaseLost:
        """Forget ``held`` and revoke its shard; the error to raise."""
        if self._held.get(held.shard_id) is held:
            del self._held[held.shard_id]
            log.info("%s lost %s: %s", self._me, held.shard_id, why,
                     extra={"shard": held.shard_id})
        self._listener.revoke(held.shard_id)
        return errors.LeaseLost(held.shard_id, why)

    async def _write_checkpoint(
        self, held: _Held, checkpoint: Checkpoint, children: frozenset[str]
    ) -> None:
        shard_id = held.shard_id
        seq, sub = checkpoint.sequence_number, checkpoint.sub_sequence_number or 0
        attempt = 0
        while True:
            if self._held.get(shard_id) is not held:
                raise self._lose(held, "lease lost while checkpointing")
            sent = anyio.current_time()
            if not held.suspended and sent > held.valid_until:
                self._suspend(held)
            if held.suspended:
                # Others may consider it expired: stop; it resumes if renewed in time.
                raise errors.LeaseLost(shard_id, f"lease not renewed within {self._failover}s")
            try:
                await self._table.checkpoint(shard_id, held.counter, seq, sub, children)
            except errors.ConditionFailed:
                try:
                    current = await self._table.get(shard_id)
                except errors.AWSError as exc:
                    if not exc.retriable:
                        raise
                    await anyio.sleep(backoff_delay(attempt))
                    attempt += 1
                    continue  # bounded by the lease's validity above
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

    async def _finish(self, held: _Held) -> None:
        """After SHARD_END: children's leases, then release the finished lease."""
        self._finished_here.add(held.shard_id)
        await self._release(held)
        try:
            async with self._cycle_lock:
                await self._create_missing(urgent=True)
        except errors.AWSError as exc:
            log.warning("child leases of %s not created yet (%s)", held.shard_id, exc)
        self._wake.set()

    async def _release(self, held: _Held) -> None:
        """Give a lease up (conditional on owner and counter); never raises AWS errors."""
        async with self._writes, held.lock:
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
                    log.info("%s released %s", self._me, held.shard_id,
                             extra={"shard": held.shard_id})
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
            async with self._renewals, held.lock:
                if self._held.get(held.shard_id) is not held:
                    return
                sent = anyio.current_time()
                try:
                    await self._table.renew(held.shard_id, held.counter)
                    took = anyio.current_time() - sent
                    self._renew_latency += 0.1 * (took - self._renew_latency)
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

    async def _take(self, lease: Lease, contended: Callable[[], bool] | None = None) -> bool:
        async with self._writes:
            if contended is not None and contended():
                return False
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
        log.info("%s took %s from %s", self._me, taken.shard_id, lease.owner or "nobody",
                 extra={"shard": taken.shard_id})
        return True

    async def _take_all(self, leases: Sequence[Lease]) -> int:
        """Take ``leases`` (at most write_concurrency at once); how many were taken.
        Once a take loses to another worker, the rest wait for the next scan: workers
        that start together do not all fight for the same free leases."""
        if len(leases) == 1:
            return int(await self._take(leases[0]))
        taken = 0
        contended = False

        async def one(lease: Lease) -> None:
            nonlocal taken, contended
            if contended:
                return
            if await self._take(lease, lambda: contended):
                taken += 1
            else:
                contended = True

        async with anyio.create_task_group() as tg:
            for lease in leases:
                tg.start_soon(one, lease)
        return taken

    async def _create_missing(self, *, first: bool = False, urgent: bool = False) -> None:
        """Create the leases the shard sync plans (linear in shards, existing ones
        skipped). A worker that found the table empty waits a random time first and
        leaves the creation to whoever started it meanwhile (Scheduler's random wait on
        an empty lease table), so a group starting together does not stampede; a lease
        found missing otherwise is created once it has been missing for failover_time
        and the table stopped growing (another worker may be creating it right now),
        unless ``urgent`` (the children of a shard this worker just finished)."""
        planned = plan_new_leases(
            self._listing, self._leases, self._scope.start_at, self._table.scope
        )
        if planned and first and self._table_was_empty and not self._waited_to_create:
            self._waited_to_create = True
            await anyio.sleep(self._rng.uniform(0, self._failover / 2))
            leases, _ = await self._table.scan()
            self._merge(leases, anyio.current_time(), full=True)
            if leases:
                return  # another worker is creating them: what is left, next cycle
            planned = plan_new_leases(
                self._listing, self._leases, self._scope.start_at, self._table.scope
            )
        elif planned and not urgent:
            now = anyio.current_time()
            since = {x.shard_id: self._missing_since.get(x.shard_id, now) for x in planned}
            if self._table_grew:
                since = dict.fromkeys(since, now)  # someone is creating them
            self._missing_since = since
            planned = [x for x in planned if now - since[x.shard_id] >= self._failover]
        if planned:
            await self._create_all(planned)
            self._wake.set()
        listed_children = self._listed_children()
        for lease in list(self._leases.values()):
            if not lease.finished:
                continue
            children = listed_children.get(lease.shard_id, frozenset())
            if children and not children <= lease.children:
                await self._table.set_children(lease.shard_id, children | lease.children)
                self._leases[lease.shard_id] = replace(lease, children=children | lease.children)

    def _listed_children(self) -> dict[str, frozenset[str]]:
        """Parent id -> its children in the listing (one pass over the listing)."""
        children: dict[str, set[str]] = {}
        for shard in self._listing.values():
            for parent in shard.parent_ids:
                children.setdefault(parent, set()).add(shard.shard_id)
        return {parent: frozenset(ids) for parent, ids in children.items()}

    async def _create_all(self, planned: Sequence[Lease]) -> None:
        """Create ``planned``; once one exists already, another worker is creating them
        too: stop and read what is there (the rest waits for a later cycle)."""
        existing: list[str] = []

        async def one(lease: Lease) -> None:
            async with self._writes:
                if existing and len(planned) > 1:
                    return
                created = await self._table.create(lease)
            if created:
                log.info("created lease %s (%s)", lease.shard_id, lease.checkpoint)
                self._leases[lease.shard_id] = lease
            else:
                existing.append(lease.shard_id)

        async with anyio.create_task_group() as tg:
            for lease in planned:
                tg.start_soon(one, lease)
        if len(existing) == 1:
            current = await self._table.get(existing[0])
            if current is not None:
                self._leases[current.shard_id] = current
        elif existing:  # created by others meanwhile: one scan reads them all
            leases, _ = await self._table.scan()
            self._merge(leases, anyio.current_time(), full=True)

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
        self._table_was_empty = not leases
        self._clock.observe(leases, anyio.current_time())

    def _merge(self, leases: Sequence[Lease], now: float, *, full: bool) -> None:
        """Take a scan's leases (all, or one segment's) into the view and the expiry
        clock; a write of ours may have landed after the scan read that item: keep the
        newer."""
        if full:
            self._clock.observe(leases, now)
            scanned = {lease.shard_id: lease for lease in leases}
            self._table_grew = bool(scanned.keys() - self._leases.keys())
            for shard_id, known in self._leases.items():
                seen = scanned.get(shard_id)
                if seen is not None and known.counter > seen.counter:
                    scanned[shard_id] = known
            self._leases = scanned
            return
        self._clock.observe_some(leases, now)
        for lease in leases:
            mine = self._leases.get(lease.shard_id)
            if mine is None or mine.counter <= lease.counter:
                self._leases[lease.shard_id] = lease

    async def _cycle(self, *, notify: bool = True) -> None:
        """Full scan: create missing leases, release finished ones, take, steal, shed."""
        self.cycles += 1
        leases, _ = await self._table.scan()
        now = anyio.current_time()
        self._merge(leases, now, full=True)
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
        await self._create_missing(first=not notify)
        for held in list(self._held.values()):
            lease = self._leases.get(held.shard_id)
            if lease is not None and lease.finished:
                await self._release(held)
        plan = self._plan(now)
        self._workers = plan.workers
        took = await self._take_all((*plan.take, *(() if plan.steal is None else (plan.steal,))))
        if plan.shed:
            await self._shed(plan.shed)
        if not notify:
            return
        listed_children = self._listed_children()
        stale_listing = any(
            lease.finished
            and lease.shard_id in self._listing
            and lease.shard_id not in listed_children
            for lease in self._leases.values()
        )
        if stale_listing and now - self._relisted_at > self._failover:
            self._relisted_at = now  # a parent ended elsewhere: list its children
            took = 1
        if took or plan.shed or self._grantable() != self._last_granted:
            self._listener.reassign()

    async def _shed(self, shard_ids: Collection[str]) -> None:
        """Release leases above target + 1 (their shards are stopped first)."""
        log.info("%s releases %d leases above its share", self._me, len(shard_ids))
        async with anyio.create_task_group() as tg:
            for shard_id in shard_ids:
                held = self._held.get(shard_id)
                if held is not None:
                    self._listener.revoke(shard_id)
                    tg.start_soon(self._release, held)

    def _watched(self) -> list[Segment | None]:
        """The parallel-scan segments this worker watches for expiry: with W workers
        (as last seen), W segments, this worker's rank r watching r and r + 1 (each
        segment watched twice, so a dead worker's own segment is watched too)."""
        workers = {
            lease.owner
            for lease in self._leases.values()
            if lease.owner is not None and not lease.finished
        }
        workers.add(self._me)
        if len(workers) <= 2:
            return [None]
        ranked = sorted(workers)
        total = len(ranked)
        rank = ranked.index(self._me)
        return [(rank, total), ((rank + 1) % total, total)]

    async def _watch(self) -> None:
        """Read the watched segments; take free or expired leases in them (no stealing)."""
        watched = self._watched()
        parts: list[list[Lease]] = []
        for segment in watched:
            part, _ = await self._table.scan(segment)
            parts.append(part)
        now = anyio.current_time()
        for part in parts:
            self._merge(part, now, full=False)
        # A dead worker's leases: all of them at once, in this worker's first segment,
        # and in its second once expired for failover_time / 4 more (that segment's first
        # watcher is late or dead). Free leases: up to the target.
        dead: set[str] = set()
        capped: set[str] = set()
        for i, part in enumerate(parts):
            grace = 0.0 if i == 0 else self._failover / 4
            for lease in part:
                if lease.finished or lease.owner == self._me:
                    continue
                if lease.owner is None:
                    capped.add(lease.shard_id)
                elif self._clock.expired(lease, now, grace=grace, as_seen=True):
                    dead.add(lease.shard_id)
        took = 0
        for only, greedy in ((dead, True), (capped, False)):
            if only:
                plan = self._plan(now, only=only, greedy=greedy)
                took += await self._take_all(plan.take)
        if took:
            self._listener.reassign()

    def _plan(
        self, now: float, *, only: Collection[str] | None = None, greedy: bool = False
    ) -> TakePlan:
        """What to take, steal or shed, from the leases as last seen (see plan_takes)."""
        return plan_takes(
            list(self._leases.values()),
            self._me,
            self._held.keys(),
            lambda x: self._clock.expired(x, now, as_seen=True),
            self._rng,
            only=only,
            greedy=greedy,
        )

    def _jitter(self, interval: float, spread: float) -> float:
        return interval * self._rng.uniform(1 - spread, 1 + spread)

    async def take_loop(self) -> None:
        """Every 2 x (failover_time + epsilon), jittered (or when woken): a full cycle.
        Never raises AWS errors (they are logged and the next cycle tries again)."""
        await self._listed.wait()
        first = True
        while True:
            interval = self._scan_interval * (self._rng.uniform(0.1, 0.5) if first else 1)
            first = False
            with anyio.move_on_after(self._jitter(interval, 0.2)):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                async with self._cycle_lock:
                    await self._cycle()
            except errors.AWSError as exc:
                log.warning("lease cycle on %s failed: %s", self._table.table, exc)

    async def watch_loop(self) -> None:
        """Every failover_time / 3, jittered: the expiry watch. Never raises AWS errors."""
        await self._listed.wait()
        while True:
            await anyio.sleep(self._jitter(self._interval, 0.1))
            try:
                async with self._cycle_lock:
                    await self._watch()
            except errors.AWSError as exc:
                log.warning("lease watch on %s failed: %s", self._table.table, exc)

    async def renew_loop(self, task_group: anyio.abc.TaskGroup) -> None:
        """Every failover_time / 3: stop leases not renewed in time, renew each lease
        (as many at once as it takes to renew them all within half the interval)."""
        while True:
            await anyio.sleep(self._interval)
            wanted = math.ceil(len(self._held) * self._renew_latency / (self._interval / 2))
            self._renewals.total_tokens = max(
                min(_MIN_RENEWALS, self._max_renewals), min(self._max_renewals, wanted)
            )
            now = anyio.current_time()
            for held in list(self._held.values()):
                if not held.suspended and now > held.valid_until:
                    self._suspend(held)
                if not held.renewing:
                    held.renewing = True
                    task_group.start_soon(self._renew, held)

    async def run(self, task_group: anyio.abc.TaskGroup) -> None:
        """Start the three loops in ``task_group``."""
        task_group.start_soon(self.renew_loop, task_group, name="shardflow lease renewal")
        task_group.start_soon(self.take_loop, name="shardflow lease balancing")
        if self._watch_enabled:
            task_group.start_soon(self.watch_loop, name="shardflow lease expiry watch")
