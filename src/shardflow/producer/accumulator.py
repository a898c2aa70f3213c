"""Cutting the records waiting in their lanes (:mod:`.queues`) into PutRecords batches.

A batch is cut when the oldest record of a lane that may send has lingered ``linger``
seconds, when those lanes hold a full request (or ``pressure_records``: a quarter of the
queue bound, so a producer whose queue fills never waits for linger), or at once while
flushing. It takes from every lane that may send, an equal share of the request each,
then what is left, up to the request limits (:mod:`.packing` builds the entries, and the
aggregates). With a rate limiter, a lane may send only what its shard's token buckets
allow, and a lane short of tokens waits until it may send :data:`GRANULE` seconds' worth
(or all it holds): a throttled shard goes in chunks, not record by record, and never
holds up the other shards. A suspended lane (its aggregate went astray) sends nothing
until the next map.

Unordered aggregating producers send the aggregates packed at ``put()`` time: sealed
ones first, the open one only once it lingered, when flushing, or when nothing sealed
waits. Ordered producers pack the ready keys' next records now, a key's records in one
entry (:class:`.packing.Packer`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from .. import aggregation
from ..limits import KinesisLimits
from .packing import Lane, Packer, Run, take_packed, take_plain
from .queues import RecordQueues
from .ratelimit import ShardRateLimiter
from .records import Entry, PendingRecord

__all__ = ["GRANULE", "Accumulator"]

GRANULE = 0.1
"""Seconds' worth of a shard's rate that a lane short of tokens waits for before it sends."""

_INF = math.inf


class Accumulator(RecordQueues):
    """Records waiting to be sent (queued or backing off), cut into batches."""

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
    ) -> None:
        super().__init__(
            limits,
            ordered,
            aggregate=aggregate,
            max_aggregate_bytes=max_aggregate_bytes,
            limiter=limiter,
            pressure_records=pressure_records,
            tail_of=tail_of,
        )
        self.linger = linger
        # a record was accepted record_ttl before its deadline; it may go linger after that
        self._linger_offset = linger - record_ttl
        self._granule_records = self._granule_bytes = 0.0
        if limiter is not None:
            self._granule_records = max(1.0, limiter.records_per_s * GRANULE)
            self._granule_bytes = limiter.bytes_per_s * GRANULE
        self._packer = Packer(limits, max_aggregate_bytes if aggregate else 0)
        self._turn = 0

    def set_limits(self, limits: KinesisLimits) -> None:
        super().set_limits(limits)
        self._packer.max_record_bytes = limits.max_record_bytes

    def _entry_size(self, lane: Lane) -> int:
        """The size of the entry a lane would send first (0: none): a record larger than
        a request goes in a request of its own."""
        if self.ordered:
            ready = lane.ready
            return self._queues[next(iter(ready))][0].size if ready else 0
        if self.packing:  # (an open aggregate never exceeds a request)
            return lane.sealed[0].size if lane.sealed else 0
        head = lane.oldest()
        return head.size if head is not None else 0

    # --- cutting batches ----------------------------------------------------------------

    def _head(self, lane: Lane) -> tuple[PendingRecord | None, int]:
        """The oldest record a lane offers (None: none), and how many it offers."""
        if self.ordered:
            ready = lane.ready
            return (self._queues[next(iter(ready))][0], len(ready)) if ready else (None, 0)
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
            if (
                flushing
                or oldest <= now
                or self.queued >= self.full_records
                or self.queued_bytes >= self.max_bytes
            ):
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
        if sendable and (
            flushing or oldest <= now or n >= self.full_records or nbytes >= self.max_bytes
        ):
            return sendable, now
        return None, min(oldest, blocked)

    def wake_time(self, now: float, flushing: bool) -> float | None:
        """When a batch will be ready without new input (monotonic), None if never."""
        self._promote(now)
        _, when = self._scan(now, flushing)
        if self._retries:
            when = min(when, self._retries[0][0])
        return None if when == _INF else when

    def next_batch(self, now: float, flushing: bool) -> tuple[list[Entry], int] | None:
        """Take the next batch if one is ready: (its entries, the user records in them).

        Records found expired on the way go to :attr:`expired`. Every record taken is
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
        expired = self.expired
        gone = len(expired)
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
                    taken += self._take_runs(
                        lane, entries, room_n_lane, room_b_lane, tokens_n, tokens_b, now
                    )
                    used = sum(e.size for e in entries[first:])
                elif self.packing:
                    n, nbytes, used = self._take_packed(
                        lane, entries, room_n_lane, room_b_lane, tokens_n, tokens_b, now, seal
                    )
                    taken += n
                    self.queued -= n
                    self.queued_bytes -= nbytes
                else:
                    n, nbytes, used = take_plain(
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
        if len(expired) > gone and not self.ordered:
            self.queued -= len(expired) - gone
            self.queued_bytes -= sum(r.size for r in expired[gone:])
        self.waiting -= taken + len(expired) - gone
        return (entries, taken) if entries else None

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
    ) -> tuple[int, int, int]:
        """Unordered, aggregating: take a lane's sealed entries, then its open aggregate
        (sealed now) if it lingered or ``seal``, and the request and the tokens have room
        left for it. Expired records go to :attr:`expired` (counted out by the caller)."""
        head = lane.oldest()
        if head is not None and head.deadline <= now:
            self._drop_expired(lane, now)
        before = len(entries)
        n, nbytes, used = take_packed(lane, entries, room_n, room_b, tokens_n, tokens_b)
        added = len(entries) - before
        agg = lane.open
        if lane.sealed or agg is None or added >= room_n or used >= room_b:
            return n, nbytes, used
        if not seal and agg.records[0].deadline + self._linger_offset > now:
            return n, nbytes, used
        if added and (added >= tokens_n or used >= tokens_b):
            return n, nbytes, used
        lane.sealed.append(self._seal(lane, agg))
        lane.open = None
        more = take_packed(
            lane, entries, room_n - added, room_b - used, tokens_n - added, tokens_b - used
        )
        return n + more[0], nbytes + more[1], used + more[2]


    def _take_runs(
        self,
        lane: Lane,
        entries: list[Entry],
        room_n: int,
        room_b: int,
        tokens_n: float,
        tokens_b: float,
        now: float,
    ) -> int:
        """Ordered: pack the ready keys' next records; mark what was taken as held."""
        taken = self._packer.pack_runs(
            lane, self._runs(lane, now), entries, room_n, room_b, tokens_n, tokens_b
        )
        n = 0
        for key, count_ in taken:
            self._withdraw(key, self._queues[key][0])
            self._held[key] = count_
            n += count_
        return n

    def _runs(self, lane: Lane, now: float) -> Iterator[Run]:
        """The ready keys of ``lane`` in turn, each with its next records for the lane
        (only the next one without aggregation); expired ones are dropped first."""
        shard_id = lane.shard_id
        aggregate = self.aggregate and shard_id is not None
        for key in list(lane.ready):
            queue = self._queues[key]
            head = queue[0]
            if head.deadline <= now:
                self._withdraw(key, head)
                while queue and queue[0].deadline <= now:
                    self.expired.append(queue.popleft())
                if not queue:
                    del self._queues[key]
                    continue
                self._offer(key, queue[0])
                if queue[0].shard != shard_id:
                    continue  # its next record is for another lane now
                head = queue[0]
            if not aggregate:
                yield key, (head,)
                continue
            run = []
            for record in queue:
                if record.shard != shard_id or record.deadline <= now:
                    break
                run.append(record)
            yield key, run
