"""How records leave the producer: delivered, sent again, or failed (:class:`Resolver`).

The sender and each request handler resolve records through one :class:`Resolver`,
which also keeps the counters ``stats()`` reports. A failed record's delivery fails with
:class:`errors.DeliveryFailed` (every failed try in its ``attempts``); failures are
logged one line per batch (stream, error code, count, first partition key), never one
per record, and asyncio is told each failure was seen, so that an unawaited delivery
does not log again on its own. A record to send again waits a full-jitter backoff
(:func:`shardflow._core.backoff.full_jitter`) in the accumulator, never past its deadline.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import errors
from .._core.backoff import full_jitter
from .._core.logs import get_logger
from ..models import Attempt
from ._accumulator import Accumulator
from ._ledger import Ledger
from ._records import Aggregate, Entry, Landing, PendingRecord, deliver

__all__ = ["BACKOFF_BASE", "BACKOFF_CAP", "Resolver", "entry_records", "unpacked"]

log = get_logger("shardflow.producer")

BACKOFF_BASE = 0.1
"""First retry waits up to this long (seconds); each further try doubles the ceiling."""
BACKOFF_CAP = 5.0
"""Ceiling of the backoff before jitter (seconds)."""

_EMPTY = b""


def entry_records(entry: Entry) -> list[PendingRecord]:
    """The records an entry carries (an aggregate's, or the record itself)."""
    return entry.records if type(entry) is Aggregate else [entry]  # type: ignore[list-item]


def unpacked(entry: Entry) -> list[PendingRecord]:
    """The records of ``entry``, ready to be packed again (an aggregate's get their data
    back)."""
    return entry.unpack() if type(entry) is Aggregate else [entry]  # type: ignore[list-item]


class Resolver:
    """Resolves records (delivered, retried, failed), releases them from the queue bound,
    and counts what happened."""

    def __init__(self, accumulator: Accumulator, ledger: Ledger, stream: str) -> None:
        self._acc = accumulator
        self._ledger = ledger
        self._stream = stream
        # records keep their data until resolved (ordered aggregating producers)
        self._holds_data = accumulator.aggregate and accumulator.ordered
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        self.kinesis_records = 0
        self.failed_requests = 0
        """Requests that failed as a whole (5xx, reset, timeout, rejected request)."""
        self.misrouted = 0
        self.failed_codes: dict[str, int] = {}
        """Records failed, by error code."""
        self.entry_errors: dict[str, int] = {}
        """Entries refused in answers, by error code."""
        # metrics hooks (shardflow._core.metrics): once per request, once per aggregate delivered
        self.on_request: Callable[[float, str | None], None] | None = None
        self.on_aggregate: Callable[[int], None] | None = None

    def resolved(self, records: list[PendingRecord], *, taken: bool = True) -> None:
        """Release resolved records; ``taken``: they came from next_batch() (key heads)."""
        if taken and self._acc.ordered:
            done = self._acc.done
            for record in records:
                done(record)
        self._ledger.release(records)

    def delivered_all(self, records: list[PendingRecord]) -> None:
        """Count and release ``records``, resolved as delivered."""
        self.delivered += len(records)
        self.resolved(records)

    def deliver_aggregate(
        self, agg: Aggregate, landing: Landing, done: list[PendingRecord]
    ) -> None:
        """Resolve ``agg``'s records as delivered where it landed (into ``done``)."""
        deliver(agg.records, landing)
        if self.on_aggregate is not None:
            self.on_aggregate(len(agg.records))
        if self._holds_data or hasattr(agg.records[0], "data"):  # (unpacked to be judged)
            for record in agg.records:
                record.data = _EMPTY
        done.extend(agg.records)

    @staticmethod
    def record_attempt(record: PendingRecord, attempt: Attempt) -> None:
        try:
            record.attempts.append(attempt)
        except AttributeError:  # the first failure
            record.attempts = [attempt]

    def retry(
        self, records: list[PendingRecord], now: float, *, backoff: bool = True
    ) -> list[PendingRecord]:
        """Schedule another try of ``records`` (one entry's) together, after a jittered
        backoff; return those whose deadline that would miss (not scheduled)."""
        when = now
        if backoff:
            tries = max(len(getattr(r, "attempts", ())) for r in records)
            when += full_jitter(tries - 1, BACKOFF_BASE, BACKOFF_CAP)
        live = [r for r in records if when < r.deadline]
        if live:
            self.retried += len(live)
            self._acc.retry_at(live, when)
        if len(live) == len(records):
            return []
        return [r for r in records if when >= r.deadline]

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

    def fail_pending(self, pending: list[PendingRecord], error: errors.DeliveryFailed) -> None:
        """Fail ``pending`` (records not yet resolved, each counted once) with ``error``."""
        unique = list({id(r): r for r in pending}.values())
        for record in unique:
            _set_failed(record, errors.DeliveryFailed(str(error), _attempts(record), error.cause))
        self.failed += len(unique)
        if unique:
            self._log_failed(unique, str(error), error.cause)
            self._ledger.release(unique)

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
