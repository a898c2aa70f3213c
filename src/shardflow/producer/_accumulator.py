"""The accumulator: records waiting to be sent, in one lane per predicted shard, cut into
PutRecords batches (:class:`Accumulator`).

Lanes. Without a shard map (no aggregation, no rate limit) every record waits in one
lane. With a map, a record's lane is the shard its partition key (or explicit hash key)
hashes to; :meth:`Accumulator.set_map` replaces the map after a reshard and moves every
waiting record to its new lane. An unordered aggregating producer packs each record into
its lane's open aggregate as it is put (:class:`._lane.LanePacker`); records that must be packed
again (after a reshard, a failure, or when some in an aggregate expired) get their data
back from the aggregate and are packed again, oldest first. A lane whose aggregate went
astray (a stale map) is suspended until the next map. With ``ordered=True`` each
partition key has a FIFO, and only keys with nothing on their way are offered ("ready"):
a later record of a key never overtakes an earlier one, across retries too
(:class:`._keys.KeyQueues`).

Retries and expiry. Records that failed a try come back through
:meth:`Accumulator.retry_at`: they wait in a heap until their backoff ends, then go
first in line in their lane. A record has expired when ``deadline <= now``
(:func:`._lane.overdue`, the one rule); :meth:`Accumulator.next_batch` returns those it meets,
and the sender's periodic sweep (:meth:`Accumulator.expire`) takes out the others.

Batch cut. A batch is cut when the oldest record of a lane that may send has lingered
``linger`` seconds, when those lanes hold a full request (or ``pressure_records``: a
quarter of the queue bound, so a producer whose queue fills never waits for linger), or
at once while flushing (:meth:`Accumulator._scan`, with :meth:`Accumulator._full`). It
takes from every lane that may send, an equal share of the request each, then what is
left, up to the request limits (a lane's takers are in :mod:`._lane`). With a rate
limiter, a lane may send only what its shard's token buckets allow, and a lane short of
tokens waits until it may send :data:`GRANULE` seconds' worth (or all it holds): a
throttled shard goes in chunks and never holds up the others.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable
from itertools import count
from operator import attrgetter
from typing import NamedTuple

from .. import aggregation
from ..errors import UnmappedHashKey
from ..limits import KinesisLimits
from ..shardmap import ShardMap
from ._keys import KeyQueues
from ._lane import (
    Lane,
    LanePacker,
    overdue,
    split_expired,
    take_built,
    take_sealed,
    waiting_records,
)
from ._packing import Packer
from ._ratelimit import ShardRateLimiter
from ._records import Entry, PendingRecord

__all__ = ["GRANULE", "Accumulator", "Batch"]

GRANULE = 0.1
"""Seconds' worth of a shard's rate that a lane short of tokens waits for before it sends."""

_INF = math.inf
_LANE_CACHE_LIMIT = 1 << 16
_size = attrgetter("size")
_deadline = attrgetter("deadline")


class Batch(NamedTuple):
    """What :meth:`Accumulator.next_batch` returns."""

    entries: list[Entry]
    """The request's entries (empty: no batch is due)."""
    records: int
    """The user records in them."""
    expired: list[PendingRecord]
    """Records found expired on the way, already out of the accumulator: fail them."""


