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
from ._records import PendingRecord

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
        self.epoch = 0
        """The current epoch (admitting a record: set it on the record unless 0)."""
        self._open: dict[int, int] = {}  # closed epoch -> unresolved records, oldest first
        self.putters: deque[list[object]] = deque()
        """Puts waiting for room, [cost, future] in arrival order: while any waits, a new
        record must wait behind them."""
        self._flushers: list[tuple[int, asyncio.Future[None]]] = []

    # --- admission ----------------------------------------------------------------------

    def _fits(self, cost: int) -> bool:
        return self.records < self.max_records and self.bytes + cost <= self.max_bytes

    def admit(self, record: PendingRecord) -> None:
        """Count ``record`` (taking its room): ``records``, ``bytes``, its epoch."""
        self.records += 1
        self.bytes += record.cost
        if self.epoch:
            record.epoch = self.epoch

    def try_admit(self, record: PendingRecord) -> bool:
        """Admit ``record`` if it fits now without overtaking a waiting put."""
        cost = record.cost
        if self.putters or not (
            self.records < self.max_records and self.bytes + cost <= self.max_bytes
        ):  # (_fits, inline: this runs once per record)
            return False
        self.records += 1
        self.bytes += cost
        if self.epoch:
            record.epoch = self.epoch
        return True

    async def wait_room(self, cost: int) -> None:
        """Wait, in arrival order, until ``cost`` bytes and one record fit.

        Cancel-safe: a cancelled wait leaves nothing behind and passes its turn on.
        Raises :class:`errors.ProducerClosed` if the producer closes meanwhile.
        """
        loop = asyncio.get_running_loop()
        entry: list[object] = [cost, loop.create_future()]
        self.putters.append(entry)
        if len(self.putters) == 1:
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
            was_head = bool(self.putters) and self.putters[0] is entry
            try:
                self.putters.remove(entry)
            except ValueError:  # pragma: no cover - removed by close()
                pass
            if was_head:
                self._wake_putter()

    def _wake_putter(self) -> None:
        if self.putters:
            cost, fut = self.putters[0]
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
        if opened:  # a flush is pending: count the records of the epochs it waits for
            current = self.epoch
            for record in records:
                epoch = getattr(record, "epoch", 0)
                if epoch != current:
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
        oldest = next(iter(opened)) if opened else self.epoch
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
        target = self.epoch
        # the current epoch's unresolved records: all but those of the closed ones
        self._open[target] = self.records - sum(self._open.values())
        self.epoch += 1
        self._retire_epochs()
        if (next(iter(self._open)) if self._open else self.epoch) > target:
            return None
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushers.append((target, fut))
        return fut

    def forget_flush_waiter(self, fut: asyncio.Future[None]) -> None:
        self._flushers = [(t, f) for t, f in self._flushers if f is not fut]

    def close(self) -> None:
        """Refuse new records; every waiting put raises ProducerClosed."""
        self.closed = True
        for _, fut in self.putters:
            assert isinstance(fut, asyncio.Future)
            if not fut.done():
                fut.set_result(None)
