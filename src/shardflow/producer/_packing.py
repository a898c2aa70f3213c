"""Packing records into KPL aggregates and PutRecords entries (the JSON itself is
written by :mod:`._transport`).

Unordered aggregating producers pack records as they are put: each lane of the
accumulator has at most one :class:`OpenAggregate`, which encodes each record as it is
added (one protobuf ``Record`` with its data, one key table entry for a key new to the
aggregate), and is sealed when the next record would take it past
``max_aggregate_bytes``, or when a batch takes it: the MD5 and the base64 of an aggregate
are computed once, then. A record too large for an aggregate, or alone in one, goes on
its own (:func:`plain_entry`). :data:`HEADERS` caches the bytes before a record's data
per key index and data length, so encoding a record is one lookup and one concatenation.

Ordered producers keep their records per key; :class:`Packer` packs the ready keys' next
records when a batch is cut (``pack_runs``), so that a key's records share one entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from hashlib import md5

import orjson

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
from ._records import Aggregate, Entry, PendingRecord
from ._transport import entry, key_tail, with_hash_key

__all__ = [
    "HEADERS",
    "HEADER_INDEXES",
    "OpenAggregate",
    "Packer",
    "Run",
    "header",
    "plain_entry",
]

Run = tuple[str, Sequence[PendingRecord]]
"""(partition key, its next records for the lane): an ordered key's records that may
share one entry, oldest first."""
_dumps = orjson.dumps



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
        if index is None:
            index = len(fields)
            entry = _ENTRIES.get(key) or _key_entry(key)
        else:
            entry = b""
        ehk_entry = b""
        if record.ehk is None:
            dl = len(data)
            part = (
                (HEADERS[index].get(dl) if index < _TABLE_SIZE else None) or header(index, dl)
            ) + data
            body = self.body + len(part) + len(entry)
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

    def seal(self, tail: bytes, landing: str | None, shard_id: str) -> Entry:
        """The entry of what was added: an :class:`Aggregate` for ``shard_id``, or the
        only record as it is. ``tail`` is the first record's entry tail (its partition
        key's JSON after ``","PartitionKey":``, then ``}``), ``landing`` the end of an
        shard's starting hash key, which lands the aggregate there (None: none)."""
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
        fragment = entry(blob, tail if landing is None else with_hash_key(tail, landing))
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
    ehk = record.ehk
    record.fragment = entry(data, tail if ehk is None else with_hash_key(tail, ehk))
    return record


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
            record.fragment = entry(record.data, key_tail(_dumps(record.key), record.ehk))
        return record

    def _close(
        self,
        shard_id: str,
        landing: str | None,
        builder: AggregateBuilder,
        members: list[PendingRecord],
    ) -> Entry:
        if len(members) == 1:
            return self._plain(members[0])
        key = members[0].key
        blob = builder.build()
        fragment = entry(blob, key_tail(_dumps(key), landing))
        size = len(blob) + members[0].size - len(members[0].data)
        return Aggregate(members, fragment, size, shard_id)

    def _limit(self, head: PendingRecord, room: int) -> int:
        """The largest aggregate whose outer record (head's key included) fits ``room``."""
        key_bytes = head.size - len(head.data)
        return min(self.max_aggregate_bytes, self.max_record_bytes, room) - key_bytes

    def pack_runs(
        self,
        shard_id: str | None,
        landing: str | None,
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
        aggregating = bool(self.max_aggregate_bytes) and shard_id is not None
        shard = shard_id or ""  # (aggregates are made only for a known shard)
        taken: list[tuple[str, int]] = []
        entries = used = 0
        builder: AggregateBuilder | None = None
        members: list[PendingRecord] = []
        for key, run in runs:
            n = 0
            if builder is not None:
                n = _fill(builder, run, members)
                if not n:
                    entry = self._close(shard, landing, builder, members)
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
            out.append(self._close(shard, landing, builder, members))
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