class Accumulator:
    """Records waiting to be sent (queued or backing off), in their lanes, cut into
    batches. ``on_unmapped`` is called when a key falls outside every open shard of the
    map (such records go unaggregated and unpaced): the map needs a refresh."""

    def __init__(
        self,
        limits: KinesisLimits,
        linger: float,
        ordered: bool,
        record_ttl: float,
        *,
        aggregate: bool = False,
        max_aggregate_bytes: int = aggregation.DEFAULT_MAX_BYTES,
        limiter: ShardRateLimiter | None = None,
        pressure_records: int | None = None,
        tail_of: Callable[[str], bytes] | None = None,
        on_unmapped: Callable[[], None] | None = None,
    ) -> None:
        self.max_records = limits.max_batch_records
        self.max_bytes = limits.max_batch_bytes
        self.ordered = ordered
        self.aggregate = aggregate
        self.packing = aggregate and not ordered
        """Records are packed into aggregates as they are put (unordered aggregation)."""
        self._on_unmapped = on_unmapped
        self._max_aggregate_bytes = max_aggregate_bytes
        self._filler = LanePacker(tail_of)
        self.solo = False
        """Records may be larger than a request (``max_batch_bytes``): such a record goes
        in a request of its own."""
        self._packer = Packer(limits, max_aggregate_bytes if aggregate else 0)
        self.set_limits(limits)
        self.limiter = limiter
        pressure = pressure_records or self.max_records
        # a request's worth of records: aggregates carry many records per entry
        self.full_records = pressure if aggregate else min(pressure, self.max_records)
        """Records queued that make a batch due at once."""
        self.linger = linger
        # a record was accepted record_ttl before its deadline; it may go linger after that
        self._linger_offset = linger - record_ttl
        self._granule_records = self._granule_bytes = 0.0
        if limiter is not None:
            self._granule_records = max(1.0, limiter.records_per_s * GRANULE)
            self._granule_bytes = limiter.bytes_per_s * GRANULE
        self._turn = 0
        self._map: ShardMap | None = None
        self.default = Lane(None)
        """The lane of records with no predicted shard (every record, without a map)."""
        self._lanes: dict[str | None, Lane] = {None: self.default}
        self.key_lanes: dict[str, Lane] | None = None
        """With a map: the lane of each partition key seen (without explicit hash key)."""
        self.queued = 0
        """Records offered by the lanes (ordered: ready keys)."""
        self.queued_bytes = 0
        self._keys = KeyQueues(self, self._lane_of, self._packer, aggregate=aggregate)
        """Ordered producers: the FIFO of each key."""
        # groups of records backing off: (ready_at, tiebreak, records)
        self._retries: list[tuple[float, int, list[PendingRecord]]] = []
        self._tiebreak = count()
        self.waiting = 0
        """Records held here (queued or backing off), not on their way."""

    def set_limits(self, limits: KinesisLimits) -> None:
        """Size aggregates to ``limits`` from now on (the request limits stay)."""
        # the largest protobuf message of an aggregate, before its outer key's bytes
        self._filler.limit = (
            min(self._max_aggregate_bytes, limits.max_record_bytes, limits.max_batch_bytes)
            - aggregation.OVERHEAD
        )
        self.solo = limits.max_record_bytes > self.max_bytes
        self._packer.max_record_bytes = limits.max_record_bytes

    # --- shard map ----------------------------------------------------------------------

    def set_map(self, shard_map: ShardMap) -> None:
        """Predict shards with ``shard_map`` from now on; every waiting record moves to its
        new lane (keeping its order within its old lane, and per key)."""
        old = self._lanes
        self._map = shard_map
        self._filler.mapped = True
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
        for record in self._keys.records():
            self._lane_for(record)
        self._keys.move_ready(old.values())

    def _lane_of(self, shard_id: str | None) -> Lane:
        """The lane of ``shard_id`` (the default lane: unknown or None)."""
        return self._lanes.get(shard_id, self.default)

    def _lane_for(self, record: PendingRecord) -> Lane:
        """The lane of ``record``'s predicted shard; sets ``record.shard``."""
        shard_map = self._map
        lane = self.default
        if shard_map is not None:
            try:
                shard = shard_map.shard_for_key(record.key, record.ehk)
            except UnmappedHashKey:
                if self._on_unmapped is not None:
                    self._on_unmapped()
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
        """Queue a new record; True if the sender should look now: the batch-due rule on
        arrival (the first record offered, or the one that makes the lanes :meth:`_full`).

        An aggregating unordered producer's record carries its data, which is packed
        here (and no longer kept by the record)."""
        self.waiting += 1
        lane_of = self.key_lanes
        if lane_of is None:  # (record.shard is then read only when ordered)
            lane = self.default
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
                agg = lane.open
                if agg is None or not agg.add(record, data):
                    self._filler.pack(lane, record, data)
                lane.count += 1
                lane.nbytes += size
            else:
                lane.records.append(record)
        else:
            if lane_of is None:
                record.shard = None
            if not self._keys.add(record):
                return False
            size = record.size
        n = self.queued = self.queued + 1
        before = self.queued_bytes
        self.queued_bytes = before + size
        return n == 1 or n == self.full_records or before < self.max_bytes <= before + size

    def _take_all(self, lane: Lane) -> list[PendingRecord]:
        """Empty an unordered lane: its records, oldest first (an aggregating producer's
        with their data back, but for those that go on their own)."""
        if self.packing:
            out = self._filler.take_all(lane)
        else:
            out = lane.retried + lane.take_fresh()
            lane.retried = []
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
            lane.count += len(group)
            lane.nbytes += nbytes
            self._filler.refill(lane, group, first=first)

    def _full(self, records: int, nbytes: int) -> bool:
        """The batch-due rule by size: a request's worth (or ``pressure_records``)."""
        return records >= self.full_records or nbytes >= self.max_bytes

    def retry_at(self, records: list[PendingRecord], when: float) -> None:
        """Send ``records`` again, first in line, once the monotonic clock reaches ``when``."""
        self.waiting += len(records)
        heapq.heappush(self._retries, (when, next(self._tiebreak), records))

    def done(self, record: PendingRecord) -> None:
        """``record``, taken in a batch, is resolved: its key's next may go (ordered)."""
        if self.ordered:
            self._keys.done(record)

    # --- retries, expiry, drain ----------------------------------------------------------

    def _promote(self, now: float) -> None:
        retries = self._retries
        if not retries or retries[0][0] > now:
            return
        due: list[PendingRecord] = []
        while retries and retries[0][0] <= now:
            due.extend(heapq.heappop(retries)[2])
        if self.ordered:
            self._keys.release(due)
            return
        self._place(due, first=True)


    def _drop_expired(self, lane: Lane, now: float, gone: list[PendingRecord]) -> None:
        """Unordered, aggregating: move the expired records of ``lane`` to ``gone``
        (still counted in the totals), packing the others again."""
        live, out = split_expired(self._take_all(lane), now)
        self.queued -= len(live)
        self.queued_bytes -= sum(map(_size, live))
        self._place(live)
        gone += out


    def expire(self, now: float) -> list[PendingRecord]:
        """Remove and return queued records whose deadline passed (not on their way)."""
        out: list[PendingRecord] = []
        if not self.ordered:
            for lane in list(self._lanes.values()):
                if self.packing:
                    if not lane.count or min(map(_deadline, waiting_records(lane))) > now:
                        continue
                    live, gone = split_expired(self._take_all(lane), now)
                    out += gone
                    self.queued -= len(live)
                    self.queued_bytes -= sum(map(_size, live))
                    self._place(live)
                    continue
                retried, newer = lane.retried, lane.records[lane.head :]
                if retried and min(map(_deadline, retried)) <= now:
                    lane.retried, gone = split_expired(retried, now)
                    out += gone
                if newer and min(map(_deadline, newer)) <= now:
                    lane.records, gone = split_expired(newer, now)
                    lane.head = 0
                    out += gone
            self.queued -= len(out)
            self.queued_bytes -= sum(map(_size, out))
        else:
            out = self._keys.expire(now)
        self.waiting -= len(out)
        return out

    def drain(self) -> list[PendingRecord]:
        """Remove and return every record held here (queued or backing off)."""
        out = [r for entry in self._retries for r in entry[2]]
        self._retries.clear()
        retrying = {id(r) for r in out}
        if not self.ordered:
            for lane in self._lanes.values():
                out += waiting_records(lane)
                lane.records, lane.retried, lane.sealed, lane.open = [], [], [], None
                lane.head = 0
                lane.count = lane.nbytes = 0
        else:
            out += self._keys.drain(retrying)
            for lane in self._lanes.values():
                lane.ready.clear()
                lane.nbytes = 0
        self.queued = self.queued_bytes = 0
        self.waiting = 0
        return out

    def _entry_size(self, lane: Lane) -> int:
        """The size of the entry a lane would send first (0: none): a record larger than
        a request goes in a request of its own."""
        if self.ordered:
            head, _ = self._keys.head(lane)
            return head.size if head is not None else 0
        if self.packing:  # (an open aggregate never exceeds a request)
            return lane.sealed[0].size if lane.sealed else 0
        head = lane.oldest()
        return head.size if head is not None else 0

    # --- cutting batches ----------------------------------------------------------------

    def _head(self, lane: Lane) -> tuple[PendingRecord | None, int]:
        """The oldest record a lane offers (None: none), and how many it offers."""
        if self.ordered:
            return self._keys.head(lane)
        return lane.oldest(), lane.count if self.packing else lane.waiting_plain()

    def _scan(self, now: float, flushing: bool) -> tuple[list[Lane] | None, float]:
        """(lanes that may send, if a batch is due now, else None; when to look again)."""
        limiter = self.limiter
        ordered = self.ordered
        sendable: list[Lane] = []
        n = nbytes = 0
        oldest = blocked = _INF
        if self._map is None and not self.ordered:  # one lane, no pacing
            head = self.default.oldest()
            if head is None:
                return None, _INF
            oldest = head.deadline + self._linger_offset
            if flushing or oldest <= now or self._full(self.queued, self.queued_bytes):
                return [self.default], now
            return None, oldest
        for lane in self._lanes.values():
            head, offered = self._head(lane)
            if head is None or lane.suspended:
                continue
            # (unaggregated lanes do not keep their bytes: the head's size times the count
            # estimates them, for decisions that need no more than an estimate)
            lane_bytes = offered * head.size if not ordered and not self.packing else lane.nbytes
            if limiter is not None and lane.shard_id is not None:
                need_n = 1.0 if self.aggregate else min(offered, self._granule_records)
                need_b = max(head.size, min(lane_bytes, self._granule_bytes))
                wait = limiter.delay(lane.shard_id, need_n, need_b)
                if wait > 0:
                    blocked = min(blocked, now + wait)
                    continue
            sendable.append(lane)
            n += offered
            nbytes += lane_bytes
            oldest = min(oldest, head.deadline + self._linger_offset)
        if not ordered and blocked == _INF:
            nbytes = self.queued_bytes  # every lane may send: the exact total
        if sendable and (flushing or oldest <= now or self._full(n, nbytes)):
            return sendable, now
        return None, min(oldest, blocked)

    def wake_time(self, now: float, flushing: bool) -> float | None:
        """When a batch will be ready without new input (monotonic), None if never."""
        self._promote(now)
        _, when = self._scan(now, flushing)
        if self._retries:
            when = min(when, self._retries[0][0])
        return None if when == _INF else when

    def next_batch(self, now: float, flushing: bool) -> Batch | None:
        """Take the next batch if one is ready (None: nothing due, nothing expired).

        Records found expired on the way are returned in it. Every record taken is
        later passed to :meth:`done` (directly, or after :meth:`retry_at`).
        """
        self._promote(now)
        if not self.queued:
            return None
        lanes, _ = self._scan(now, flushing)
        if lanes is None:
            return None
        if len(lanes) > 1:
            turn = self._turn % len(lanes)
            self._turn += 1
            lanes = lanes[turn:] + lanes[:turn]
        limiter = self.limiter
        expired: list[PendingRecord] = []
        entries: list[Entry] = []
        room_n = self.max_records
        room_b = self.max_bytes
        taken = 0
        # First each lane gets an equal share of the request (fair between shards, and a
        # batch then spans the oldest records of every lane), then what is left over.
        share_n = -(-room_n // len(lanes))
        share_b = -(-room_b // len(lanes))
        # (aggregating) open aggregates go only when they lingered, when flushing, or when
        # nothing sealed waits: a full queue fills aggregates before they go
        seal = flushing or not any(lane.sealed for lane in lanes)
        sent: set[int] = set()  # lanes with an entry in the request (their first went)
        for rest in (False, True) if len(lanes) > 1 else (True,):
            for lane in lanes:
                if room_n <= 0 or room_b <= 0:
                    break
                tokens_n = tokens_b = _INF
                paced = limiter is not None and lane.shard_id is not None
                if paced:
                    tokens_n, tokens_b = limiter.available(lane.shard_id)  # type: ignore[union-attr, arg-type]
                    if id(lane) in sent and (tokens_n < 1 or tokens_b <= 0):
                        continue
                room_n_lane = room_n if rest else min(room_n, share_n)
                room_b_lane = room_b if rest else min(room_b, share_b)
                if self.solo and not entries:
                    big = self._entry_size(lane)
                    if big > self.max_bytes:  # larger than a request: alone in one
                        room_n_lane, room_b_lane = 1, big
                first = len(entries)
                if self.ordered:
                    taken += self._keys.take_runs(
                        lane, entries, room_n_lane, room_b_lane, tokens_n, tokens_b, now, expired
                    )
                    used = sum(e.size for e in entries[first:])
                elif self.packing:
                    n, nbytes, used = self._take_packed(
                        lane, entries, room_n_lane, room_b_lane, tokens_n, tokens_b, now, seal,
                        expired,
                    )
                    taken += n
                    self.queued -= n
                    self.queued_bytes -= nbytes
                else:
                    n, nbytes, used = take_built(
                        lane, entries, room_n_lane, room_b_lane, tokens_n, tokens_b, now, expired
                    )
                    taken += n
                    self.queued -= n
                    self.queued_bytes -= nbytes
                added = len(entries) - first
                if added:
                    sent.add(id(lane))
                    if paced:
                        limiter.take(lane.shard_id, added, used)  # type: ignore[union-attr, arg-type]
                    room_n -= added
                    room_b -= used
        if expired and not self.ordered:
            self.queued -= len(expired)
            self.queued_bytes -= sum(map(_size, expired))
        self.waiting -= taken + len(expired)
        return Batch(entries, taken, expired) if entries or expired else None

    def _take_packed(
        self,
        lane: Lane,
        entries: list[Entry],
        room_n: int,
        room_b: int,
        tokens_n: float,
        tokens_b: float,
        now: float,
        seal: bool,
        gone: list[PendingRecord],
    ) -> tuple[int, int, int]:
        """Unordered, aggregating: take a lane's sealed entries, then its open aggregate
        (sealed now) if it lingered or ``seal``, and the request and the tokens have room
        left for it. Expired records go to ``gone`` (counted out by the caller)."""
        head = lane.oldest()
        if head is not None and overdue(head, now):
            self._drop_expired(lane, now, gone)
        before = len(entries)
        n, nbytes, used = take_sealed(lane, entries, room_n, room_b, tokens_n, tokens_b)
        added = len(entries) - before
        agg = lane.open
        if lane.sealed or agg is None or added >= room_n or used >= room_b:
            return n, nbytes, used
        if not seal and agg.records[0].deadline + self._linger_offset > now:
            return n, nbytes, used
        if added and (added >= tokens_n or used >= tokens_b):
            return n, nbytes, used
        lane.sealed.append(self._filler.seal(lane, agg))
        lane.open = None
        more = take_sealed(
            lane, entries, room_n - added, room_b - used, tokens_n - added, tokens_b - used
        )
        return n + more[0], nbytes + more[1], used + more[2]
