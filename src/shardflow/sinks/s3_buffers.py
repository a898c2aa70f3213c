"""S3Sink's per-shard buffers: where objects are cut, and how a replay finds the old cuts.

When an object is cut (per shard; objects never mix shards)
    - before a record whose arrival time is ``max_interval`` or more after the object's
      first record, or falls in another UTC hour (so the key's hour holds all its lines);
    - after the record that brings the object to ``max_bytes`` of uncompressed NDJSON;
    - when the object has been buffered for ``max_interval`` seconds (a timer), and on
      ``flush()`` / ``aclose()``.

Replay idempotence
    The first three rules depend only on the records, so the same records give the same
    objects. The timer and ``flush()`` cut wherever reading happened to be; to make those
    objects repeatable too, the first time the sink sees a shard it lists the objects that
    start at the incoming record (one ListObjectsV2 per shard and hour) and, while earlier
    objects are found, ends each object exactly where the earlier one ended. A replay from a
    checkpoint the sink reported (always the end of an object) therefore rewrites the same
    keys with the same bytes (gzip without a timestamp): no duplicate objects. Once a record
    starts no earlier object, the sink stops listing. Without ``s3:ListBucket`` permission
    it logs a warning and relies on the content rules alone. While an object is being
    rewritten, ``flush()`` and ``aclose()`` keep its records instead of cutting it short:
    they are stored already, in the earlier object, and are not reported, so they are read
    again next time and the object is completed then.

:class:`ShardBuffers` applies these rules without any I/O: the sink lists what
:meth:`ShardBuffers.listings_wanted` asks for into each shard's ``known``, and writes the
objects queued in each shard's ``sealed``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import anyio

from .._core.logs import get_logger
from ..models import Record
from .s3_layout import HOUR_US, Encoded, Layout, Position, hour_of, position_text

__all__ = ["SealedObject", "ShardBuffer", "ShardBuffers"]

log = get_logger("shardflow.sinks.s3")


@dataclass(slots=True)
class SealedObject:
    """An object cut and waiting for S3: its lines until its body is made, then its body."""

    key: str
    lines: list[bytes]
    size: int
    count: int
    first: Record
    last: Record
    body: bytes | None = None


class ShardBuffer:
    """One shard's open object, its sealed objects waiting for S3, and its replay state."""

    __slots__ = (
        "accepted",
        "first",
        "first_us",
        "hour",
        "known",
        "last",
        "lines",
        "lock",
        "opened_at",
        "reconciling",
        "retry_at",
        "sealed",
        "shard_id",
        "size",
        "target",
    )

    def __init__(self, shard_id: str, reconciling: bool) -> None:
        self.shard_id = shard_id
        self.lines: list[bytes] = []
        self.size = 0
        self.first: Record | None = None
        self.last: Record | None = None
        self.first_us = 0
        self.hour = ""
        self.opened_at: float | None = None
        self.retry_at: float | None = None
        """When the sink tries its first sealed object again after a failure."""
        self.sealed: deque[SealedObject] = deque()
        self.accepted: Position | None = None
        self.lock = anyio.Lock()
        """Held by the sink while it writes ``sealed`` (in order)."""
        self.reconciling = reconciling
        """True while objects may still line up with those of an earlier run."""
        self.known: dict[str, dict[str, Position]] = {}
        """hour -> first position text of an earlier object -> its last position."""
        self.target: Position | None = None
        """The end of the earlier object the open one is rewriting, if any."""

    @property
    def cuttable(self) -> bool:
        """An open object that the timer, ``flush()`` or ``aclose()`` may cut: one that
        has lines and is not rewriting an earlier object."""
        return bool(self.lines) and self.target is None

    def clear(self) -> int:
        """Forget, unwritten, every record held (sealed objects and the open one);
        return how many that was."""
        dropped = sum(obj.count for obj in self.sealed) + len(self.lines)
        self.sealed.clear()
        self.lines, self.size, self.first, self.last, self.target = [], 0, None, None, None
        self.opened_at = self.retry_at = None
        return dropped

    def duplicate(self, position: Position) -> bool:
        """True for a position at or before the last one accepted (a repeat)."""
        return self.accepted is not None and position <= self.accepted


