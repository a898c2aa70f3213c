"""The KPL aggregated-record codec, shared by the producer and the consumer.

An aggregate packs many user records into one Kinesis record in the format of the AWS
Kinesis Producer Library, which the KCL, AWS Lambda and ``aws-kinesis-agg`` understand::

    F3 89 9A C2 | protobuf AggregatedRecord | MD5(protobuf bytes), 16 bytes

    message AggregatedRecord {
      repeated string partition_key_table     = 1;
      repeated string explicit_hash_key_table = 2;
      repeated Record records                 = 3;
    }
    message Record {
      required uint64 partition_key_index     = 1;
      optional uint64 explicit_hash_key_index = 2;
      required bytes  data                    = 3;
      repeated Tag    tags                    = 4;   // Tag {required key = 1; optional value = 2}
    }

Encoding and decoding are written by hand (proto2 wire format, no protobuf dependency:
the primitives are in ``_core.protobuf``, the parser in ``_core.aggregate_parser``) and
tuned for CPython: varints come from a precomputed table, every piece is joined once,
sizes are kept by arithmetic. Encoding writes the key tables first, then the records, as
protobuf serialisers do; decoding accepts any field order, unknown fields and
non-canonical varints, like a protobuf parser. With protobuf's C parser installed (the
``protobuf`` extra), decoding uses it where its answer is the same, at about half the
cost per record.

The partition keys and explicit hash keys are deduplicated into the tables. Tags are never
written; on decoding they are checked (a tag needs its key) and dropped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from ._core import protobuf as _protobuf
from ._core.aggregate_parser import parse_aggregated_record
from ._core.protobuf import varint as _varint
from ._core.protobuf import varint_len as _varint_len
from ._core.validate import shown

__all__ = [
    "MAGIC",
    "AggregateBuilder",
    "UserRecord",
    "aggregate",
    "aggregated_size",
    "deaggregate",
    "is_aggregated",
]

MAGIC = b"\xf3\x89\x9a\xc2"
"""The four bytes every KPL aggregate starts with."""

DIGEST_SIZE = 16
"""Bytes of the MD5 trailer."""

OVERHEAD = len(MAGIC) + DIGEST_SIZE
"""Bytes an aggregate adds around its protobuf message."""

DEFAULT_MAX_BYTES = 51_200
"""The KPL's default aggregate size limit (50 KiB)."""

UserRecord = tuple[str, "str | None", bytes]
"""(partition_key, explicit_hash_key or None, data)."""

_md5 = hashlib.md5

# The producer packs records itself with _VARINT, _TABLE_SIZE, _encode_varint, _PK_FIELD,
# _ENTRIES and _key_entry: keep those names (assigned, so that they are exported).
_VARINT = _protobuf.VARINT
_TABLE_SIZE = _protobuf.VARINT_TABLE_SIZE
_encode_varint = _protobuf.encode_varint

# The encoders spell protobuf tags as literals:
# 0x0A partition_key_table, 0x12 explicit_hash_key_table, 0x1A records in AggregatedRecord;
# 0x08 partition_key_index, 0x10 explicit_hash_key_index, 0x1A data in Record.

# Encoded partition_key_index fields (b"\x08" + varint(n)), by index.
_PK_FIELD: tuple[bytes, ...] = tuple(b"\x08" + v for v in _VARINT)


# Encoded partition-key table entries (b"\x0a" + varint(length) + UTF-8), shared by every
# builder: the same keys come back aggregate after aggregate. Bounded; a plain dict, whose
# single operations are atomic, so builders in several threads may share it.
_ENTRIES: dict[str, bytes] = {}
_ENTRIES_LIMIT = 4096


def _key_entry(pk: str) -> bytes:
    """The partition-key table entry of ``pk`` (cached). Raises as ``_key_bytes``."""
    raw = _key_bytes(pk, "partition_key")
    n = len(raw)
    entry = b"\x0a%b%b" % (_VARINT[n] if n < _TABLE_SIZE else _encode_varint(n), raw)
    if len(_ENTRIES) >= _ENTRIES_LIMIT:
        _ENTRIES.clear()
    _ENTRIES[pk] = entry
    return entry


def _as_bytes(data: object) -> bytes:
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"record data must be bytes, got {type(data).__name__}")


def _key_bytes(key: object, what: str) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"{what} must be a str, got {type(key).__name__}")
    return key.encode()


# --- encoding ---------------------------------------------------------------------------


