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
import time
from typing import Any

import orjson

from .. import errors
from .._core.validate import shown
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
    held = 4 * ((size + 2) // 3) + ENTRY_OVERHEAD + RECORD_OVERHEAD  # base64: ceil(size / 3)
    return held + size if aggregate else held


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
        self._aggregate = aggregate
        self._copy = aggregate and not packed
        """Records wait with their data until sent (``packed``: the accumulator packs it
        into an aggregate at once, so it is not copied)."""

    def set_limits(self, limits: KinesisLimits) -> None:
        """Check records against ``limits`` from now on (the stream's own record size)."""
        self.max_record_bytes = limits.max_record_bytes

    def tail_of(self, key: str) -> bytes:
        """The end of an entry with partition key ``key`` (a key already accepted):
        ``","PartitionKey":"<key>"}``."""
        cached = self.keys.get(key)
        return (cached or self._key_entry(key))[0]

    def make(self, obj: Any, partition_key: str, explicit_hash_key: Any) -> PendingRecord:
        """A new record of ``put(obj, partition_key, explicit_hash_key=...)``: with its
        PutRecords entry (unaggregated producers), or keeping its data until it is packed
        (aggregating ones). Raises the input errors (see the class)."""
        try:
            data = _dumps(obj) if type(obj) is dict else _data(obj)
        except errors.SerializationError:
            raise
        except TypeError as exc:
            raise errors.SerializationError(
                f"cannot serialise {type(obj).__name__} as JSON: {exc}"
            ) from exc
        try:
            cached = self.keys.get(partition_key)
        except TypeError:  # unhashable: not a str
            cached = None
        tail, key_bytes, _ = cached or self._key_entry(partition_key)
        size = len(data) + key_bytes
        if size > self.max_record_bytes:
            raise self._too_large(data, key_bytes)
        record = PendingRecord(loop=self.loop)
        ehk = record.ehk = None if explicit_hash_key is None else _hash_key(explicit_hash_key)
        record.key = partition_key
        record.size = size
        record.deadline = _monotonic() + self.record_ttl
        if self._aggregate:
            if self._copy and not isinstance(obj, _BYTES_LIKE):
                # orjson's result keeps a 4 KiB allocation alive: a record that waits to be
                # packed when sent holds a compact copy instead (cheaper than the memory)
                data = data.join(_EMPTY_PAIR)
            record.data = data
            record.cost = record_cost(size, True)
        else:
            fragment = record.fragment = entry(
                data, tail if ehk is None else with_hash_key(tail, ehk)
            )
            record.cost = len(fragment) + RECORD_OVERHEAD  # (what it holds, exactly)
        return record

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
    JSON string literal), anything else serialised to JSON by orjson (``TypeError`` if
    it cannot: :meth:`RecordMaker.make` raises :class:`errors.SerializationError`).
    (:meth:`RecordMaker.make` serialises a dict, the commonest, without this call.)"""
    if type(obj) is bytes:
        return obj
    if isinstance(obj, _BYTES_LIKE):
        return bytes(obj)
    if isinstance(obj, str):
        try:
            return obj.encode()
        except UnicodeEncodeError as exc:  # a lone surrogate
            raise errors.SerializationError(f"cannot encode the str as UTF-8: {exc}") from exc
    return _dumps(obj)


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
