"""Ordered producers' per-key FIFOs (:class:`KeyQueues`), used by the accumulator.

With ``ordered=True`` each partition key has a FIFO, and only keys with nothing on their
way are offered ("ready", in the lane of their next record's shard): a later record of a
key never overtakes an earlier one, across retries too. A key's first ``held`` records
are on their way; the key is offered again when they are all resolved
(:meth:`KeyQueues.done`) or when they come back for another try
(:meth:`KeyQueues.release`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from ._lane import Lane, overdue, split_expired
from ._packing import Packer, Run
from ._records import Entry, PendingRecord

__all__ = ["Counts", "KeyQueues"]


class Counts(Protocol):
    """What offered records are counted in (the accumulator's totals)."""

    queued: int
    queued_bytes: int


class KeyQueues:
    """A FIFO per partition key, how many of its first records are on their way, and
    which keys are ready in which lane (``lane_of``: the lane of a predicted shard).
    Offered keys are counted in ``counts``; :meth:`add` leaves that to its caller."""

    def __init__(
        self,
        counts: Counts,
        lane_of: Callable[[str | None], Lane],
        packer: Packer,
        *,
        aggregate: bool,
    ) -> None:
        self._counts = counts
        self._lane_of = lane_of
        self._packer = packer
        self._aggregate = aggregate
        self.queues: dict[str, deque[PendingRecord]] = {}
        self.held: dict[str, int] = {}

    def add(self, record: PendingRecord) -> bool:
        """Queue ``record`` behind its key's; True when its key became ready (the caller
        counts it as offered)."""
        queue = self.queues.get(record.key)
        if queue is not None:
            queue.append(record)
            return False
        self.queues[record.key] = deque((record,))
        self._ready(record.key, record)
        return True

    def records(self) -> Iterator[PendingRecord]:
        """Every record queued (on its way or not)."""
        for queue in self.queues.values():
            yield from queue

    def move_ready(self, old: Iterable[Lane]) -> None:
        """The ready keys of the ``old`` lanes, ready in their head's lane now (after a new
        shard map set each record's shard)."""
        for lane in old:
            for key in lane.ready:
                self._ready(key, self.queues[key][0])

    def head(self, lane: Lane) -> tuple[PendingRecord | None, int]:
        """The next record of ``lane``'s first ready key (None: none), and how many keys
        are ready there."""
        ready = lane.ready
        return (self.queues[next(iter(ready))][0], len(ready)) if ready else (None, 0)

    def _ready(self, key: str, head: PendingRecord) -> None:
        """Make ``key`` ready in its head's lane, not counted."""
        lane = self._lane_of(head.shard)
        lane.ready[key] = None
        lane.nbytes += head.size

    def _offer(self, key: str, head: PendingRecord) -> None:
        """Make ``key`` ready again in its head's lane, counted as offered."""
        self._ready(key, head)
        counts = self._counts
        counts.queued += 1
        counts.queued_bytes += head.size

    def _withdraw(self, key: str, head: PendingRecord) -> None:
        """Take ``key`` (whose next record is ``head``) out of its lane's ready keys."""
        lane = self._lane_of(head.shard)
        del lane.ready[key]
        lane.nbytes -= head.size
        counts = self._counts
        counts.queued -= 1
        counts.queued_bytes -= head.size

    def done(self, record: PendingRecord) -> None:
        """``record``, taken in a batch, is resolved: its key's next may go."""
        key = record.key
        queue = self.queues.get(key)
        if queue is None:
            return
        if queue and queue[0] is record:
            queue.popleft()
        else:
            try:
                queue.remove(record)
            except ValueError:
                return
        held = self.held.get(key, 0) - 1
        if held > 0:
            self.held[key] = held
            return
        self.held.pop(key, None)
        if queue:
            self._offer(key, queue[0])
        else:
            del self.queues[key]

    def release(self, records: Iterable[PendingRecord]) -> None:
        """``records`` come back for another try: their keys are offered again, first
        record first."""
        for record in records:
            key = record.key
            if self.held.pop(key, None) is not None:
                self._offer(key, self.queues[key][0])

    def expire(self, now: float) -> list[PendingRecord]:
        """Remove and return the :func:`overdue` records not on their way."""
        out: list[PendingRecord] = []
        for key in list(self.queues):
            queue = self.queues[key]
            held = self.held.get(key, 0)
            waiting = list(queue)[held:]
            if not any(overdue(r, now) for r in waiting):
                continue
            if not held:
                self._withdraw(key, queue[0])
            live, gone = split_expired(waiting, now)
            fresh = deque(list(queue)[:held] + live)
            out += gone
            if not fresh:
                del self.queues[key]
                continue
            self.queues[key] = fresh
            if not held:
                self._offer(key, fresh[0])
        return out

    def drain(self, retrying: set[int]) -> list[PendingRecord]:
        """Remove and return every record not on its way; records on their way stay until
        their request ends, but for those backing off (ids in ``retrying``). The caller
        clears the lanes' ready keys and the counts."""
        out: list[PendingRecord] = []
        for key, queue in self.queues.items():
            held = self.held.get(key, 0)
            out.extend(r for i, r in enumerate(queue) if i >= held)
        self.queues = {
            k: deque(r for r in list(q)[: self.held[k]] if id(r) not in retrying)
            for k, q in self.queues.items()
            if k in self.held
        }
        return out

    def take_runs(
        self,
        lane: Lane,
        entries: list[Entry],
        room_n: int,
        room_b: int,
        tokens_n: float,
        tokens_b: float,
        now: float,
        gone: list[PendingRecord],
    ) -> int:
        """Pack the ready keys' next records of ``lane`` into ``entries``; mark what was
        taken as held. Returns the records taken; expired ones go to ``gone``."""
        taken = self._packer.pack_runs(
            lane.shard_id,
            lane.landing,
            self._runs(lane, now, gone),
            entries,
            room_n,
            room_b,
            tokens_n,
            tokens_b,
        )
        n = 0
        for key, count_ in taken:
            self._withdraw(key, self.queues[key][0])
            self.held[key] = count_
            n += count_
        return n

    def _runs(self, lane: Lane, now: float, gone: list[PendingRecord]) -> Iterator[Run]:
        """The ready keys of ``lane`` in turn, each with its next records for the lane
        (only the next one without aggregation); expired ones go to ``gone`` first."""
        shard_id = lane.shard_id
        aggregate = self._aggregate and shard_id is not None
        for key in list(lane.ready):
            queue = self.queues[key]
            head = queue[0]
            if overdue(head, now):
                self._withdraw(key, head)
                while queue and overdue(queue[0], now):
                    gone.append(queue.popleft())
                if not queue:
                    del self.queues[key]
                    continue
                self._offer(key, queue[0])
                if queue[0].shard != shard_id:
                    continue  # its next record is for another lane now
                head = queue[0]
            if not aggregate:
                yield key, (head,)
                continue
            run = []
            for record in queue:
                if record.shard != shard_id or overdue(record, now):
                    break
                run.append(record)
            yield key, run
