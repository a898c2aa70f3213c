"""Turning a lane's waiting records into PutRecords entries.

A :class:`Lane` holds what waits for one predicted shard. Unordered producers fill it at
``put()`` time:

- without aggregation, with records whose entry was encoded at ``put()``; a batch takes
  them in bulk (:func:`take_plain`);
- with aggregation, with entries ready to go: KPL aggregates packed record by record as
  they are put (an :class:`.open_aggregate.OpenAggregate` per lane, sealed when the next
  record would take it past ``max_aggregate_bytes``, or when a batch takes it), and
  records that go on their own (too large for an aggregate, or for no known shard). A
  batch takes entries as they are (:func:`take_packed`).

Ordered producers keep their records per key; :class:`Packer` packs the ready keys' next
records when a batch is cut (``pack_runs``), so that a key's records share one entry.

Every loop takes entries while the request has room; with a rate limiter, also while the
lane's shard has tokens left: a lane's first entry always goes (the accumulator offers a
lane only once its tokens allow that much), later ones only within the tokens, except
that an aggregate is closed by size, not by tokens (the buckets then run into a debt of
at most one aggregate, repaid before the shard sends again).
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Sequence
from operator import attrgetter

import orjson

from .._putrecords import encode_entry
from ..aggregation import OVERHEAD, AggregateBuilder
from ..limits import KinesisLimits
from .open_aggregate import OpenAggregate
from .records import Aggregate, Entry, PendingRecord

__all__ = ["Lane", "Packer", "Run", "take_packed", "take_plain"]

Run = tuple[str, Sequence[PendingRecord]]
"""(partition key, its next records for the lane): an ordered key's records that may
share one entry, oldest first."""

_b64 = binascii.b2a_base64
_dumps = orjson.dumps
_size = attrgetter("size")
_deadline = attrgetter("deadline")
_COMPACT = 4096  # taken records a lane's list keeps before it is cut
_DATA_HEAD = b'{"Data":"'
_KEY_HEAD = b'","PartitionKey":'


class Lane:
    """What waits for one predicted shard (``shard_id`` None: no prediction)."""

    __slots__ = (
        "count",
        "head",
        "landing",
        "nbytes",
        "open",
        "ready",
        "records",
        "retried",
        "sealed",
        "shard_id",
        "suspended",
    )

    def __init__(self, shard_id: str | None, starting_hash_key: int | None = None) -> None:
        self.shard_id = shard_id
        self.landing = (
            b"}" if starting_hash_key is None else b',"ExplicitHashKey":"%d"}' % starting_hash_key
        )
        """The end of an aggregate's entry: the explicit hash key landing it on the shard."""
        self.records: list[PendingRecord] = []
        """Unordered, unaggregated: the records, in put order, from ``head`` on (those
        before were taken; the list is cut now and then)."""
        self.head = 0
        self.retried: list[PendingRecord] = []
        """Unordered, unaggregated: records due for another try, oldest first; they go
        before :attr:`records`."""
        self.sealed: list[Entry] = []
        """Unordered, aggregating: entries ready to go, first in line first."""
        self.open: OpenAggregate | None = None
        """Unordered, aggregating: the aggregate being filled (after :attr:`sealed`)."""
        self.count = 0
        """Unordered, aggregating: records waiting here (sealed or open)."""
        self.ready: dict[str, None] = {}
        """Ordered producers: keys whose next records may go, in turn."""
        self.nbytes = 0
        """Unordered, aggregating: bytes (AWS's count) of the records waiting here;
        ordered producers: of the ready keys' next records."""
        self.suspended = False
        """True once an aggregate packed for the shard landed elsewhere: the lane waits
        for the next shard map rather than send more aggregates to the wrong shard."""

    def __repr__(self) -> str:
        waiting = self.count or len(self.ready) or self.waiting_plain()
        return f"<Lane {self.shard_id}: {waiting} waiting>"

    def waiting_plain(self) -> int:
        """Unordered, unaggregated: the records waiting."""
        return len(self.records) - self.head + len(self.retried)

    def take_fresh(self) -> list[PendingRecord]:
        """Unordered, unaggregated: remove and return the (not retried) records."""
        out = self.records[self.head :] if self.head else self.records
        self.records = []
        self.head = 0
        return out

    def oldest(self) -> PendingRecord | None:
        """Unordered: the first record in line (the oldest but for retries), or None."""
        if self.retried:
            return self.retried[0]
        if len(self.records) > self.head:
            return self.records[self.head]
        if self.sealed:
            first = self.sealed[0]
            return first.records[0] if type(first) is Aggregate else first  # type: ignore[return-value]
        if self.open is not None and self.open.records:
            return self.open.records[0]
        return None


