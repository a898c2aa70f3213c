"""A lane: the records waiting for one predicted shard (:class:`Lane`), the expiry rule
(:func:`overdue`), and how entries are taken from a lane into a request.

An unordered, unaggregated lane keeps its records in put order (``records`` from
``head`` on) after its retried ones; an unordered aggregating lane keeps sealed entries
and one open aggregate; an ordered producer's lane keeps only its ready keys (the keys'
FIFOs are the accumulator's). The takers (:func:`take_built`, :func:`take_sealed`) fill
a request from one lane within the request's room and the shard's tokens; the
accumulator decides which lanes and how much (:mod:`._accumulator`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from operator import attrgetter

from ._packing import OpenAggregate, plain_entry
from ._records import Aggregate, Entry, PendingRecord

__all__ = [
    "Lane",
    "LanePacker",
    "overdue",
    "split_expired",
    "take_built",
    "take_sealed",
    "waiting_records",
]

_COMPACT = 4096  # taken records a lane's list keeps before it is cut
_size = attrgetter("size")

def overdue(record: PendingRecord, now: float) -> bool:
    """The expiry rule: a record whose deadline is ``now`` or earlier is not sent."""
    return record.deadline <= now


def split_expired(
    records: Iterable[PendingRecord], now: float
) -> tuple[list[PendingRecord], list[PendingRecord]]:
    """(the records still live, those :func:`overdue`), each in their order."""
    live: list[PendingRecord] = []
    gone: list[PendingRecord] = []
    for record in records:
        (gone if overdue(record, now) else live).append(record)
    return live, gone



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
        self.landing = None if starting_hash_key is None else str(starting_hash_key)
        """The explicit hash key that lands an aggregate on the shard."""
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


class LanePacker:
    """Unordered aggregating producers: packs records into their lane's open aggregate,
    seals aggregates, and empties a lane back into records (to be packed again after a
    reshard, a failure or an expiry). ``limit`` is the largest protobuf message of an
    aggregate; ``mapped`` turns True with the first shard map."""

    __slots__ = ("_tail_of", "limit", "mapped")

    def __init__(self, tail_of: Callable[[str], bytes] | None) -> None:
        self._tail_of = tail_of
        self.limit = 0
        self.mapped = False

    def pack(self, lane: Lane, record: PendingRecord, data: bytes) -> None:
        """Pack ``record`` into a new open aggregate of ``lane`` (sealing the full one),
        or make it an entry of its own (no shard known, or too large for an aggregate).
        (The caller tried the lane's open aggregate first.)"""
        agg = lane.open
        assert self._tail_of is not None
        if lane.shard_id is not None:
            key_bytes = record.size - len(data)
            fresh = OpenAggregate(self.limit - key_bytes, record.key, key_bytes)
            if fresh.add(record, data):
                if agg is not None:
                    lane.sealed.append(self.seal(lane, agg))
                lane.open = fresh
                return
        elif not self.mapped:  # the producer is starting: packed once the map comes
            record.data = data
            lane.sealed.append(record)
            return
        lane.sealed.append(plain_entry(record, data, self._tail_of(record.key)))

    def seal(self, lane: Lane, agg: OpenAggregate) -> Entry:
        """``agg`` as the entry that lands it on ``lane``'s shard."""
        assert self._tail_of is not None
        assert lane.shard_id is not None
        return agg.seal(self._tail_of(agg.key), lane.landing, lane.shard_id)

    def take_all(self, lane: Lane) -> list[PendingRecord]:
        """Empty ``lane``'s entries: its records, oldest first, with their data back (but
        for those that go on their own). The caller resets the lane's counts."""
        if lane.open is not None:
            lane.sealed.append(self.seal(lane, lane.open))
            lane.open = None
        out: list[PendingRecord] = []
        for entry in lane.sealed:
            if type(entry) is Aggregate:
                out += entry.unpack()
            else:
                out.append(entry)  # type: ignore[arg-type]
        lane.sealed = []
        return out

    def refill(self, lane: Lane, group: list[PendingRecord], *, first: bool) -> None:
        """Pack ``group`` (oldest first) on its own in ``lane`` (records that went alone
        keep their entry); ``first``: ahead of what waits there (retries)."""
        sealed, open_ = lane.sealed, lane.open
        lane.sealed, lane.open = [], None
        for record in group:
            if hasattr(record, "data"):
                data = record.data
                del record.data
                agg = lane.open
                if agg is None or not agg.add(record, data):
                    self.pack(lane, record, data)
            else:
                lane.sealed.append(record)
        if lane.open is not None:
            lane.sealed.append(self.seal(lane, lane.open))
        if first:
            lane.sealed += sealed
        else:
            if open_ is not None:
                sealed.append(self.seal(lane, open_))
                open_ = None
            lane.sealed = sealed + lane.sealed
        lane.open = open_


def waiting_records(lane: Lane) -> list[PendingRecord]:
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


# --- taking entries into a request -------------------------------------------------------


def take_built(
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
        if used + nbytes <= cap_b and not overdue(chunk[0], now):
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
        if overdue(record, now):
            expired.append(record)
            continue
        used += size
        n += 1
        out.append(record)
    return n, used, i


def take_sealed(
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

