"""Turning a lane's waiting records into PutRecords entries.

A :class:`Lane` holds the records waiting for one predicted shard. :class:`Packer` takes
records from a lane into a request: on their own (unaggregated producers, or a record
too large for an aggregate), or packed into KPL aggregates for the lane's shard, each at
most ``max_aggregate_bytes`` (and within the record and request limits). An aggregate
of one record is sent as that plain record, as the KPL does.

Every loop takes entries while the request has room; with a rate limiter, also while the
lane's shard has tokens left: a lane's first entry always goes (the accumulator offers a
lane only once its tokens allow that much), later ones only within the tokens, except
that an aggregate is closed by size, not by tokens (the buckets then run into a debt of
at most one aggregate, repaid before the shard sends again).
"""

from __future__ import annotations

import binascii
from collections import deque
from collections.abc import Iterable, Sequence
from operator import attrgetter

import orjson

from .._putrecords import encode_entry
from ..aggregation import OVERHEAD, AggregateBuilder
from ..limits import KinesisLimits
from .records import Aggregate, Entry, PendingRecord

__all__ = ["Lane", "Packer", "Run"]

Run = tuple[str, Sequence[PendingRecord]]
"""(partition key, its next records for the lane): an ordered key's records that may
share one entry, oldest first."""

_b64 = binascii.b2a_base64
_dumps = orjson.dumps
_size = attrgetter("size")


class Lane:
    """The records waiting for one predicted shard (``shard_id`` None: no prediction)."""

    __slots__ = ("landing", "nbytes", "ready", "records", "shard_id", "suspended")

    def __init__(self, shard_id: str | None, starting_hash_key: int | None = None) -> None:
        self.shard_id = shard_id
        self.landing = (
            b"}" if starting_hash_key is None else b',"ExplicitHashKey":"%d"}' % starting_hash_key
        )
        """The end of an aggregate's entry: the explicit hash key landing it on the shard."""
        self.records: deque[PendingRecord] = deque()
        """Unordered producers: the waiting records, oldest first."""
        self.ready: dict[str, None] = {}
        """Ordered producers: keys whose next records may go, in turn."""
        self.nbytes = 0
        """Ordered producers: the sizes of the ready keys' next records."""
        self.suspended = False
        """True once an aggregate packed for the shard landed elsewhere: the lane waits
        for the next shard map rather than send more aggregates to the wrong shard."""

    def __repr__(self) -> str:
        return f"<Lane {self.shard_id}: {len(self.records) or len(self.ready)} waiting>"