class AggregateBuilder:
    """Builds one aggregate record by record, keeping its exact encoded size.

    ``size`` is always the exact length :meth:`build` would return now (magic, protobuf
    and MD5 included); :meth:`size_if_added` is the exact size after one more record.
    :meth:`add` never refuses a record; :meth:`try_add` refuses one that would take the
    aggregate over ``max_bytes`` (a caller sends such a record on its own). The index a
    record gets is its sub-sequence number once the aggregate is in the stream.

    Not thread-safe; meant to be filled by one task.
    """

    __slots__ = (
        "_body",
        "_ehk_fields",
        "_ehk_table",
        "_first_key",
        "_parts",
        "_pk_fields",
        "_pk_table",
        "max_bytes",
    )

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool):
            raise TypeError(f"max_bytes must be an int, got {shown(max_bytes)}")
        if max_bytes <= OVERHEAD:
            raise ValueError(f"max_bytes must be more than {OVERHEAD}, got {shown(max_bytes)}")
        self.max_bytes = max_bytes
        self.clear()

    def clear(self) -> None:
        """Forget every record: the builder is empty and reusable."""
        # key -> encoded index field (b"\x08" + varint(index)), and the table entries.
        self._pk_fields: dict[str, bytes] = {}
        self._pk_table: list[bytes] = []
        self._ehk_fields: dict[str, bytes] = {}
        self._ehk_table: list[bytes] = []
        # Alternating record header (tag, length, key indexes, data tag+length) and data.
        self._parts: list[bytes] = []
        self._body = 0  # bytes of the protobuf message
        self._first_key: str | None = None

    @property
    def size(self) -> int:
        """Exact encoded size of the aggregate as it stands."""
        return self._body + OVERHEAD

    @property
    def partition_key(self) -> str | None:
        """The first record's partition key (the one the outer record carries), or None."""
        return self._first_key

    def __len__(self) -> int:
        return len(self._parts) >> 1

    def __bool__(self) -> bool:
        return bool(self._parts)

    def __repr__(self) -> str:
        return f"<AggregateBuilder records={len(self)} size={self.size}/{self.max_bytes}>"

    def size_if_added(self, partition_key: str, explicit_hash_key: str | None, data: bytes) -> int:
        """Exact encoded size of the whole aggregate if this record were added."""
        grow = 0
        pk_field = self._pk_fields.get(partition_key)
        if pk_field is None:
            n = len(_key_bytes(partition_key, "partition_key"))
            grow += 1 + _varint_len(n) + n
            fields = 1 + _varint_len(len(self._pk_fields))
        else:
            fields = len(pk_field)
        if explicit_hash_key is not None:
            ehk_field = self._ehk_fields.get(explicit_hash_key)
            if ehk_field is None:
                n = len(_key_bytes(explicit_hash_key, "explicit_hash_key"))
                grow += 1 + _varint_len(n) + n
                fields += 1 + _varint_len(len(self._ehk_fields))
            else:
                fields += len(ehk_field)
        dl = len(data) if type(data) is bytes else len(_as_bytes(data))
        inner = fields + 1 + _varint_len(dl) + dl
        return self._body + grow + 1 + _varint_len(inner) + inner + OVERHEAD

    def add(self, partition_key: str, explicit_hash_key: str | None, data: bytes) -> int:
        """Add a record whatever the resulting size; return its index (sub-sequence number).

        Raises TypeError for a key that is not a str or data that is not bytes-like, and
        UnicodeEncodeError (a ValueError) for a key that is not encodable as UTF-8.
        """
        return self._append(partition_key, explicit_hash_key, data, -1)

    def try_add(self, partition_key: str, explicit_hash_key: str | None, data: bytes) -> int:
        """Add a record if the aggregate stays within ``max_bytes``; return its index, or -1
        (and change nothing) when it would not fit. Raises as :meth:`add`."""
        return self._append(partition_key, explicit_hash_key, data, self.max_bytes - OVERHEAD)

    def add_all(self, partition_keys: Sequence[str], datas: Sequence[bytes]) -> int:
        """Add records without explicit hash keys, in order, while the aggregate stays
        within ``max_bytes``; return how many were added (a prefix of the input).

        :meth:`try_add` for each record until one is refused. Raises ValueError when the
        two sequences differ in length (nothing added), otherwise as :meth:`add` (records
        before the bad one stay added).
        """
        if len(partition_keys) != len(datas):
            raise ValueError(
                f"add_all takes as many partition keys as datas, got {len(partition_keys)} "
                f"and {len(datas)}"
            )
        limit = self.max_bytes - OVERHEAD
        append = self._append
        added = 0
        for pk, data in zip(partition_keys, datas, strict=True):
            if append(pk, None, data, limit) < 0:
                break
            added += 1
        return added

    def _append(self, pk: str, ehk: str | None, data: bytes, limit: int) -> int:
        # The hot path: one dict lookup per key, one header, two list appends; table
        # lookups instead of varint encoding; nothing committed until the size is known.
        if type(data) is not bytes:
            data = _as_bytes(data)
        pk_fields = self._pk_fields
        pk_field = pk_fields.get(pk)
        if pk_field is None:
            new_pk = _ENTRIES.get(pk) or _key_entry(pk)
            n = len(pk_fields)
            pk_field = _PK_FIELD[n] if n < _TABLE_SIZE else b"\x08" + _encode_varint(n)
            grow = len(new_pk)
        else:
            new_pk = None
            grow = 0
        new_ehk = None
        if ehk is None:
            fields = pk_field
        else:
            ehk_field = self._ehk_fields.get(ehk)
            if ehk_field is None:
                raw = _key_bytes(ehk, "explicit_hash_key")
                ehk_field = b"\x10" + _varint(len(self._ehk_fields))
                new_ehk = (ehk, ehk_field, b"\x12" + _varint(len(raw)) + raw)
                grow += len(new_ehk[2])
            fields = pk_field + ehk_field
        dl = len(data)
        dlv = _VARINT[dl] if dl < _TABLE_SIZE else _encode_varint(dl)
        n = len(fields) + 1 + len(dlv) + dl
        header = b"\x1a%b%b\x1a%b" % (
            _VARINT[n] if n < _TABLE_SIZE else _encode_varint(n),
            fields,
            dlv,
        )
        grow += len(header) + dl
        if 0 <= limit < self._body + grow:
            return -1
        if new_pk is not None:
            pk_fields[pk] = pk_field
            self._pk_table.append(new_pk)
            if self._first_key is None:
                self._first_key = pk
        if new_ehk is not None:
            self._ehk_fields[new_ehk[0]] = new_ehk[1]
            self._ehk_table.append(new_ehk[2])
        parts = self._parts
        parts.append(header)
        parts.append(data)
        self._body += grow
        return (len(parts) >> 1) - 1

    def build(self) -> bytes:
        """The encoded aggregate (the builder is left as is; call :meth:`clear` to reuse).

        Raises ValueError when the builder is empty: an aggregate without records is not
        recognised as one by KPL consumers.
        """
        if not self._parts:
            raise ValueError("cannot build an aggregate without records")
        blob = b"".join([MAGIC, *self._pk_table, *self._ehk_table, *self._parts])
        return blob + _md5(memoryview(blob)[len(MAGIC) :]).digest()


