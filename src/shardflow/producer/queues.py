"""Records waiting to be sent, in one lane per predicted shard: how they come in, go back
in line, and leave other than in a batch (:class:`RecordQueues`, the base of
:class:`.accumulator.Accumulator`, which cuts the batches).

Without a shard map (no aggregation, no rate limit) every record waits in one lane. With
a map, a record's lane is the shard its partition key (or explicit hash key) hashes to;
:meth:`RecordQueues.set_map` replaces the map after a reshard and moves every waiting
record to its new lane. An unordered aggregating producer packs each record into its
lane's open aggregate as it is put (:mod:`.packing`); records that must be packed again
(after a reshard, a failure, or when some in an aggregate expired) are given their data
back from the aggregate and packed again, oldest first, ahead of the others. A lane
whose aggregate went astray (a stale map) is suspended until the next map.

With ``ordered=True`` each partition key has a FIFO, and only keys with nothing on its way
are offered ("ready"); all the records of a key that are on their way sit in one entry (a
record, or an aggregate, which succeeds or fails as a whole), so a later record of the
key never overtakes an earlier one, across retries too.

Records that failed a try come back through :meth:`RecordQueues.retry_at`: they wait in a
heap until their backoff ends, then go first in line in their lane (ordered: their key
is offered again). The sender's periodic sweep (:meth:`RecordQueues.expire`) takes out
the records whose deadline passed while they waited; :meth:`RecordQueues.drain` takes
out everything when the producer stops.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable
from itertools import count
from operator import attrgetter

from .. import aggregation
from ..errors import UnmappedHashKey
from ..limits import KinesisLimits
from ..shardmap import ShardMap
from .open_aggregate import OpenAggregate, plain_entry
from .packing import Lane
from .ratelimit import ShardRateLimiter
from .records import Aggregate, Entry, PendingRecord

__all__ = ["RecordQueues"]

_LANE_CACHE_LIMIT = 1 << 16
_size = attrgetter("size")
_deadline = attrgetter("deadline")


class RecordQueues:
    """Records waiting to be sent (queued or backing off), in their lanes."""

    def __init__(
        self,
        limits: KinesisLimits,
        ordered: bool,
        *,
        aggregate: bool = False,
        max_aggregate_bytes: int = aggregation.DEFAULT_MAX_BYTES,
        limiter: ShardRateLimiter | None = None,
        pressure_records: int | None = None,
        tail_of: Callable[[str], bytes] | None = None,
    ) -> None:
        self.max_records = limits.max_batch_records
        self.max_bytes = limits.max_batch_bytes
        self.ordered = ordered
        self.aggregate = aggregate
        self.packing = aggregate and not ordered
        """Records are packed into aggregates as they are put (unordered aggregation)."""
        self._tail_of = tail_of
        self._max_aggregate_bytes = max_aggregate_bytes
        self._agg_limit = 0
        self.solo = False
        """Records may be larger than a request (``max_batch_bytes``): such a record goes
        in a request of its own."""
        RecordQueues.set_limits(self, limits)
        self.limiter = limiter
        pressure = pressure_records or self.max_records
        # a request's worth of records: aggregates carry many records per entry
        self.full_records = pressure if aggregate else min(pressure, self.max_records)
        """Records queued that make a batch due at once."""
        self._map: ShardMap | None = None
        self.default = Lane(None)
        """The lane of records with no predicted shard (every record, without a map)."""
        self._lanes: dict[str | None, Lane] = {None: self.default}
        self.key_lanes: dict[str, Lane] | None = None
        """With a map: the lane of each partition key seen (without explicit hash key)."""
        self.queued = 0
        """Records offered by the lanes (ordered: ready keys)."""
        self.queued_bytes = 0
        # (the producer's hot path updates key lanes' open aggregates, waiting, queued,
        # queued_bytes and lane counts inline, as add() does)
        # ordered: a FIFO per key, and how many of its first records are on their way
        self._queues: dict[str, deque[PendingRecord]] = {}
        self._held: dict[str, int] = {}
        # groups of records backing off: (ready_at, tiebreak, records)
        self._retries: list[tuple[float, int, list[PendingRecord]]] = []
        self._tiebreak = count()
        self.waiting = 0
        """Records held here (queued or backing off), not on their way."""
        self.expired: list[PendingRecord] = []
        """Records found expired while cutting, already out of their queues: the caller
        fails them and empties the list."""
        self.unmapped = False
        """Set when a key fell outside every open shard of the map (the caller refreshes
        the map and clears the flag); such records go unaggregated and unpaced."""

    def set_limits(self, limits: KinesisLimits) -> None:
        """Size aggregates to ``limits`` from now on (the request limits stay)."""
        # the largest protobuf message of an aggregate, before its outer key's bytes
        self._agg_limit = (
            min(self._max_aggregate_bytes, limits.max_record_bytes, limits.max_batch_bytes)
            - aggregation.OVERHEAD
        )
        self.solo = limits.max_record_bytes > self.max_bytes

    # --- shard map ----------------------------------------------------------------------

    @property
    def shard_map(self) -> ShardMap | None:
        return self._map

    def set_map(self, shard_map: ShardMap) -> None:
        """Predict shards with ``shard_map`` from now on; every waiting record moves to its
        new lane (keeping its order within its old lane, and per key)."""
        old = self._lanes
        self._map = shard_map
        self.default = Lane(None)
        self._lanes = {None: self.default}
        for shard in shard_map:
            self._lanes[shard.shard_id] = Lane(shard.shard_id, shard.starting_hash_key)
        self.key_lanes = {}
        if self.limiter is not None:
            self.limiter.retain(s.shard_id for s in shard_map)
        if not self.ordered:
            waiting: list[PendingRecord] = []
            for lane in old.values():
                waiting += self._take_all(lane)
            self.queued = self.queued_bytes = 0
            self._place(waiting)
            return
        for queue in self._queues.values():
            for record in queue:
                self._lane_for(record)
        for lane in old.values():
            for key in lane.ready:
                head = self._queues[key][0]
                target = self._lanes.get(head.shard, self.default)
                target.ready[key] = None
                target.nbytes += head.size

    def _lane_for(self, record: PendingRecord) -> Lane:
        """The lane of ``record``'s predicted shard; sets ``record.shard``."""
        shard_map = self._map
        lane = self.default
        if shard_map is not None:
            try:
                shard = shard_map.shard_for_key(record.key, record.ehk)
            except UnmappedHashKey:
                self.unmapped = True
            else:
                lane = self._lanes[shard.shard_id]
                lane_of = self.key_lanes
                if record.ehk is None and lane_of is not None:
                    if len(lane_of) >= _LANE_CACHE_LIMIT:
                        lane_of.clear()
                    lane_of[record.key] = lane
        record.shard = lane.shard_id
        return lane

    def suspend(self, shard_id: str | None) -> None:
        """Hold the records predicted for ``shard_id`` until the next :meth:`set_map`."""
        lane = self._lanes.get(shard_id)
        if lane is not None and lane.shard_id is not None:
            lane.suspended = True

    # --- input --------------------------------------------------------------------------

    def add(self, record: PendingRecord) -> bool:
        """Queue a new record; True if the sender should look now (first or full batch).

        An aggregating unordered producer's record carries its data, which is packed
        here (and no longer kept by the record)."""
        self.waiting += 1
        lane_of = self.key_lanes
        if lane_of is None:  # (record.shard is then read only when ordered)
            lane = self.default
            if not self.ordered and not self.packing:  # one lane, no map: the fast path
                lane.records.append(record)
                n = self.queued = self.queued + 1
                before = self.queued_bytes
                after = self.queued_bytes = before + record.size
                return n == 1 or n == self.full_records or before < self.max_bytes <= after
        else:
            found = lane_of.get(record.key) if record.ehk is None else None
            if found is None:
                lane = self._lane_for(record)
            else:
                lane = found
                record.shard = lane.shard_id
        if not self.ordered:
            size = record.size
            if self.packing:
                data = record.data
                del record.data
                self._pack(lane, record, data)
                lane.count += 1
                lane.nbytes += size
            else:
                lane.records.append(record)
            n = self.queued = self.queued + 1
            before = self.queued_bytes
            after = self.queued_bytes = before + size
            return n == 1 or n == self.full_records or before < self.max_bytes <= after
        if lane_of is None:
            record.shard = None
        queue = self._queues.get(record.key)
        if queue is not None:
            queue.append(record)
            return False
        self._queues[record.key] = deque((record,))
        return self._offer(record.key, record)

    # --- packing at put() time (unordered, aggregating) ---------------------------------

    def _pack(self, lane: Lane, record: PendingRecord, data: bytes) -> None:
        """Pack ``record`` into ``lane``'s open aggregate (sealing it when full), or make
        it an entry of its own (no shard known, or too large for an aggregate)."""
        agg = lane.open
        if agg is not None and agg.add(record, data):
            return
        assert self._tail_of is not None
        if lane.shard_id is not None:
            key_bytes = record.size - len(data)
            fresh = OpenAggregate(self._agg_limit - key_bytes, record.key, key_bytes)
            if fresh.add(record, data):
                if agg is not None:
                    lane.sealed.append(self._seal(lane, agg))
                lane.open = fresh
                return
        elif self._map is None:  # the producer is starting: packed once the map comes
            record.data = data
            lane.sealed.append(record)
            return
        lane.sealed.append(plain_entry(record, data, self._tail_of(record.key)))

    def _seal(self, lane: Lane, agg: OpenAggregate) -> Entry:
        assert self._tail_of is not None
        assert lane.shard_id is not None
        return agg.seal(self._tail_of(agg.key), lane.landing, lane.shard_id)

    def _take_all(self, lane: Lane) -> list[PendingRecord]:
        """Empty an unordered lane: its records, oldest first (an aggregating producer's
        with their data back, but for those that go on their own)."""
        if not self.packing:
            out = lane.retried + lane.take_fresh()
            lane.retried = []
        else:
            if lane.open is not None:
                lane.sealed.append(self._seal(lane, lane.open))
                lane.open = None
            out = []
            for entry in lane.sealed:
                if type(entry) is Aggregate:
                    out += entry.unpack()
                else:
                    out.append(entry)  # type: ignore[arg-type]
            lane.sealed = []
        lane.count = lane.nbytes = 0
        return out

    def _place(self, records: Iterable[PendingRecord], *, first: bool = False) -> None:
        """Queue records again (unordered), each in its lane, oldest first; ``first``:
        ahead of what waits there (retries)."""
        groups: dict[str | None, list[PendingRecord]] = {}
        for record in records:
            groups.setdefault(self._lane_for(record).shard_id, []).append(record)
        for shard_id, group in groups.items():
            lane = self._lanes[shard_id]
            group.sort(key=_deadline)
            nbytes = sum(map(_size, group))
            self.queued += len(group)
            self.queued_bytes += nbytes
            if not self.packing:
                if first:
                    lane.retried = sorted(lane.retried + group, key=_deadline)
                else:
                    lane.records = sorted(lane.take_fresh() + group, key=_deadline)
                continue
            # pack them on their own (records that went alone keep their entry)
            lane.count += len(group)
            lane.nbytes += nbytes
            sealed, open_ = lane.sealed, lane.open
            lane.sealed, lane.open = [], None
            for record in group:
                if hasattr(record, "data"):
                    data = record.data
                    del record.data
                    self._pack(lane, record, data)
                else:
                    lane.sealed.append(record)
            if lane.open is not None:
                lane.sealed.append(self._seal(lane, lane.open))
            if first:
                lane.sealed += sealed
            else:
                if open_ is not None:
                    sealed.append(self._seal(lane, open_))
                    open_ = None
                lane.sealed = sealed + lane.sealed
            lane.open = open_

    def _offer(self, key: str, head: PendingRecord) -> bool:
        """Make ``key`` ready in its head's lane (ordered); True at a first or full batch."""
        lane = self._lanes.get(head.shard, self.default)
        lane.ready[key] = None
        lane.nbytes += head.size
        n = self.queued = self.queued + 1
        before = self.queued_bytes
        self.queued_bytes = before + head.size
        return n == 1 or n == self.full_records or before < self.max_bytes <= before + head.size

    def _withdraw(self, key: str, head: PendingRecord) -> None:
        """Take ``key`` (whose next record is ``head``) out of its lane's ready keys."""
        lane = self._lanes.get(head.shard, self.default)
        del lane.ready[key]
        lane.nbytes -= head.size
        self.queued -= 1
        self.queued_bytes -= head.size

    def retry_at(self, records: list[PendingRecord], when: float) -> None:
        """Send ``records`` again, first in line, once the monotonic clock reaches ``when``."""
        self.waiting += len(records)
        heapq.heappush(self._retries, (when, next(self._tiebreak), records))

    def done(self, record: PendingRecord) -> None:
        """``record``, taken in a batch, is resolved: its key's next may go (ordered)."""
        if not self.ordered:
            return
        key = record.key
        queue = self._queues.get(key)
        if queue is None:
            return
        if queue and queue[0] is record:
            queue.popleft()
        else:
            try:
                queue.remove(record)
            except ValueError:
                return
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
            return
        self._held.pop(key, None)
        if queue:
            self._offer(key, queue[0])
        else:
            del self._queues[key]

    # --- retries, expiry, drain ----------------------------------------------------------

    def _promote(self, now: float) -> None:
        retries = self._retries
        if not retries or retries[0][0] > now:
            return
        due: list[PendingRecord] = []
        while retries and retries[0][0] <= now:
            due.extend(heapq.heappop(retries)[2])
        if self.ordered:
            for record in due:
                key = record.key
                if self._held.pop(key, None) is not None:
                    self._offer(key, self._queues[key][0])
            return
        self._place(due, first=True)


    def _drop_expired(self, lane: Lane, now: float) -> list[PendingRecord]:
        """Unordered, aggregating: move the expired records of ``lane`` to
        :attr:`expired` (still counted in the totals), packing the others again."""
        records = self._take_all(lane)
        live = [r for r in records if r.deadline > now]
        gone = [r for r in records if r.deadline <= now]
        self.queued -= len(live)
        self.queued_bytes -= sum(map(_size, live))
        self._place(live)
        self.expired += gone
        return gone


    def expire(self, now: float) -> list[PendingRecord]:
        """Remove and return queued records whose deadline passed (not on their way)."""
        out: list[PendingRecord] = []
        if not self.ordered:
            for lane in list(self._lanes.values()):
                if self.packing:
                    if not lane.count or min(map(_deadline, _waiting(lane))) >= now:
                        continue
                    records = self._take_all(lane)
                    live = [r for r in records if r.deadline >= now]
                    out += [r for r in records if r.deadline < now]
                    self.queued -= len(live)
                    self.queued_bytes -= sum(map(_size, live))
                    self._place(live)
                    continue
                retried, newer = lane.retried, lane.records[lane.head :]
                if retried and min(map(_deadline, retried)) < now:
                    lane.retried = [r for r in retried if r.deadline >= now]
                    out += [r for r in retried if r.deadline < now]
                if newer and min(map(_deadline, newer)) < now:
                    lane.records = [r for r in newer if r.deadline >= now]
                    lane.head = 0
                    out += [r for r in newer if r.deadline < now]
            self.queued -= len(out)
            self.queued_bytes -= sum(map(_size, out))
        else:
            for key in list(self._queues):
                queue = self._queues[key]
                held = self._held.get(key, 0)
                if all(r.deadline >= now for i, r in enumerate(queue) if i >= held):
                    continue
                if not held:
                    self._withdraw(key, queue[0])
                fresh = deque(r for i, r in enumerate(queue) if i < held or r.deadline >= now)
                out.extend(r for i, r in enumerate(queue) if i >= held and r.deadline < now)
                if not fresh:
                    del self._queues[key]
                    continue
                self._queues[key] = fresh
                if not held:
                    self._offer(key, fresh[0])
        self.waiting -= len(out)
        return out

    def drain(self) -> list[PendingRecord]:
        """Remove and return every record held here (queued or backing off)."""
        out = [r for entry in self._retries for r in entry[2]]
        self._retries.clear()
        retrying = {id(r) for r in out}
        if not self.ordered:
            for lane in self._lanes.values():
                out += _waiting(lane)
                lane.records, lane.retried, lane.sealed, lane.open = [], [], [], None
                lane.head = 0
                lane.count = lane.nbytes = 0
        else:
            for key, queue in self._queues.items():
                held = self._held.get(key, 0)
                out.extend(r for i, r in enumerate(queue) if i >= held)
            # records on their way stay until their request ends; the rest is gone
            self._queues = {
                k: deque(r for r in list(q)[: self._held[k]] if id(r) not in retrying)
                for k, q in self._queues.items()
                if k in self._held
            }
            for lane in self._lanes.values():
                lane.ready.clear()
                lane.nbytes = 0
        self.queued = self.queued_bytes = 0
        self.waiting = 0
        return out

def _waiting(lane: Lane) -> list[PendingRecord]:
    """Every record waiting in an unordered lane (aggregates' records as they are)."""
    out = lane.retried + lane.records[lane.head :]
    for entry in lane.sealed:
        if type(entry) is Aggregate:
            out += entry.records
        else:
            out.append(entry)  # type: ignore[arg-type]
    if lane.open is not None:
        out += lane.open.records
    return out