class Packer:
    """Cuts entries out of lanes within request limits, shard tokens and aggregate size."""

    def __init__(self, limits: KinesisLimits, max_aggregate_bytes: int) -> None:
        self.max_record_bytes = limits.max_record_bytes
        self.max_aggregate_bytes = max_aggregate_bytes
        """0: the producer does not aggregate (entries are built at ``put()``)."""

    # --- entries ------------------------------------------------------------------------

    def _plain(self, record: PendingRecord) -> PendingRecord:
        """``record`` as an entry of its own (its JSON built now if the producer aggregates)."""
        if self.max_aggregate_bytes:
            record.fragment = encode_entry(record.data, _dumps(record.key), record.ehk)
        return record

    def _close(self, lane: Lane, builder: AggregateBuilder, members: list[PendingRecord]) -> Entry:
        if len(members) == 1:
            return self._plain(members[0])
        key = members[0].key
        blob = builder.build()
        fragment = b"".join(
            (
                b'{"Data":"',
                _b64(blob, newline=False),
                b'","PartitionKey":',
                _dumps(key),
                lane.landing,
            )
        )
        size = len(blob) + members[0].size - len(members[0].data)
        assert lane.shard_id is not None
        return Aggregate(members, fragment, size, lane.shard_id)

    def _limit(self, head: PendingRecord, room: int) -> int:
        """The largest aggregate whose outer record (head's key included) fits ``room``."""
        key_bytes = head.size - len(head.data)
        return min(self.max_aggregate_bytes, self.max_record_bytes, room) - key_bytes

    # --- unordered ----------------------------------------------------------------------

    def take_plain(
        self,
        lane: Lane,
        out: list[Entry],
        room_n: int,
        room_b: int,
        tokens_n: float,
        tokens_b: float,
        now: float,
        expired: list[PendingRecord],
    ) -> tuple[int, int, int]:
        """Take records built at ``put()`` as entries of their own, oldest first.

        Returns (records taken, their bytes, the entries' bytes); expired records go to
        ``expired``.
        """
        records = lane.records
        cap_n = room_n if tokens_n >= room_n else max(1, int(tokens_n))
        cap_b = room_b if tokens_b >= room_b else tokens_b
        n = used = 0
        append = out.append
        popleft = records.popleft
        while records and n < cap_n:
            record = records[0]
            size = record.size
            if used + size > cap_b and (n or size > room_b):
                break
            popleft()
            if record.deadline <= now:
                expired.append(record)
                continue
            used += size
            n += 1
            append(record)
        return n, used, used

    def pack(
        self,
        lane: Lane,
        out: list[Entry],
        room_n: int,
        room_b: int,
        tokens_n: float,
        tokens_b: float,
        now: float,
        expired: list[PendingRecord],
    ) -> tuple[int, int, int]:
        """Pack a lane's records into aggregates for its shard, oldest first.

        Returns (records taken, their bytes, the entries' bytes); expired records go to
        ``expired``.
        """
        records = lane.records
        aggregating = lane.shard_id is not None
        taken = taken_bytes = 0
        entries = used = 0
        while records and entries < room_n and used < room_b:
            if entries and (entries >= tokens_n or used >= tokens_b):
                break
            head = records[0]
            if head.deadline <= now:
                expired.append(records.popleft())
                continue
            entry: Entry | None = None
            members: list[PendingRecord] = []
            if aggregating and (limit := self._limit(head, room_b - used)) > OVERHEAD:
                builder = AggregateBuilder(limit)
                if head.ehk is None:
                    # The records up to the next one with an explicit hash key, as many as
                    # may fit (each adds at least its data and 6 bytes), added in one go.
                    room = limit - OVERHEAD
                    while records:
                        record = records[0]
                        if record.ehk is not None:
                            break
                        if record.deadline <= now:
                            expired.append(records.popleft())
                            continue
                        room -= len(record.data) + 6
                        if room < 0:
                            break
                        members.append(records.popleft())
                    n = builder.add_all([r.key for r in members], [r.data for r in members])
                    if n < len(members):
                        records.extendleft(reversed(members[n:]))
                        del members[n:]
                else:
                    add = builder.try_add
                    while records:
                        record = records[0]
                        if record.deadline <= now:
                            expired.append(records.popleft())
                            continue
                        if add(record.key, record.ehk, record.data) < 0:
                            break
                        members.append(records.popleft())
                if members:
                    taken_bytes += sum(map(_size, members))
                    entry = self._close(lane, builder, members)
            if entry is None:  # too large for an aggregate: alone, if the request has room
                if head.size > room_b - used or (entries and head.size > tokens_b - used):
                    break
                records.popleft()
                taken_bytes += head.size
                members.append(head)
                entry = self._plain(head)
            out.append(entry)
            entries += 1
            used += entry.size
            taken += len(members)
        return taken, taken_bytes, used

    # --- ordered ------------------------------------------------------------------------

    def pack_runs(
        self,
        lane: Lane,
        runs: Iterable[Run],
        out: list[Entry],
        room_n: int,
        room_b: int,
        tokens_n: float,
        tokens_b: float,
    ) -> list[tuple[str, int]]:
        """Take each key's next records into one entry (one record when the producer does
        not aggregate): a run is never split between two entries of a request.

        Returns (key, records taken) for each key that got an entry, in turn.
        """
        aggregating = bool(self.max_aggregate_bytes) and lane.shard_id is not None
        taken: list[tuple[str, int]] = []
        entries = used = 0
        builder: AggregateBuilder | None = None
        members: list[PendingRecord] = []
        for key, run in runs:
            n = 0
            if builder is not None:
                n = _fill(builder, run, members)
                if not n:
                    entry = self._close(lane, builder, members)
                    out.append(entry)
                    entries += 1
                    used += entry.size
                    builder = None
                    members = []
            if builder is None:
                if entries >= room_n or used >= room_b:
                    break
                if entries and (entries >= tokens_n or used >= tokens_b):
                    break
                head = run[0]
                if aggregating and (limit := self._limit(head, room_b - used)) > OVERHEAD:
                    builder = AggregateBuilder(limit)
                    n = _fill(builder, run, members)
                    if not n:
                        builder = None
                if not n:  # a record on its own
                    if head.size > room_b - used or (entries and head.size > tokens_b - used):
                        break
                    out.append(self._plain(head))
                    entries += 1
                    used += head.size
                    n = 1
            taken.append((key, n))
        if builder is not None and members:
            out.append(self._close(lane, builder, members))
        return taken


def _fill(
    builder: AggregateBuilder, run: Sequence[PendingRecord], members: list[PendingRecord]
) -> int:
    """Add the longest prefix of ``run`` that fits; return its length."""
    n = 0
    for record in run:
        if builder.try_add(record.key, record.ehk, record.data) < 0:
            break
        members.append(record)
        n += 1
    return n
