"""Turning a lane's waiting records into PutRecords entries.

A :class:`Lane` holds what waits for one predicted shard. Unordered producers fill it at
``put()`` time:

- without aggregation, with records whose entry was encoded at ``put()``; a batch takes
  them in bulk (:func:`take_plain`);
- with aggregation, with entries ready to go: KPL aggregates packed record by record as
  they are put (an :class:`OpenAggregate` per lane, sealed when the next record would
  take it past ``max_aggregate_bytes``, or when a batch takes it), and records that go on
  their own (too large for an aggregate, or for no known shard). A batch takes entries
  as they are (:func:`take_packed`). The MD5 and the base64 of an aggregate are computed
  once, when it is sealed.

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
from hashlib import md5
from operator import attrgetter

import orjson

from .._putrecords import encode_entry
from ..aggregation import (
    _ENTRIES,
    _PK_FIELD,
    _TABLE_SIZE,
    _VARINT,
    MAGIC,
    OVERHEAD,
    AggregateBuilder,
    _encode_varint,
    _key_entry,
    deaggregate,
)
from ..limits import KinesisLimits
from .records import Aggregate, Entry, PendingRecord

__all__ = [
    "HEADERS",
    "HEADER_INDEXES",
    "Lane",
    "OpenAggregate",
    "Packer",
    "Run",
    "header",
    "plain_entry",
    "take_packed",
    "take_plain",
]

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


# --- put-time aggregation --------------------------------------------------------------


HEADER_INDEXES = _TABLE_SIZE
"""Key indexes below this have cached headers (:data:`HEADERS`)."""
HEADERS: list[dict[int, bytes]] = [{} for _ in range(_TABLE_SIZE)]
"""For a partition key index *i* (< 4096) and a data length *n*: the protobuf bytes of a
``Record`` that come before its data (tag, length, key index, data tag and length), so
encoding a record is one lookup and one concatenation. Bounded (see :func:`header`)."""
_HEADERS_LIMIT = 256


def header(index: int, dl: int) -> bytes:
    """The bytes before the data of a ``Record`` with key ``index`` and ``dl`` bytes of
    data (cached for indexes below 4096)."""
    field = _PK_FIELD[index] if index < _TABLE_SIZE else b"\x08" + _encode_varint(index)
    dlv = _varint(dl)
    inner = len(field) + 1 + len(dlv) + dl
    prefix = b"\x1a%b%b\x1a%b" % (_varint(inner), field, dlv)
    if index < _TABLE_SIZE:
        cache = HEADERS[index]
        if len(cache) >= _HEADERS_LIMIT:
            cache.clear()
        cache[dl] = prefix
    return prefix


class OpenAggregate:
    """A KPL aggregate being filled as records are put, for one lane.

    Each record is encoded when it is added (one protobuf ``Record`` with its data, one
    key table entry for a key new to the aggregate); :meth:`seal` joins the parts, adds
    the MD5 and encodes the entry once. ``limit`` bounds the protobuf message; ``key`` is
    the first record's partition key, which the aggregate carries, ``outer`` its bytes.

    The records it holds keep only their cost and deadline (and epoch): the rest is in
    the aggregate, and :meth:`Aggregate.unpack` gives it back.
    """

    __slots__ = (
        "body",
        "ehk_fields",
        "ehk_table",
        "fields",
        "first",
        "key",
        "limit",
        "nbytes",
        "outer",
        "parts",
        "records",
        "table",
    )

    def __init__(self, limit: int, key: str, outer: int) -> None:
        self.limit = limit
        self.key = key
        self.outer = outer
        self.body = 0
        self.nbytes = 0  # the records' bytes (data and partition keys, as AWS counts)
        self.fields: dict[str, int] = {}  # partition key -> its index in the table
        self.table: list[bytes] = [MAGIC]  # MAGIC, then the partition key table
        self.ehk_fields: dict[str, bytes] = {}
        self.ehk_table: list[bytes] = []
        self.parts: list[bytes] = []  # one encoded Record each
        self.records: list[PendingRecord] = []
        self.first = b""  # the first record's data (an aggregate of one goes as it is)

    def add(self, record: PendingRecord, data: bytes) -> bool:
        """Encode ``record`` (``data`` is its data) into the aggregate; False, changing
        nothing, when it would take the aggregate past its limit."""
        key = record.key
        fields = self.fields
        index = fields.get(key)
        entry = b""
        if index is None:
            index = len(fields)
            entry = _ENTRIES.get(key) or _key_entry(key)
        if record.ehk is None:
            dl = len(data)
            prefix = (HEADERS[index].get(dl) if index < _TABLE_SIZE else None) or header(
                index, dl
            )
            part = prefix + data
            ehk_entry = b""
        else:
            part, ehk_entry = self._encode_with_hash_key(index, record.ehk, data)
        body = self.body + len(part) + len(entry) + len(ehk_entry)
        if body > self.limit:
            return False
        if entry:
            fields[key] = index
            self.table.append(entry)
        if ehk_entry:
            self.ehk_table.append(ehk_entry)
        self.body = body
        self.nbytes += record.size
        records = self.records
        if not records:
            self.first = data
        records.append(record)
        self.parts.append(part)
        return True

    def _encode_with_hash_key(self, index: int, ehk: str, data: bytes) -> tuple[bytes, bytes]:
        """(the encoded Record, the hash key's new table entry or b"") of a record with
        an explicit hash key; the hash key's index is taken (kept if it does not fit)."""
        ehk_field = self.ehk_fields.get(ehk)
        ehk_entry = b""
        if ehk_field is None:
            raw = ehk.encode()
            ehk_field = self.ehk_fields[ehk] = b"\x10" + _varint(len(self.ehk_fields))
            ehk_entry = b"\x12" + _varint(len(raw)) + raw
        field = _PK_FIELD[index] if index < _TABLE_SIZE else b"\x08" + _encode_varint(index)
        dl = len(data)
        dlv = _varint(dl)
        fields = field + ehk_field
        inner = len(fields) + 1 + len(dlv) + dl
        return b"\x1a" + _varint(inner) + fields + b"\x1a" + dlv + data, ehk_entry

    def seal(self, tail: bytes, landing: bytes, shard_id: str) -> Entry:
        """The entry of what was added: an :class:`Aggregate` for ``shard_id``, or the
        only record as it is. ``tail`` is the first record's entry tail (its partition
        key's JSON after ``","PartitionKey":``, then ``}``), ``landing`` the end of an
        aggregate's entry (its explicit hash key)."""
        records = self.records
        if len(records) == 1:
            record = records[0]
            if not hasattr(record, "key"):  # (an aggregated record keeps no key)
                self._restore(record)
            return plain_entry(record, self.first, tail)
        table = self.table
        table += self.ehk_table
        table += self.parts
        blob = b"".join(table)
        blob += md5(memoryview(blob)[4:]).digest()
        fragment = b"".join((_DATA_HEAD, _b64(blob, newline=False), tail[:-1], landing))
        return Aggregate(
            records, fragment, len(blob) + self.outer, shard_id, records[-1].deadline, self.nbytes
        )

    def _restore(self, record: PendingRecord) -> None:
        """Give the only record its key, explicit hash key and size back."""
        (key, ehk, data), = _decode_one(self)
        record.key = key
        record.ehk = ehk
        record.size = len(data) + len(key.encode())


def _decode_one(agg: OpenAggregate) -> list[tuple[str, str | None, bytes]]:
    """The records of an open aggregate, decoded (a rare path)."""
    blob = b"".join([*agg.table, *agg.ehk_table, *agg.parts])
    blob += md5(memoryview(blob)[4:]).digest()
    decoded = deaggregate(blob)
    assert decoded is not None
    return decoded


def _varint(value: int) -> bytes:
    return _VARINT[value] if value < _TABLE_SIZE else _encode_varint(value)


def plain_entry(record: PendingRecord, data: bytes, tail: bytes) -> PendingRecord:
    """``record`` as an entry of its own: its fragment built from ``data`` and ``tail``."""
    if record.ehk is None:
        record.fragment = b"".join((_DATA_HEAD, _b64(data, newline=False), tail))
    else:
        record.fragment = encode_entry(data, tail[len(_KEY_HEAD) : -1], record.ehk)
    return record


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