# --- taking entries into a request -------------------------------------------------------


def take_plain(
    lane: Lane,
    out: list[Entry],
    room_n: int,
    room_b: int,
    tokens_n: float,
    tokens_b: float,
    now: float,
    expired: list[PendingRecord],
) -> tuple[int, int, int]:
    """Take records built at ``put()`` as entries of their own: retried ones first, then
    the others in put order, in bulk while none expired and the sizes fit at a glance.

    Returns (records taken, their bytes, the entries' bytes); expired records go to
    ``expired``.
    """
    cap_n = room_n if tokens_n >= room_n else max(1, int(tokens_n))
    cap_b = room_b if tokens_b >= room_b else tokens_b
    n = used = 0
    if lane.retried:
        n, used, i = _take_one_by_one(
            lane.retried, 0, out, cap_n, cap_b, room_b, now, expired, 0, 0
        )
        del lane.retried[:i]
    records = lane.records
    head = lane.head
    k = min(cap_n - n, len(records) - head)
    if k > 0:
        # The records are in put order, so in deadline order: if the first did not
        # expire, none did (the periodic sweep catches any exception to the rule).
        chunk = records[head : head + k]
        nbytes = sum(map(_size, chunk))
        if used + nbytes <= cap_b and chunk[0].deadline > now:
            head += k
            out += chunk
            n += k
            used += nbytes
        else:
            n, used, head = _take_one_by_one(
                records, head, out, cap_n, cap_b, room_b, now, expired, n, used
            )
        if head >= _COMPACT and head * 2 >= len(records):
            del records[:head]
            head = 0
        lane.head = head
    return n, used, used


def _take_one_by_one(
    records: list[PendingRecord],
    i: int,
    out: list[Entry],
    cap_n: int,
    cap_b: float,
    room_b: int,
    now: float,
    expired: list[PendingRecord],
    n: int,
    used: int,
) -> tuple[int, int, int]:
    """Take ``records`` from index ``i`` on, one at a time, within the caps; the expired
    ones go to ``expired``. Returns (records taken, bytes, the index reached)."""
    while i < len(records) and n < cap_n:
        record = records[i]
        size = record.size
        if used + size > cap_b and (n or size > room_b):
            break
        i += 1
        if record.deadline <= now:
            expired.append(record)
            continue
        used += size
        n += 1
        out.append(record)
    return n, used, i


def take_packed(
    lane: Lane,
    out: list[Entry],
    room_n: int,
    room_b: int,
    tokens_n: float,
    tokens_b: float,
) -> tuple[int, int, int]:
    """Take a lane's sealed entries as they are, first in line first.

    Returns (records taken, their bytes, the entries' bytes). Expired records are taken
    out beforehand by the accumulator.
    """
    sealed = lane.sealed
    taken = taken_bytes = entries = used = i = 0
    while i < len(sealed) and entries < room_n and used < room_b:
        if entries and (entries >= tokens_n or used >= tokens_b):
            break
        entry = sealed[i]
        size = entry.size
        if size > room_b - used or (entries and size > tokens_b - used):
            break
        i += 1
        out.append(entry)
        entries += 1
        used += size
        if type(entry) is Aggregate:
            taken += len(entry.records)
            taken_bytes += entry.nbytes
        else:
            taken += 1
            taken_bytes += size
    del sealed[:i]
    lane.count -= taken
    lane.nbytes -= taken_bytes
    return taken, taken_bytes, used


# --- ordered producers: packing at send time ---------------------------------------------


class Packer:
    """Cuts entries out of ordered lanes within request limits, shard tokens and
    aggregate size."""

    def __init__(self, limits: KinesisLimits, max_aggregate_bytes: int) -> None:
        self.max_record_bytes = limits.max_record_bytes
        self.max_aggregate_bytes = max_aggregate_bytes
        """0: the producer does not aggregate (entries are built at ``put()``)."""

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
            (_DATA_HEAD, _b64(blob, newline=False), _KEY_HEAD, _dumps(key), lane.landing)
        )
        size = len(blob) + members[0].size - len(members[0].data)
        assert lane.shard_id is not None
        return Aggregate(members, fragment, size, lane.shard_id)

    def _limit(self, head: PendingRecord, room: int) -> int:
        """The largest aggregate whose outer record (head's key included) fits ``room``."""
        key_bytes = head.size - len(head.data)
        return min(self.max_aggregate_bytes, self.max_record_bytes, room) - key_bytes

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
