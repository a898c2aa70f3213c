"""The producer's bounded queue: every record accepted and not yet resolved.

:class:`Ledger` counts every record accepted and not yet resolved (queued, in flight,
waiting to retry, or waiting for a shard map refresh): it is the producer's bounded queue
(records AND bytes), the place ``put`` waits for room, and what ``flush`` waits on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from operator import attrgetter

from .. import errors
from .records import PendingRecord

__all__ = ["Ledger"]

_cost = attrgetter("cost")


class Ledger:
    """Records accepted and not yet resolved; the queue bound; put and flush waiters."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.records = 0
        self.bytes = 0
        self.closed = False
        # Records are admitted in epochs: every flush() closes the current one and waits
        # until the epochs up to it have no unresolved record. A record of epoch 0 carries
        # no epoch (it reads as 0); others carry theirs.
        self._epoch = 0
        self._current = 0  # unresolved records of the current epoch
        self._open: dict[int, int] = {}  # closed epoch -> unresolved records, oldest first
        self._putters: deque[list[object]] = deque()  # [cost, future] in arrival order
        self._flushers: list[tuple[int, asyncio.Future[None]]] = []

    # --- admission ----------------------------------------------------------------------

    def _fits(self, cost: int) -> bool:
        return self.records < self.max_records and self.bytes + cost <= self.max_bytes

    def has_putters(self) -> bool:
        """True while a put() waits for room (a new record must wait behind it)."""
        return bool(self._putters)

    def count(self, record: PendingRecord) -> None:
        """Count ``record`` in the current epoch (its room was taken by the caller)."""
        if self._epoch:
            record.epoch = self._epoch
        self._current += 1

    def admit(self, record: PendingRecord) -> None:
        self.records += 1
        self.bytes += record.cost
        if self._epoch:
            record.epoch = self._epoch
        self._current += 1

    def try_admit(self, record: PendingRecord) -> bool:
        """Admit ``record`` if it fits now without overtaking a waiting put."""
        cost = record.cost
        if self._putters or self.records >= self.max_records or self.bytes + cost > self.max_bytes:
            return False
        self.records += 1
        self.bytes += cost
        if self._epoch:
            record.epoch = self._epoch
        self._current += 1
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

    def release(self, records: Sequence[PendingRecord]) -> None:
        """Forget resolved records: free their room, wake puts and flushes. (Their payload
        is let go by whoever resolved them.)"""
        opened = self._open
        if not opened:  # no flush pending: every record is of the current epoch
            self._current -= len(records)
        else:
            current = self._epoch
            for record in records:
                epoch = getattr(record, "epoch", 0)
                if epoch == current:
                    self._current -= 1
                else:
                    opened[epoch] -= 1
        self.records -= len(records)
        self.bytes -= sum(map(_cost, records))
        self._wake_putter()
        if self._flushers or opened:
            self._retire_epochs()

    def _retire_epochs(self) -> None:
        opened = self._open
        for epoch in list(opened):
            if opened[epoch]:
                break
            del opened[epoch]
        oldest = next(iter(opened)) if opened else self._epoch
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
        self._open[target] = self._current
        self._current = 0
        self._epoch += 1
        self._retire_epochs()
        if (next(iter(self._open)) if self._open else self._epoch) > target:
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