def aggregate(records: Iterable[UserRecord]) -> bytes:
    """Encode ``(partition_key, explicit_hash_key or None, data)`` records as one aggregate.

    Keys are deduplicated into the tables; records keep their order (record *i* gets
    sub-sequence number *i*). Raises ValueError for no records, TypeError for values of
    the wrong type.
    """
    builder = AggregateBuilder()
    add = builder.add
    for pk, ehk, data in records:
        add(pk, ehk, data)
    return builder.build()


def aggregated_size(records: Iterable[UserRecord]) -> int:
    """The exact length of ``aggregate(records)``, computed without encoding the data."""
    pk_index: dict[str, int] = {}
    ehk_index: dict[str, int] = {}
    size = OVERHEAD
    for pk, ehk, data in records:
        index = pk_index.get(pk)
        if index is None:
            index = pk_index[pk] = len(pk_index)
            n = len(_key_bytes(pk, "partition_key"))
            size += 1 + _varint_len(n) + n
        inner = 1 + _varint_len(index)
        if ehk is not None:
            index = ehk_index.get(ehk)
            if index is None:
                index = ehk_index[ehk] = len(ehk_index)
                n = len(_key_bytes(ehk, "explicit_hash_key"))
                size += 1 + _varint_len(n) + n
            inner += 1 + _varint_len(index)
        dl = len(data) if type(data) is bytes else len(_as_bytes(data))
        inner += 1 + _varint_len(dl) + dl
        size += 1 + _varint_len(inner) + inner
    return size


# --- decoding ---------------------------------------------------------------------------


def is_aggregated(blob: bytes) -> bool:
    """True when ``blob`` starts with the aggregate magic (a cheap check, no MD5)."""
    return blob[:4] == MAGIC and len(blob) > OVERHEAD


def deaggregate(blob: bytes) -> list[tuple[str, str | None, bytes]] | None:
    """The ``(partition_key, explicit_hash_key or None, data)`` records of an aggregate.

    Returns None when ``blob`` is not a valid aggregate: no magic, bad MD5, malformed
    protobuf, missing required field (the caller then treats the blob as plain data, as
    the KCL's ``AggregatorUtil.deaggregate`` does), or a key index beyond its table (plain
    data too, so nothing is lost; the KCL logs an error there and keeps only the
    sub-records before the bad one). Invalid UTF-8 in a key is replaced (U+FFFD), as
    Java's protobuf does. Never raises on any bytes; raises TypeError only if ``blob`` is
    not bytes-like.
    """
    if type(blob) is not bytes:
        blob = _as_bytes(blob)
    end = len(blob) - DIGEST_SIZE
    if end <= 4 or blob[:4] != MAGIC:
        return None
    if _md5(memoryview(blob)[4:end]).digest() != blob[end:]:
        return None
    try:
        return parse_aggregated_record(blob, 4, end)
    except (IndexError, ValueError):  # read past the end, bad varint, bad UTF-8
        return None
