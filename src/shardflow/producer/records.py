"""What travels through the producer: user records (each its own delivery future) and
the KPL aggregates that carry several of them as one Kinesis record.

A PutRecords request is a list of *entries*: a :class:`PendingRecord` sent on its own,
or an :class:`Aggregate` of records packed for one shard. Both have the ``fragment``
(the entry's JSON object as it goes into the request body), ``size`` (what AWS counts:
data plus partition key), ``deadline`` and ``shard`` (the predicted shard) the sender
needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ..models import PutResult as _put_result

if TYPE_CHECKING:
    from ..models import Attempt, PutResult

__all__ = ["Aggregate", "Entry", "PendingRecord"]

_deadline = attrgetter("deadline")


class PendingRecord(asyncio.Future["PutResult"]):
    """One accepted record, and the future of its delivery, in one object.

    ``put()`` hands this future to the caller. It carries the encoded record and the
    bookkeeping of the record, so each record costs one tracked object (which keeps the
    garbage collector's work per record low). Its :class:`PutResult` is built when first
    asked for.
    """

    __slots__ = (
        "_sequence_number",
        "_shard_id",
        "_sub",
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
        "tries",
    )

    fragment: bytes
    """The entry's JSON object, as it goes into the request body (unaggregated producers
    build it at ``put()``; aggregating ones only when the record goes on its own)."""
    data: bytes
    """The record's raw data (aggregating producers only, for packing)."""
    key: str
    ehk: str | None
    """The explicit hash key (decimal string), or None."""
    size: int
    """Data plus partition key bytes: what AWS counts against request and shard limits."""
    cost: int
    """Bytes held in memory (payload plus bookkeeping), counted against ``max_queue_bytes``."""
    deadline: float
    """When ``record_ttl`` runs out (``time.monotonic()`` seconds)."""
    attempts: list[Attempt] | None
    """Failed tries so far (None until the first failure)."""
    tries: tuple[Attempt, ...]
    epoch: int
    shard: str | None
    """Predicted shard id (None for a key no open shard holds; without a shard map, None
    for ordered producers and unset for others)."""
    _shard_id: str
    _sequence_number: str
    _sub: int

    def deliver(
        self, shard_id: str, sequence_number: str, tries: tuple[Attempt, ...], sub: int = -1
    ) -> None:
        """Resolve as delivered (no-op if the caller cancelled the future); ``sub`` is the
        index inside an aggregate, -1 for a record sent on its own."""
        if not self.done():
            self._shard_id = shard_id
            self._sequence_number = sequence_number
            if sub >= 0:
                self._sub = sub
            self.tries = tries
            self.set_result(None)  # type: ignore[arg-type]  # built by result()

    def result(self) -> PutResult:
        """The :class:`PutResult`; raises like :meth:`asyncio.Future.result`.

        Built on demand (a new, equal value each call), so records whose results are
        never read cost no result object.
        """
        try:
            shard_id = self._shard_id
        except AttributeError:  # failed, cancelled or pending: the base class raises
            super().result()
            raise AssertionError("unreachable") from None
        sub = getattr(self, "_sub", None)
        return _put_result(shard_id, self._sequence_number, sub, self.tries)

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

    __slots__ = ("deadline", "fragment", "records", "shard", "size")

    def __init__(
        self, records: list[PendingRecord], fragment: bytes, size: int, shard: str
    ) -> None:
        self.records = records
        self.fragment = fragment
        self.size = size
        """Bytes AWS counts: the aggregate's data plus the outer partition key."""
        self.shard: str | None = shard
        self.deadline = max(map(_deadline, records))
        """The latest deadline of its records (bounds the request's timeout)."""

    def __repr__(self) -> str:
        return f"<Aggregate of {len(self.records)} records for {self.shard}, {self.size} bytes>"


Entry = PendingRecord | Aggregate
"""One entry of a PutRecords request."""
