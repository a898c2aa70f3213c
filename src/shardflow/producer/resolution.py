"""How the sender resolves records it gives up on, and releases resolved ones
(:class:`Resolution`, a base class of :class:`.sender.Sender`).

A failed record's delivery fails with :class:`errors.DeliveryFailed` (every failed try in
its ``attempts``); failures are logged one line per batch (stream, error code, count,
first partition key), never one per record, and asyncio is told each failure was seen,
so that an unawaited delivery does not log again on its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import errors
from ..models import Attempt
from .records import Aggregate, Entry, PendingRecord

if TYPE_CHECKING:
    from .accumulator import Accumulator
    from .ledger import Ledger
    from .offshard import OffShardAggregates

__all__ = ["Resolution", "entry_records"]

log = logging.getLogger("shardflow.producer")

_EMPTY = b""


def entry_records(entry: Entry) -> list[PendingRecord]:
    """The records an entry carries (an aggregate's, or the record itself)."""
    return entry.records if type(entry) is Aggregate else [entry]  # type: ignore[list-item]


class Resolution:
    """Resolving records the sender gives up on (the :class:`Sender` sets these)."""

    _acc: Accumulator
    _ledger: Ledger
    _stream: str
    _off_shard: OffShardAggregates
    _flying: dict[int, tuple[list[Entry], int]]
    blocked: bool
    failed: int
    failed_codes: dict[str, int]
    in_flight_records: int

    def resolved(self, records: list[PendingRecord], *, taken: bool = True) -> None:
        """Release resolved records; ``taken``: they came from next_batch() (key heads)."""
        if taken and self._acc.ordered:
            done = self._acc.done
            for record in records:
                done(record)
        self._ledger.release(records)

    def fail(
        self,
        records: list[PendingRecord],
        message: str,
        cause: BaseException | None,
        *,
        taken: bool = True,
    ) -> None:
        """Fail ``records`` (one batch: one log line) and release them."""
        for record in records:
            _set_failed(record, errors.DeliveryFailed(message, _attempts(record), cause))
        self.failed += len(records)
        self._log_failed(records, message, cause)
        self.resolved(records, taken=taken)

    def _log_failed(
        self, records: list[PendingRecord], message: str, cause: BaseException | None
    ) -> None:
        first = records[0]
        code = getattr(cause, "code", None)
        if code is None:
            tries = getattr(first, "attempts", None)
            code = tries[-1].error_code if tries else "-"
        key = code if isinstance(code, str) and code != "-" else "_OTHER"
        self.failed_codes[key] = self.failed_codes.get(key, 0) + len(records)
        log.warning(
            "stream %s: %d record(s) not delivered [%s] (first partition key %r): %s",
            self._stream,
            len(records),
            code,
            getattr(first, "key", "?"),
            message,
        )

    def fail_waiting(self, error: errors.DeliveryFailed) -> None:
        """Stop sending, and fail every record waiting (queued, backing off or parked);
        requests in flight resolve their records by their answers."""
        self.blocked = True
        self._fail_pending(self._acc.drain(), error)

    def fail_all(self, error: errors.DeliveryFailed) -> None:
        """Fail every record not yet resolved (queued, backing off, in flight or parked)."""
        pending = self._acc.drain()
        for batch, _ in self._flying.values():
            for entry in batch:
                pending.extend(entry_records(entry))
        self._flying.clear()
        self.in_flight_records = 0
        self._fail_pending(pending, error)

    def _fail_pending(self, pending: list[PendingRecord], error: errors.DeliveryFailed) -> None:
        """Fail ``pending`` and the parked records, each once, with ``error``."""
        for agg, *_ in self._off_shard.parked:
            pending.extend(agg.records)
        self._off_shard.parked.clear()
        unique = list({id(r): r for r in pending}.values())
        for record in unique:
            _set_failed(record, errors.DeliveryFailed(str(error), _attempts(record), error.cause))
        self.failed += len(unique)
        if unique:
            self._log_failed(unique, str(error), error.cause)
            self._ledger.release(unique)


def _attempts(record: PendingRecord) -> tuple[Attempt, ...]:
    """The failed tries of ``record`` so far."""
    return tuple(getattr(record, "attempts", ()))


def _set_failed(record: PendingRecord, error: errors.DeliveryFailed) -> None:
    """Fail ``record``'s delivery (its payload is let go), and mark the failure seen: it
    is logged once per batch, so an unawaited delivery does not log again on its own."""
    record.fragment = record.data = _EMPTY
    if not record.done():
        record.set_exception(error)
        record.exception()
