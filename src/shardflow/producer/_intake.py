"""Intake: turning ``put()`` arguments into records (validation, serialisation, sizes,
costs), the first step of every record (there is no second path).

:class:`RecordMaker` does all of ``put()``'s per-record work before the record joins the
queue, and raises the input errors (at the call, before anything is accepted). A key
seen before is looked up in a small cache (its encoded entry tail, its UTF-8 length, its
aggregate key-table entry) instead of being validated again. An unaggregated producer
builds the record's PutRecords entry here, once; an aggregating one keeps its data, to
be packed at once (unordered: into its lane's open aggregate) or when it is sent.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import orjson

from .. import errors
from .._validate import shown
from ..aggregation import _key_entry as table_entry
from ..limits import KinesisLimits
from ..shardmap import MAX_HASH_KEY, parse_explicit_hash_key
from ._records import PendingRecord
from ._transport import entry, key_tail, with_hash_key

__all__ = ["AGGREGATED_OVERHEAD", "ENTRY_OVERHEAD", "RECORD_OVERHEAD", "RecordMaker", "record_cost"]

ENTRY_OVERHEAD = 64
"""JSON punctuation of one PutRecords entry, beyond its data and key."""
RECORD_OVERHEAD = 320
"""Bytes of bookkeeping per queued record (its future and the entry's bytes object),
counted with the encoded entry against ``max_queue_bytes`` (measured on CPython 3.11)."""

_KEY_CACHE_SIZE = 4096
_BYTES_LIKE = (bytes, bytearray, memoryview)
AGGREGATED_OVERHEAD = ENTRY_OVERHEAD + RECORD_OVERHEAD
"""Beyond data and base64: what an aggregating producer's record costs (see record_cost)."""
_EMPTY_PAIR = (b"", b"")  # data.join(_EMPTY_PAIR): a compact copy of data
_dumps = orjson.dumps
_monotonic = time.monotonic


def record_cost(size: int, aggregate: bool) -> int:
    """The most bytes a record of ``size`` (data plus key) holds in memory, counted
    against ``max_queue_bytes``: its base64 entry and bookkeeping, plus its raw data when
    it waits to be packed (aggregate)."""
    b64 = 4 * math.ceil(size / 3) + ENTRY_OVERHEAD
    return b64 + RECORD_OVERHEAD + (size if aggregate else 0)


class RecordMaker:
    """Makes the :class:`PendingRecord` of one ``put()`` (``make``), or raises its input
    error: :class:`errors.InvalidPartitionKey`, :class:`errors.InvalidHashKey`,
    :class:`errors.RecordTooLarge`, :class:`errors.SerializationError`.

    ``loop`` must be set (the running loop) before the first record.
    """

    def __init__(
        self, limits: KinesisLimits, *, aggregate: bool, record_ttl: float, packed: bool = False
    ) -> None:
        self.max_record_bytes = limits.max_record_bytes
        """(a record larger than a request, ``limits.max_batch_bytes``, goes in a request
        of its own)"""
        self.max_key_chars = limits.max_partition_key_chars
        self.record_ttl = record_ttl
        self.loop: asyncio.AbstractEventLoop | None = None
        self.keys: dict[str, tuple[bytes, int, bytes]] = {}
        """Partition keys seen (valid): (the end of their entry, their UTF-8 bytes, their
        entry in an aggregate's key table)."""
        self.make = self._plain if not aggregate else self._packed if packed else self._aggregated
        """``packed``: the data is packed into an aggregate at once (the accumulator takes
        it from the record), so it is not copied."""

    def set_limits(self, limits: KinesisLimits) -> None:
        """Check records against ``limits`` from now on (the stream's own record size)."""
        self.max_record_bytes = limits.max_record_bytes

    def tail_of(self, key: str) -> bytes:
        """The end of an entry with partition key ``key`` (a key already accepted):
        ``","PartitionKey":"<key>"}``."""
        cached = self.keys.get(key)
        return (cached or self._key_entry(key))[0]

    def _plain(self, obj: Any, partition_key: str, explicit_hash_key: Any) -> PendingRecord:
        """A new record with its PutRecords entry (unaggregated producers)."""
        data = _data(obj)
        try:
            cached = self.keys.get(partition_key)
        except TypeError:  # unhashable: not a str
            cached = None
        tail, key_bytes, _ = cached or self._key_entry(partition_key)
        size = len(data) + key_bytes
        if size > self.max_record_bytes:
            raise self._too_large(data, key_bytes)
        record = PendingRecord(loop=self.loop)
        if explicit_hash_key is None:
            fragment = entry(data, tail)
            record.ehk = None
        else:
            ehk = record.ehk = _hash_key(explicit_hash_key)
            fragment = entry(data, with_hash_key(tail, ehk))
        record.fragment = fragment
        record.key = partition_key
        record.size = size
        record.cost = len(fragment) + RECORD_OVERHEAD
        record.deadline = _monotonic() + self.record_ttl
        return record

    def _aggregated(self, obj: Any, partition_key: str, explicit_hash_key: Any) -> PendingRecord:
        """A new record keeping its data, to be packed when sent (aggregating producers)."""
        data = _data(obj)
        if not isinstance(obj, _BYTES_LIKE):
            # orjson's result keeps a 4 KiB allocation alive: a record that waits to be
            # packed holds a compact copy instead (cheaper than the memory it saves)
            data = data.join(_EMPTY_PAIR)
        return self._keeping(data, partition_key, explicit_hash_key)

    def _packed(self, obj: Any, partition_key: str, explicit_hash_key: Any) -> PendingRecord:
        """A new record with its data, packed at once (unordered aggregating producers)."""
        return self._keeping(_data(obj), partition_key, explicit_hash_key)

    def _keeping(self, data: bytes, partition_key: str, explicit_hash_key: Any) -> PendingRecord:
        """A new record that keeps ``data`` (and its key) until it is packed."""
        key_bytes = self._key(partition_key)[1]
        size = len(data) + key_bytes
        if size > self.max_record_bytes:
            raise self._too_large(data, key_bytes)
        record = PendingRecord(loop=self.loop)
        record.ehk = None if explicit_hash_key is None else _hash_key(explicit_hash_key)
        record.data = data
        record.key = partition_key
        record.size = size
        record.cost = size + 4 * ((size + 2) // 3) + AGGREGATED_OVERHEAD
        record.deadline = _monotonic() + self.record_ttl
        return record

    def _key(self, partition_key: str) -> tuple[bytes, int, bytes]:
        """The cached entry of ``partition_key``, validated and cached on first use."""
        try:
            cached = self.keys.get(partition_key)
        except TypeError:  # unhashable: not a str
            cached = None
        return cached if cached is not None else self._key_entry(partition_key)

    def _too_large(self, data: bytes, key_bytes: int) -> errors.RecordTooLarge:
        return errors.RecordTooLarge(
            f"record is {len(data) + key_bytes} bytes (data {len(data)} + partition key "
            f"{key_bytes}), over the limit of {self.max_record_bytes} "
            "(limits.max_record_bytes: the stream's MaxRecordSizeInKiB unless limits= was given)"
        )

    def _key_entry(self, key: object) -> tuple[bytes, int, bytes]:
        """(the entry's tail with the key's JSON, the key's UTF-8 bytes, its aggregate key
        table entry), cached."""
        if not isinstance(key, str):
            raise errors.InvalidPartitionKey(f"partition_key must be a str, got {shown(key)}")
        try:
            encoded = key.encode()
            key_json = orjson.dumps(key)
        except (UnicodeEncodeError, TypeError) as exc:
            raise errors.InvalidPartitionKey(f"partition_key is not valid Unicode: {exc}") from exc
        # AWS counts a key's length in UTF-16 code units: a character outside the Basic
        # Multilingual Plane (4 bytes in UTF-8) counts twice
        units = len(key)
        if len(encoded) > units:
            units += sum(1 for c in key if c > "\uffff")
        if not key or units > self.max_key_chars:
            raise errors.InvalidPartitionKey(
                f"partition_key must have 1 to {self.max_key_chars} characters (UTF-16 code "
                f"units, as AWS counts them), got {units}"
            )
        if len(self.keys) >= _KEY_CACHE_SIZE:
            self.keys.clear()
        cached = self.keys[key] = (key_tail(key_json), len(encoded), table_entry(key))
        return cached


def _data(obj: Any) -> bytes:
    """The record's data: bytes as they are, other bytes-like objects copied, a str as
    its UTF-8 bytes (as boto3 sends it: ``put(json.dumps(event))`` stores the JSON, not a
    JSON string literal), anything else serialised to JSON by orjson
    (:class:`errors.SerializationError` if it cannot)."""
    if type(obj) is bytes:
        return obj
    if type(obj) is dict:
        try:
            return _dumps(obj)
        except TypeError:
            return _serialise(obj)  # raises SerializationError
    if isinstance(obj, _BYTES_LIKE):
        return bytes(obj)
    if isinstance(obj, str):
        try:
            return obj.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate
            raise errors.SerializationError(f"cannot encode the str as UTF-8: {exc}") from exc
    try:
        return _dumps(obj)
    except TypeError:
        return _serialise(obj)  # raises SerializationError


def _serialise(obj: Any) -> bytes:
    try:
        return _dumps(obj)
    except TypeError as exc:
        raise errors.SerializationError(
            f"cannot serialise {type(obj).__name__} as JSON: {exc}"
        ) from exc


def _hash_key(value: object) -> str:
    """The explicit hash key as AWS wants it: a decimal string in [0, 2**128)."""
    if type(value) is int:
        if not 0 <= value <= MAX_HASH_KEY:  # (and no str() of an int of 5,000 digits)
            raise errors.InvalidHashKey(
                f"explicit_hash_key must be in [0, 2**128), got {shown(value)}"
            )
        value = str(value)
    text = value
    parse_explicit_hash_key(text)  # type: ignore[arg-type]  # raises InvalidHashKey
    return text  # type: ignore[return-value]
