"""Accepted records on their way to a PutRecords request.

:class:`Ledger` counts every record accepted and not yet resolved (queued, in flight or
waiting to retry): it is the producer's bounded queue (records AND bytes), the place
``put`` waits for room, and what ``flush`` waits on.

:class:`Accumulator` holds the records that wait to be sent and cuts batches that respect
the request limits. With ``ordered=True`` it keeps one FIFO per partition key and offers
only the head of each key, so at most one record per key is in flight or backing off at a
time: a partial failure can then never let a later record of the key overtake an earlier
one.

Seams for later work (shard-aware batching, KPL aggregation, per-shard rate limits):
each :class:`PendingRecord` has a ``shard`` slot for its predicted shard, and batches are
cut by :meth:`Accumulator.next_batch`, which is where per-shard buckets and their rate
tokens will decide what may go.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import Generator, Iterable
from itertools import count
from typing import TYPE_CHECKING, Any

from .. import errors
from ..limits import KinesisLimits
from ..models import PutResult as _put_result

if TYPE_CHECKING:
    from ..models import Attempt, PutResult

__all__ = ["Accumulator", "Ledger", "PendingRecord"]


class PendingRecord(asyncio.Future["PutResult"]):
    """One accepted record, and the future of its delivery, in one object.

    ``put()`` hands this future to the caller. It carries the encoded PutRecords entry
    and the bookkeeping of the record, so each record costs one tracked object (which
    keeps the garbage collector's work per record low). Its :class:`PutResult` is built
    when first asked for.
    """

    __slots__ = (
        "_sequence_number",
        "_shard_id",
        "attempts",
        "cost",
        "deadline",
        "epoch",
        "fragment",
        "key",
        "shard",
        "size",
        "tries",
    )

    fragment: bytes
    """The entry's JSON object, as it goes into the request body."""
    key: str
    size: int
    """Data plus partition key bytes: what AWS counts against request limits."""
    cost: int
    """Bytes held in memory (entry plus bookkeeping), counted against ``max_queue_bytes``."""
    deadline: float
    """When ``record_ttl`` runs out (``time.monotonic()`` seconds)."""
    attempts: list[Attempt] | None
    """Failed tries so far (None until the first failure)."""
    tries: tuple[Attempt, ...]
    epoch: int
    shard: str | None
    """Predicted shard (None until a shard map is used)."""
    _shard_id: str
    _sequence_number: str

    def deliver(self, shard_id: str, sequence_number: str, tries: tuple[Attempt, ...]) -> None:
        """Resolve as delivered (no-op if the caller cancelled the future)."""
        if not self.done():
            self._shard_id = shard_id
            self._sequence_number = sequence_number
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
        return _put_result(shard_id, self._sequence_number, None, self.tries)

    def __await__(self) -> Generator[Any, None, PutResult]:
        if not self.done():
            self._asyncio_future_blocking = True
            yield self
        if not self.done():
            raise RuntimeError("await wasn't used with future")
        return self.result()

    __iter__ = __await__


class Ledger:
    """Records accepted and not yet resolved; the queue bound; put and flush waiters."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.records = 0
        self.bytes = 0
        self.closed = False
        self._epoch = 0
        self._open: dict[int, int] = {0: 0}  # epoch -> unresolved records, oldest first
        self._putters: deque[list[object]] = deque()  # [cost, future] in arrival order
        self._flushers: list[tuple[int, asyncio.Future[None]]] = []

    # --- admission ----------------------------------------------------------------------

    def _fits(self, cost: int) -> bool:
        return self.records < self.max_records and self.bytes + cost <= self.max_bytes

    def admit(self, record: PendingRecord) -> None:
        self.records += 1
        self.bytes += record.cost
        record.epoch = epoch = self._epoch
        self._open[epoch] += 1

    def try_admit(self, record: PendingRecord) -> bool:
        """Admit ``record`` if it fits now without overtaking a waiting put."""
        if (
            self._putters
            or self.records >= self.max_records
            or self.bytes + record.cost > self.max_bytes
        ):
            return False
        self.records += 1
        self.bytes += record.cost
        record.epoch = epoch = self._epoch
        self._open[epoch] += 1
        return True

    async def wait_room(self, cost: int) -> None:
        """Wait, in arrival order, until ``cost`` bytes and one record fit.

        Cancel-safe: a cancelled wait leaves nothing behind and passes its turn on.
        Raises :class:`errors.ProducerClosed` if the producer closes meanwhile.
        """
        loop = asyncio.get_running_loop()
        entry: list[object] = [cost, loop.create_future()]
        self._putters.append(entry)
        if len(self._putters) == 1:
            self._wake_putter()
        try:
            while True:
                fut = entry[1]
                assert isinstance(fut, asyncio.Future)
                await fut
                if self.closed:
                    raise errors.ProducerClosed("the producer was closed while put() waited")
                if self._fits(cost):
                    return
                entry[1] = loop.create_future()
        finally:
            was_head = bool(self._putters) and self._putters[0] is entry
            try:
                self._putters.remove(entry)
            except ValueError:  # pragma: no cover - removed by close()
                pass
            if was_head:
                self._wake_putter()

    def _wake_putter(self) -> None:
        if self._putters:
            cost, fut = self._putters[0]
            assert isinstance(fut, asyncio.Future)
            assert isinstance(cost, int)
            if not fut.done() and (self.closed or self._fits(cost)):
                fut.set_result(None)

    def wake_putter(self) -> None:
        """Let the first waiting put try again (after one was admitted)."""
        self._wake_putter()

    # --- resolution ---------------------------------------------------------------------

    def release(self, records: Iterable[PendingRecord]) -> None:
        """Forget resolved records: free their room and payload, wake puts and flushes."""
        opened = self._open
        n = 0
        freed = 0
        if len(opened) == 1:  # no flush pending: every record is of the current epoch
            for record in records:
                n += 1
                freed += record.cost
                record.fragment = b""  # the payload is no longer needed: let it go
            opened[self._epoch] -= n
        else:
            for record in records:
                n += 1
                freed += record.cost
                opened[record.epoch] -= 1
                record.fragment = b""
        self.records -= n
        self.bytes -= freed
        self._wake_putter()
        if self._flushers or len(opened) > 1:
            self._retire_epochs()

    def _retire_epochs(self) -> None:
        opened = self._open
        for epoch in list(opened):
            if epoch == self._epoch or opened[epoch]:
                break
            del opened[epoch]
        oldest = next(iter(opened))
        if self._flushers:
            waiting = []
            for target, fut in self._flushers:
                if target < oldest:
                    if not fut.done():
                        fut.set_result(None)
                else:
                    waiting.append((target, fut))
            self._flushers = waiting

    @property
    def flushing(self) -> bool:
        """True while a flush() waits: batches go at once, without lingering."""
        return bool(self._flushers)

    def flush_waiter(self) -> asyncio.Future[None] | None:
        """A future resolved once every record admitted so far is resolved (None: already).

        While it waits, :attr:`flushing` is True. Pass it to :meth:`forget_flush_waiter`
        when done with it (also after cancellation).
        """
        target = self._epoch
        self._epoch += 1
        self._open[self._epoch] = 0
        self._retire_epochs()
        if next(iter(self._open)) > target:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushers.append((target, fut))
        return fut

    def forget_flush_waiter(self, fut: asyncio.Future[None]) -> None:
        self._flushers = [(t, f) for t, f in self._flushers if f is not fut]

    def close(self) -> None:
        """Refuse new records; every waiting put raises ProducerClosed."""
        self.closed = True
        for _, fut in self._putters:
            assert isinstance(fut, asyncio.Future)
            if not fut.done():
                fut.set_result(None)


class Accumulator:
    """Records waiting to be sent, cut into batches within the request limits."""

    def __init__(
        self, limits: KinesisLimits, linger: float, ordered: bool, record_ttl: float
    ) -> None:
        self.max_records = limits.max_batch_records
        self.max_bytes = limits.max_batch_bytes
        self.linger = linger
        # a record was accepted record_ttl before its deadline; it may go linger after that
        self._linger_offset = linger - record_ttl
        self.ordered = ordered
        # unordered: one FIFO of records
        self._fifo: deque[PendingRecord] = deque()
        self._fifo_bytes = 0
        # ordered: one FIFO per key; a key is "ready" when its head may be sent
        self._queues: dict[str, deque[PendingRecord]] = {}
        self._ready: dict[str, None] = {}
        self._ready_bytes = 0
        # records (unordered) or keys (ordered) backing off: (ready_at, tiebreak, record)
        self._retries: list[tuple[float, int, PendingRecord]] = []
        self._tiebreak = count()
        self.waiting = 0
        """Records held here (queued or backing off), not in flight."""

    # --- input --------------------------------------------------------------------------

    def add(self, record: PendingRecord) -> bool:
        """Queue a new record; True if the sender should look now (first or full batch)."""
        self.waiting += 1
        if not self.ordered:
            fifo = self._fifo
            fifo.append(record)
            self._fifo_bytes += record.size
            n = len(fifo)
            return n == 1 or n == self.max_records or self._fifo_bytes >= self.max_bytes
        queue = self._queues.get(record.key)
        if queue is not None:
            queue.append(record)
            return False
        self._queues[record.key] = deque((record,))
        self._ready[record.key] = None
        self._ready_bytes += record.size
        n = len(self._ready)
        return n == 1 or n == self.max_records or self._ready_bytes >= self.max_bytes

    def retry_at(self, record: PendingRecord, when: float) -> None:
        """Send ``record`` again, first in line, once the monotonic clock reaches ``when``."""
        self.waiting += 1
        heapq.heappush(self._retries, (when, next(self._tiebreak), record))

    def done(self, record: PendingRecord) -> None:
        """``record`` (taken by :meth:`next_batch`) is resolved: its key's next may go."""
        if not self.ordered:
            return
        queue = self._queues[record.key]
        queue.popleft()
        if queue:
            self._ready[record.key] = None
            self._ready_bytes += queue[0].size
        else:
            del self._queues[record.key]

    # --- output -------------------------------------------------------------------------

    def _promote(self, now: float) -> None:
        retries = self._retries
        due: list[PendingRecord] = []
        while retries and retries[0][0] <= now:
            due.append(heapq.heappop(retries)[2])
        if not due:
            return
        if self.ordered:
            for record in due:
                self._ready[record.key] = None
                self._ready_bytes += record.size
        else:
            due.sort(key=_deadline)
            self._fifo.extendleft(reversed(due))
            self._fifo_bytes += sum(r.size for r in due)

    def _linger_until(self) -> float | None:
        """When the oldest waiting record has lingered long enough (None: none waits)."""
        if not self.ordered:
            return self._fifo[0].deadline + self._linger_offset if self._fifo else None
        if not self._ready:
            return None
        return self._queues[next(iter(self._ready))][0].deadline + self._linger_offset

    def _full(self) -> bool:
        if self.ordered:
            return len(self._ready) >= self.max_records or self._ready_bytes >= self.max_bytes
        return len(self._fifo) >= self.max_records or self._fifo_bytes >= self.max_bytes

    def wake_time(self, now: float, flushing: bool) -> float | None:
        """When a batch will be ready without new input (monotonic), None if never."""
        self._promote(now)
        times = []
        until = self._linger_until()
        if until is not None:
            times.append(now if flushing or self._full() else until)
        if self._retries:
            times.append(self._retries[0][0])
        return min(times) if times else None

    def next_batch(self, now: float, flushing: bool) -> list[PendingRecord] | None:
        """Take the next batch if one is ready (full, lingered long enough, or flushing).

        Records are taken in order up to the request limits. The caller fails the
        expired ones and sends the rest; every record taken is later passed to
        :meth:`done` (directly or after :meth:`retry_at`).
        """
        self._promote(now)
        until = self._linger_until()
        if until is None or not (flushing or until <= now or self._full()):
            return None
        max_records = self.max_records
        budget = self.max_bytes
        batch: list[PendingRecord] = []
        if not self.ordered:
            fifo = self._fifo
            while fifo and len(batch) < max_records:
                record = fifo[0]
                if record.size > budget and batch:
                    break
                fifo.popleft()
                budget -= record.size
                batch.append(record)
            self._fifo_bytes -= self.max_bytes - budget
        else:
            ready = self._ready
            queues = self._queues
            while ready and len(batch) < max_records:
                key = next(iter(ready))
                record = queues[key][0]
                if record.size > budget and batch:
                    break
                del ready[key]
                budget -= record.size
                batch.append(record)
            self._ready_bytes -= self.max_bytes - budget
        self.waiting -= len(batch)
        return batch

    def expire(self, now: float) -> list[PendingRecord]:
        """Remove and return queued records whose deadline passed (not in flight)."""
        expired: list[PendingRecord] = []
        if not self.ordered:
            if self._fifo and min(r.deadline for r in self._fifo) < now:
                keep: deque[PendingRecord] = deque()
                for record in self._fifo:
                    (expired if record.deadline < now else keep).append(record)
                self._fifo = keep
                self._fifo_bytes = sum(r.size for r in keep)
        else:
            for key in list(self._queues):
                queue = self._queues[key]
                held = key not in self._ready  # head in flight or backing off
                fresh = [r for i, r in enumerate(queue) if (i == 0 and held) or r.deadline >= now]
                if len(fresh) == len(queue):
                    continue
                expired.extend(
                    r for i, r in enumerate(queue) if not (i == 0 and held) and r.deadline < now
                )
                if key in self._ready:
                    self._ready_bytes -= queue[0].size
                    del self._ready[key]
                if fresh:
                    self._queues[key] = deque(fresh)
                    if not held:
                        self._ready[key] = None
                        self._ready_bytes += fresh[0].size
                else:
                    del self._queues[key]
        self.waiting -= len(expired)
        return expired

    def drain(self) -> list[PendingRecord]:
        """Remove and return every record held here (queued or backing off)."""
        out = [entry[2] for entry in self._retries]
        self._retries.clear()
        if not self.ordered:
            out.extend(self._fifo)
            self._fifo.clear()
            self._fifo_bytes = 0
        else:
            for key, queue in self._queues.items():
                held = key not in self._ready
                out.extend(r for i, r in enumerate(queue) if not (i == 0 and held))
            # heads in flight stay until their request ends; drop everything else
            self._queues = {
                k: deque((q[0],)) for k, q in self._queues.items() if k not in self._ready
            }
            self._ready.clear()
            self._ready_bytes = 0
        self.waiting = 0
        return out


def _deadline(record: PendingRecord) -> float:
    return record.deadline