class ShardBuffers:
    """Every shard's buffer, and the rules that cut objects (see the module docstring).

    ``on_open`` is called whenever an object is opened (the sink's timer then re-arms).
    """

    def __init__(
        self,
        layout: Layout,
        *,
        max_bytes: int,
        max_interval: float,
        on_open: Callable[[], object],
    ) -> None:
        self.layout = layout
        self.max_bytes = max_bytes
        self.max_interval = max_interval
        self._interval_us = max(1, round(max_interval * 1e6))
        self._on_open = on_open
        self.shards: dict[str, ShardBuffer] = {}
        self.can_list = True
        """False once listing was denied: new shards then skip the replay reconciliation."""
        self.duplicates = 0

    def shard(self, shard_id: str) -> ShardBuffer:
        st = self.shards.get(shard_id)
        if st is None:
            st = self.shards[shard_id] = ShardBuffer(shard_id, self.can_list)
        return st

    # -- replay reconciliation -----------------------------------------------------------

    def listings_wanted(self, encoded: Sequence[Encoded]) -> dict[ShardBuffer, list[str]]:
        """The hours (in order) to list earlier objects of, per shard, before ``encoded``
        can be accepted: those a replaying shard may start an object in."""
        wanted: dict[ShardBuffer, set[str]] = {}
        for record, position, _, _ in encoded:
            st = self.shard(record.shard_id)
            if not st.reconciling or st.duplicate(position):
                continue
            hour = hour_of(record)
            if hour not in st.known:
                wanted.setdefault(st, set()).add(hour)
        return {st: sorted(hours) for st, hours in wanted.items()}

    # -- accepting -----------------------------------------------------------------------

    def accept(self, encoded: Sequence[Encoded]) -> list[ShardBuffer]:
        """Add records to their shards' open objects, sealing objects as the rules say;
        return the shards that got records.

        Synchronous on purpose: a batch is accepted entirely or (before this) not at all.
        """
        touched: dict[str, ShardBuffer] = {}
        for record, position, at, line in encoded:
            st = self.shard(record.shard_id)
            # The per-record loop: ShardBuffer.duplicate and .cuttable are inlined.
            if st.accepted is not None and position <= st.accepted:
                self.duplicates += 1
                continue
            if (
                st.lines
                and st.target is None
                and (
                    at // HOUR_US != st.first_us // HOUR_US
                    or at - st.first_us >= self._interval_us
                )
            ):
                self.seal(st)
            if not st.lines:
                self._open(st, record, at)
            st.lines.append(line)
            st.size += len(line)
            st.last = record
            st.accepted = position
            if st.target is not None:
                if position >= st.target:
                    self.seal(st)
            elif st.size >= self.max_bytes:
                self.seal(st)
            touched[st.shard_id] = st
        return list(touched.values())

    def _open(self, st: ShardBuffer, record: Record, at: int) -> None:
        st.first = record
        st.first_us = at
        st.hour = hour_of(record)
        if st.reconciling:
            earlier_end = st.known.get(st.hour, {}).get(position_text(record))
            if earlier_end is None:
                st.reconciling = False
                st.known.clear()
            else:
                st.target = earlier_end
                log.debug(
                    "%s: rewriting the object an earlier run started at %s",
                    st.shard_id,
                    record.sequence_number,
                )
        st.opened_at = anyio.current_time()
        self._on_open()

    # -- cutting -------------------------------------------------------------------------

    def seal(self, st: ShardBuffer) -> None:
        """Cut ``st``'s open object: queue it in ``st.sealed`` under its key."""
        assert st.first is not None
        assert st.last is not None
        key = self.layout.key(st.hour, st.shard_id, st.first, st.last)
        st.sealed.append(SealedObject(key, st.lines, st.size, len(st.lines), st.first, st.last))
        st.lines = []
        st.size = 0
        st.first = st.last = None
        st.target = None
        st.opened_at = None

    def seal_all(self) -> None:
        """Cut every open object except those rewriting an earlier one (``flush()``)."""
        for st in self.shards.values():
            if st.cuttable:
                self.seal(st)

    def seal_expired(self, shards: Iterable[ShardBuffer], now: float) -> None:
        """Cut the open objects of ``shards`` buffered for ``max_interval`` by ``now``."""
        for st in shards:
            if self._age_limit(st) <= now:
                self.seal(st)

    def _age_limit(self, st: ShardBuffer) -> float:
        if st.cuttable and st.opened_at is not None:
            return st.opened_at + self.max_interval
        return math.inf

    def due(self, st: ShardBuffer) -> float:
        """When the timer must act on ``st``: its open object's age limit, or a retry."""
        when = self._age_limit(st)
        if st.sealed and st.retry_at is not None:
            when = min(when, st.retry_at)
        return when

    # -- counting ------------------------------------------------------------------------

    def buffered(self) -> tuple[int, int, int]:
        """Records and bytes in open objects, and sealed objects waiting for S3."""
        shards = self.shards.values()
        return (
            sum(len(st.lines) for st in shards),
            sum(st.size for st in shards),
            sum(len(st.sealed) for st in shards),
        )

    def unwritten(self) -> tuple[int, int]:
        """Records not written: those that will not be reported, and those held only to
        complete an object being rewritten (stored already, in the earlier object)."""
        left = rewriting = 0
        for st in self.shards.values():
            left += sum(obj.count for obj in st.sealed)
            if st.target is None:
                left += len(st.lines)
            else:
                rewriting += len(st.lines)
        return left, rewriting
