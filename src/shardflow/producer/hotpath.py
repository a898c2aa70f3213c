"""The producer's hot path: one call that accepts a record of a key seen before.

:meth:`Producer.put` and :meth:`Producer.put_nowait` first try the producer's fast path
(:class:`HotPath`, a base class of :class:`Producer`): a record of a partition key seen
before (so valid, and cached by :class:`.encoding.RecordMaker`), dict, bytes or str data, no
explicit hash key, room in the queue, and, when aggregating, an open aggregate for its
shard. It does what ``RecordMaker.make()``, ``Ledger.try_admit()`` and
``Accumulator.add()`` (with ``OpenAggregate.add()``) do, in one go, inline: no call per
record but the serialisation and the encoding. ``None`` means "not this record": the
general path then does it (and raises what must be raised). Any change to what those
do must be made here too.

- :meth:`HotPath._fast_plain`: records sent on their own (their entry is encoded now);
- :meth:`HotPath._fast_packed`: unordered aggregation (the record is encoded into its
  lane's open aggregate, which keeps its key, hash key and size for it);
- :func:`no_fast`: ordered aggregation, which has no hot path.
"""

from __future__ import annotations

import asyncio
import binascii
import time
from typing import TYPE_CHECKING, Any

import orjson

from .encoding import AGGREGATED_OVERHEAD, RECORD_OVERHEAD
from .open_aggregate import HEADER_INDEXES, HEADERS, header
from .records import PendingRecord

if TYPE_CHECKING:
    from .accumulator import Accumulator
    from .ledger import Ledger
    from .sender import Sender

__all__ = ["HotPath", "no_fast"]

_b64 = binascii.b2a_base64
_dumps = orjson.dumps
_join = b"".join
_monotonic = time.monotonic
_DATA_HEAD = b'{"Data":"'


def no_fast(obj: Any, partition_key: str) -> None:
    """The hot path of producers that have none (ordered aggregation): the general one."""
    return None


class HotPath:
    """The fast paths of :class:`Producer`, which sets these attributes."""

    record_ttl: float
    ordered: bool
    _keys: dict[str, tuple[bytes, int, bytes]]
    _max_record_bytes: int
    _ledger: Ledger
    _acc: Accumulator
    _sender: Sender | None
    _loop: asyncio.AbstractEventLoop | None
    _yield: bool

    def _fast_plain(self, obj: Any, partition_key: str) -> PendingRecord | None:
        if type(obj) is dict:
            try:
                data = _dumps(obj)
            except TypeError:
                return None
        elif type(obj) is bytes:
            data = obj
        elif type(obj) is str:
            try:
                data = obj.encode()
            except UnicodeEncodeError:
                return None
        else:
            return None
        try:
            cached = self._keys.get(partition_key)
        except TypeError:
            return None
        if cached is None:
            return None
        tail, key_bytes, _ = cached
        size = len(data) + key_bytes
        fragment = _join((_DATA_HEAD, _b64(data, newline=False), tail))
        cost = len(fragment) + RECORD_OVERHEAD
        ledger = self._ledger
        if (
            size > self._max_record_bytes
            or ledger.putters
            or ledger.records >= ledger.max_records
            or ledger.bytes + cost > ledger.max_bytes
        ):
            return None
        record = PendingRecord(loop=self._loop)
        record.fragment = fragment
        record.key = partition_key
        record.ehk = None
        record.size = size
        record.cost = cost
        record.deadline = _monotonic() + self.record_ttl
        ledger.records += 1
        ledger.bytes += cost
        if ledger.epoch:
            record.epoch = ledger.epoch
        acc = self._acc
        key_lanes = acc.key_lanes
        lane = acc.default if key_lanes is None else key_lanes.get(partition_key)
        if lane is None or self.ordered:
            queue_now = acc.add(record)
        else:
            if key_lanes is not None:
                record.shard = lane.shard_id
            lane.records.append(record)
            acc.waiting += 1
            n = acc.queued = acc.queued + 1
            before = acc.queued_bytes
            acc.queued_bytes = before + size
            queue_now = n == 1 or n == acc.full_records or before < acc.max_bytes <= before + size
        if queue_now:
            self._sender.notify()  # type: ignore[union-attr]
        return record

    def _fast_packed(self, obj: Any, partition_key: str) -> PendingRecord | None:
        # (Accumulator.add() and OpenAggregate.add() for a record that fits its lane's open
        # aggregate, which keeps the record's key, hash key and size for it)
        if type(obj) is dict:
            try:
                data = _dumps(obj)
            except TypeError:
                return None
        elif type(obj) is bytes:
            data = obj
        elif type(obj) is str:
            try:
                data = obj.encode()
            except UnicodeEncodeError:
                return None
        else:
            return None
        acc = self._acc
        key_lanes = acc.key_lanes
        if key_lanes is None:
            return None
        try:
            cached = self._keys.get(partition_key)
            lane = key_lanes.get(partition_key)
        except TypeError:
            return None
        if cached is None or lane is None:
            return None
        agg = lane.open
        if agg is None:
            return None
        dl = len(data)
        size = dl + cached[1]
        cost = size + 4 * ((size + 2) // 3) + AGGREGATED_OVERHEAD
        ledger = self._ledger
        if (
            size > self._max_record_bytes
            or ledger.putters
            or ledger.records >= ledger.max_records
            or ledger.bytes + cost > ledger.max_bytes
        ):
            return None
        fields = agg.fields
        index = fields.get(partition_key)
        if index is None:
            index = len(fields)
            if index >= HEADER_INDEXES:
                return None
            entry = cached[2]
        else:
            entry = b""
        part = (HEADERS[index].get(dl) or header(index, dl)) + data
        body = agg.body + len(part) + len(entry)
        if body > agg.limit:
            return None
        record = PendingRecord(loop=self._loop)
        record.cost = cost
        record.deadline = _monotonic() + self.record_ttl
        if entry:
            fields[partition_key] = index
            agg.table.append(entry)
        agg.body = body
        agg.nbytes += size
        agg.parts.append(part)
        agg.records.append(record)
        ledger.records += 1
        ledger.bytes += cost
        if ledger.epoch:
            record.epoch = ledger.epoch
        acc.waiting += 1
        lane.count += 1
        lane.nbytes += size
        n = acc.queued = acc.queued + 1
        before = acc.queued_bytes
        acc.queued_bytes = before + size
        if n == 1 or n == acc.full_records or before < acc.max_bytes <= before + size:
            self._sender.notify()  # type: ignore[union-attr]
            self._yield = acc.waiting > 1
        return record
