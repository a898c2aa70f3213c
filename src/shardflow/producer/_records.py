"""What travels through the producer: user records (each its own delivery future), the
KPL aggregates that carry several of them as one Kinesis record, and where they landed.

A PutRecords request is a list of *entries*: a :class:`PendingRecord` sent on its own,
or an :class:`Aggregate` of records packed for one shard. Both have the ``fragment``
(the entry's JSON object as it goes into the request body), ``size`` (what AWS counts:
data plus partition key), ``deadline`` and ``shard`` (the predicted shard) the sender
needs.

A delivered record keeps one reference to where it landed: a :class:`Landing` (one
Kinesis record: an aggregate, or a record sent on its own) or an :class:`Answer` (the
PutRecords answer of records sent on their own, read only when a result is asked for),
and its position in it. Its :class:`PutResult` is built from those on demand, so a
record whose result is never read costs no result object and no strings of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from itertools import repeat
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import orjson

from ..aggregation import deaggregate
from ..models import _put_result
from ._transport import entry_data

if TYPE_CHECKING:
    from ..models import Attempt, PutResult

__all__ = ["Aggregate", "Answer", "Entry", "Landing", "PendingRecord", "deliver", "positions"]

_deadline = attrgetter("deadline")
_size = attrgetter("size")

_POSITIONS: tuple[int, ...] = tuple(range(8192))


def positions(n: int) -> Sequence[int]:
    """0 to ``n - 1``, as shared int objects when there are not too many: zipping with
    this instead of enumerating gives each record a shared int, not one of its own."""
    return _POSITIONS if n <= len(_POSITIONS) else range(n)


class Landing:
    """One Kinesis record that was written: its shard, its sequence number, and the try
    that wrote it. The records inside it point here with their index."""

    __slots__ = ("ok", "sequence_number", "shard_id")

    def __init__(self, shard_id: str, sequence_number: str, ok: Attempt) -> None:
        self.shard_id = shard_id
        self.sequence_number = sequence_number
        self.ok = ok

    def put_result(self, position: int, attempts: list[Attempt] | None) -> PutResult:
        """The result of the record at ``position`` (its sub-sequence number; -1 for a
        record sent on its own)."""
        tries = (self.ok,) if attempts is None else (*attempts, self.ok)
        sub = position if position >= 0 else None
        return _put_result(self.shard_id, self.sequence_number, sub, tries)


class Answer:
    """A PutRecords answer (its raw JSON), read entry by entry only when a result of one
    of its records is asked for: records sent on their own point here with their entry's
    index. The answer was checked when it came (every entry it is asked about holds a
    shard id and a sequence number)."""

    __slots__ = ("_raw", "_results", "ok")

    def __init__(self, raw: bytes, ok: Attempt) -> None:
        self._raw = raw
        self._results: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None
        self.ok = ok

    def put_result(self, position: int, attempts: list[Attempt] | None) -> PutResult:
        results = self._results
        if results is None:
            # Kept as two tuples of strings (None for a failed entry), not the answer's
            # entry dicts: those would outlive the call, one per record, for the garbage
            # collector to scan again and again (most of what reading every result cost).
            entries = orjson.loads(self._raw)["Records"]
            results = self._results = (
                tuple(map(dict.get, entries, repeat("ShardId"))),
                tuple(map(dict.get, entries, repeat("SequenceNumber"))),
            )
            self._raw = b""
        tries = (self.ok,) if attempts is None else (*attempts, self.ok)
        return _put_result(results[0][position], results[1][position], None, tries)


class PendingRecord(asyncio.Future["PutResult"]):
    """One accepted record, and the future of its delivery, in one object.

    ``put()`` hands this future to the caller. It carries the encoded record and the
    bookkeeping of the record, so each record costs one tracked object (which keeps the
    garbage collector's work per record low). Its :class:`PutResult` is built when first
    asked for.
    """

    __slots__ = (
        "_pos",
        "_res",
        "attempts",
        "cost",
        "data",
        "deadline",
        "ehk",
        "epoch",
        "fragment",
        "key",
        "shard",
        "size",
    )

    fragment: bytes
    """The entry's JSON object, as it goes into the request body, while the record waits
    to be sent on its own (unaggregated producers build it at ``put()``)."""
    data: bytes
    """The record's raw data, while it waits to be packed into an aggregate at send
    time (ordered aggregating producers; records of a failed aggregate)."""
    key: str
    ehk: str | None
    """The explicit hash key (decimal string), or None."""
    size: int
    """Data plus partition key bytes: what AWS counts against request and shard limits."""
    cost: int
    """Bytes held in memory (payload plus bookkeeping), counted against ``max_queue_bytes``."""
    deadline: float
    """When ``record_ttl`` runs out (``time.monotonic()`` seconds)."""
    attempts: list[Attempt]
    """Failed tries so far (unset until the first failure)."""
    epoch: int
    shard: str | None
    """Predicted shard id (None for a key no open shard holds; without a shard map, None
    for ordered producers and unset for others)."""
    _res: Landing | Answer
    """Where the record landed (set when delivered)."""
    _pos: int
    """Its index there: sub-record index in a Landing (-1: sent on its own), entry index
    in an Answer."""

    def result(self) -> PutResult:
        """The :class:`PutResult`; raises like :meth:`asyncio.Future.result`.

        Built on demand (a new, equal value each call), so records whose results are
        never read cost no result object.
        """
        super().result()  # raises if failed, cancelled or pending
        return self._res.put_result(self._pos, getattr(self, "attempts", None))

    def __await__(self) -> Generator[Any, None, PutResult]:
        if not self.done():
            self._asyncio_future_blocking = True
            yield self
        if not self.done():
            raise RuntimeError("await wasn't used with future")
        return self.result()

    __iter__ = __await__


class Aggregate:
    """A KPL aggregate of records packed for one shard: one Kinesis record.

    Sub-record *i* is ``records[i]`` (its sub-sequence number once written). The outer
    record carries the first record's partition key and an explicit hash key that lands
    it on ``shard``. Its records share its fate: delivered together, retried together.
    """

    __slots__ = ("deadline", "fragment", "nbytes", "records", "shard", "size")

    def __init__(
        self,
        records: list[PendingRecord],
        fragment: bytes,
        size: int,
        shard: str,
        deadline: float | None = None,
        nbytes: int | None = None,
    ) -> None:
        self.records = records
        self.fragment = fragment
        self.size = size
        """Bytes AWS counts: the aggregate's data plus the outer partition key."""
        self.shard: str | None = shard
        self.deadline = max(map(_deadline, records)) if deadline is None else deadline
        """The latest deadline of its records (bounds the request's timeout)."""
        self.nbytes = sum(map(_size, records)) if nbytes is None else nbytes
        """Its records' bytes (data and partition keys)."""

    def unpack(self) -> list[PendingRecord]:
        """Give every record its data back (and its key, explicit hash key and size, which
        records packed at ``put()`` do not keep), decoded from the entry, for packing
        again; return the records."""
        records = self.records
        if not hasattr(records[0], "data"):
            decoded = deaggregate(entry_data(self.fragment))
            assert decoded is not None
            assert len(decoded) == len(records)
            for record, (key, ehk, data) in zip(records, decoded, strict=True):
                record.data = data
                record.key = key
                record.ehk = ehk
                record.size = len(data) + len(key.encode())
        return records

    def __repr__(self) -> str:
        return f"<Aggregate of {len(self.records)} records for {self.shard}, {self.size} bytes>"


Entry = PendingRecord | Aggregate
"""One entry of a PutRecords request."""


def deliver(
    records: list[PendingRecord],
    where: Answer | Landing,
    indexes: Sequence[int] | None = None,
) -> None:
    """Resolve ``records`` as delivered at ``where``, record *i* at index ``indexes[i]``
    there (default: its place in ``records``); their entries are let go. A record whose
    caller cancelled its future stays cancelled."""
    at = positions(len(records)) if indexes is None else indexes
    for record, position in zip(records, at, strict=False):
        record._res = where
        record._pos = position
        record.fragment = b""
        try:
            record.set_result(None)  # type: ignore[arg-type]  # see PendingRecord
        except asyncio.InvalidStateError:  # the caller cancelled it
            pass
