"""The sender: one loop that cuts batches and keeps up to ``max_in_flight`` requests going.

Each PutRecords answer is read entry by entry. A delivered entry resolves its record, or
every record of its aggregate (with its index as sub-sequence number). Failed entries
with a retriable code (throughput exceeded, internal failure) go back to the
accumulator, first in line, after an exponential backoff with full jitter: a failed
aggregate's records all go back together (they are re-packed when cut again, with the
shard map of that moment). Other codes fail their records at once. A request-level
failure (5xx, reset, timeout) is handled the same way for every record of the request.
Nothing is retried past a record's deadline (``record_ttl`` after ``put``). Every try is
recorded as an :class:`Attempt`.

An entry that lands on a shard other than the predicted one means the shard map is stale:
it is counted as misrouted and the tracker refreshes the map. A plain record is
delivered wherever it landed; so is an aggregate whose records the landed shard's range
all holds. Any other aggregate is parked in :mod:`.offshard` until the refreshed map
comes, which then resolves it through the sender (:meth:`Sender.deliver_aggregate`,
:meth:`Sender.retry`, :meth:`Sender.fail`).

If the loop crashes, every record not yet resolved fails with
:class:`errors.DeliveryFailed` before the error propagates, so no delivery is left
hanging.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from itertools import repeat
from operator import attrgetter
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .. import _aws, errors
from .._putrecords import PutRecordsTransport, all_written, all_written_raw, parse_response
from ..models import Attempt
from .accumulator import Accumulator
from .ledger import Ledger
from .offshard import WRONG_SHARD as WRONG_SHARD
from .offshard import OffShardAggregates
from .records import Aggregate, Answer, Entry, Landing, PendingRecord, deliver, positions
from .resolution import Resolution, entry_records
from .shards import ShardTracker

__all__ = ["Sender"]

log = logging.getLogger("shardflow.producer")

BACKOFF_BASE = 0.1
"""First retry waits up to this long (seconds); each further try doubles the ceiling."""
BACKOFF_CAP = 5.0
"""Ceiling of the backoff before jitter (seconds)."""
REQUEST_TIMEOUT = 30.0
"""Longest a request may wait for its answer (it is also cut at its records' deadline)."""
MIN_REQUEST_TIMEOUT = 0.2

_monotonic = time.monotonic  # the producer's clock for deadlines and linger

_RETRIABLE: dict[str, bool] = {}
_deadline = attrgetter("deadline")
_fragment = attrgetter("fragment")
_shard = attrgetter("shard")
_repeat_shard_id = repeat("ShardId")
_EMPTY = b""


def _retriable(code: str) -> bool:
    known = _RETRIABLE.get(code)
    if known is None:
        known = _RETRIABLE[code] = _aws.error_for_code(code).retriable
    return known


def _unpacked(entry: Entry) -> list[PendingRecord]:
    """The records of ``entry``, ready to be packed again (an aggregate's get their data
    back)."""
    return entry.unpack() if type(entry) is Aggregate else [entry]  # type: ignore[list-item]


class Sender(Resolution):
    """Drains the accumulator into PutRecords requests and resolves every record."""

    def __init__(
        self,
        accumulator: Accumulator,
        ledger: Ledger,
        transport: PutRecordsTransport,
        *,
        max_in_flight: int,
        record_ttl: float,
        tracker: ShardTracker | None = None,
        start: Callable[[], Awaitable[None]] | None = None,
        stream: str = "",
        on_missing: Callable[[errors.ResourceNotFound], None] | None = None,
    ) -> None:
        self._on_missing = on_missing
        self._acc = accumulator
        self._stream = stream
        self._start = start
        self.blocked = start is not None
        self._restart = anyio.Event()
        """True until ``start`` (the stream's description, its shard map) succeeded: no
        request goes out meanwhile, records wait (and expire at their deadline)."""
        self.start_error: errors.AWSError | None = None
        """The last error of ``start`` while it retries (for the failures of records that
        expire meanwhile)."""
        # records on their own, without predicted shards: the fastest answers to read
        self._plain = tracker is None and not accumulator.aggregate
        # records keep their data until resolved (ordered aggregating producers)
        self._holds_data = accumulator.aggregate and accumulator.ordered
        self._ledger = ledger
        self._transport = transport
        self._max_in_flight = max_in_flight
        self._sweep_interval = min(1.0, max(0.05, record_ttl / 20))
        self._tracker = tracker
        self._off_shard = OffShardAggregates(self, accumulator, tracker)
        if tracker is not None:
            tracker.on_refresh = self._off_shard.map_refreshed
        self._tracker_scope = anyio.CancelScope()
        self._wake: asyncio.Future[None] | None = None
        self._flying: dict[int, tuple[list[Entry], int]] = {}
        self._next_id = 0
        self._closing = False
        self._scope = anyio.CancelScope()
        self.finished = anyio.Event()
        self.crashed: BaseException | None = None
        # counters for stats()
        self.in_flight_records = 0
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        self.requests = 0
        self.failed_requests = 0
        self.kinesis_records = 0
        self.misrouted = 0
        self.failed_codes: dict[str, int] = {}  # records failed, by error code
        self.entry_errors: dict[str, int] = {}  # entries refused in answers, by error code
        # metrics hooks (shardflow._metrics): once per request, once per aggregate delivered
        self.on_request: Callable[[float, str | None], None] | None = None
        self.on_aggregate: Callable[[int], None] | None = None

    # --- control ------------------------------------------------------------------------

    def notify(self) -> None:
        """Make the loop look again (new records, a flush, a close, a finished request)."""
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def close(self) -> None:
        """Send everything without lingering, then end the loop once nothing is left."""
        self._closing = True
        self.notify()

    def cancel(self) -> None:
        """Stop at once: the loop and every request in flight are cancelled."""
        self._scope.cancel()

    @property
    def in_flight_requests(self) -> int:
        return len(self._flying)

    @property
    def parked_records(self) -> int:
        """Records of aggregates waiting for a shard map refresh to be judged."""
        return self._off_shard.records

    # --- the loop -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until closed and drained. Cancellation stops it (the owner fails the rest)."""
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    if self._tracker is not None or self._start is not None:
                        tg.start_soon(self._background)
                    task_status.started()
                    await self._loop(tg)
                    self._tracker_scope.cancel()
        except Exception as exc:
            self.crashed = cause = _leaf(exc)
            log.exception("shardflow producer: sender crashed; failing every pending record")
            self.fail_all(
                errors.DeliveryFailed(f"the producer's sender crashed: {cause!r}", cause=cause)
            )
            raise
        finally:
            self.finished.set()

    async def _background(self) -> None:
        """Run ``start`` (unblocking the loop when it succeeds), then keep the shard map
        fresh; from the start again after :meth:`restart`."""
        with self._tracker_scope:
            while True:
                if self._start is not None:
                    await self._start()
                    self.blocked = False
                    self.start_error = None
                    self.notify()
                async with anyio.create_task_group() as tg:
                    if self._tracker is not None:
                        tg.start_soon(self._tracker.run)
                    await self._restart.wait()
                    self._restart = anyio.Event()
                    tg.cancel_scope.cancel()

    def restart(self) -> None:
        """Send nothing until the stream is described again (it went missing)."""
        self.blocked = True
        self._restart.set()

    async def _loop(self, tg: anyio.abc.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        acc = self._acc
        ledger = self._ledger
        tracker = self._tracker
        off_shard = self._off_shard
        next_sweep = _monotonic() + self._sweep_interval
        while True:
            now = _monotonic()
            if self._closing and acc.waiting == 0 and not self._flying and not off_shard.parked:
                return
            flushing = self._closing or ledger.flushing
            if now >= next_sweep:
                next_sweep = now + self._sweep_interval
                expired = acc.expire(now)
                if expired:
                    # expire() already took them out of their key queues
                    cause = self.start_error if self.blocked else None
                    why = "record_ttl ran out while the record was queued"
                    if cause is not None:
                        why += f" (the endpoint could not be reached: {cause})"
                    self.fail(expired, why, cause, taken=False)
                if off_shard.parked:
                    off_shard.expire(now)
            while not self.blocked and len(self._flying) < self._max_in_flight:
                cut = acc.next_batch(now, flushing)
                if acc.expired:
                    expired, acc.expired = acc.expired, []
                    self.fail(
                        expired,
                        "record_ttl ran out before the record could be sent",
                        None,
                        taken=False,
                    )
                if cut is None:
                    break
                self._dispatch(tg, *cut)
            if acc.unmapped and tracker is not None:
                acc.unmapped = False
                tracker.mark_stale()
            wake_at: float | None = None
            if not self.blocked and len(self._flying) < self._max_in_flight:
                wake_at = acc.wake_time(now, flushing)
            if acc.waiting or off_shard.parked:
                wake_at = next_sweep if wake_at is None else min(wake_at, next_sweep)
            await self._sleep(loop, wake_at)

    async def _sleep(self, loop: asyncio.AbstractEventLoop, until: float | None) -> None:
        wake: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        timer = (
            loop.call_later(max(0.0, until - _monotonic()), _wake_up, wake)
            if until is not None
            else None
        )
        try:
            await wake
        finally:
            self._wake = None
            if timer is not None:
                timer.cancel()

    def _dispatch(self, tg: anyio.abc.TaskGroup, batch: list[Entry], records: int) -> None:
        request_id = self._next_id
        self._next_id += 1
        self._flying[request_id] = (batch, records)
        self.in_flight_records += records
        self.requests += 1
        tg.start_soon(self._send, request_id, batch)

    # --- one request --------------------------------------------------------------------

    async def _send(self, request_id: int, batch: list[Entry]) -> None:
        started_at = time.time()
        t0 = _monotonic()
        latest = max(map(_deadline, batch))
        timeout = min(REQUEST_TIMEOUT, max(latest - t0, MIN_REQUEST_TIMEOUT))
        completed = False
        try:
            try:
                raw = await self._transport.put_records(list(map(_fragment, batch)), timeout)
                # Records on their own, no predicted shard to compare with: when the
                # answer says every entry was written, it is read only if asked
                results = (
                    None
                    if self._plain and all_written_raw(raw, len(batch))
                    else parse_response(raw, len(batch))
                )
            except errors.AWSError as exc:
                self.failed_requests += 1
                attempt = Attempt(exc.code, exc.message or str(exc), started_at, _monotonic() - t0)
                if self.on_request is not None:
                    self.on_request(attempt.duration, exc.code)
                self._request_failed(batch, attempt, exc, _monotonic())
            else:
                duration = _monotonic() - t0
                if self.on_request is not None:
                    self.on_request(duration, None)
                self._read_results(batch, raw, results, started_at, duration)
            completed = True
        finally:
            # A cancelled or crashed request stays in _flying: fail_all() resolves it.
            if completed:
                flying = self._flying.pop(request_id, None)
                if flying is not None:
                    self.in_flight_records -= flying[1]
                self.notify()

    def _read_results(
        self,
        batch: list[Entry],
        raw: bytes,
        results: list[dict[str, Any]] | None,
        started_at: float,
        duration: float,
    ) -> None:
        """Resolve the records of ``batch`` by the answer (``results``: its entries, None
        when every entry was written, for a producer without predictions)."""
        ok = Attempt(None, None, started_at, duration)
        # Records sent on their own point at the answer, read only if a result is asked for.
        answer = Answer(raw, ok)
        tracker = self._tracker
        if results is None or (not self._acc.aggregate and all_written(results)):
            # The common case, in a few passes over the batch: every entry written.
            plain: list[PendingRecord] = batch  # type: ignore[assignment]
            if results is not None and tracker is not None and list(map(_shard, plain)) != list(
                map(dict.get, results, _repeat_shard_id)
            ):
                self._misrouted()
            deliver(plain, answer)
            self.kinesis_records += len(plain)
            self.delivered += len(plain)
            self.resolved(plain)
            return
        done: list[PendingRecord] = []
        failed: list[tuple[Entry, dict[str, Any]]] = []
        misrouted = False
        for entry, result, position in zip(
            batch, results or (), positions(len(batch)), strict=False
        ):
            shard_id = result.get("ShardId")
            sequence_number = result.get("SequenceNumber")
            if not (shard_id and sequence_number and result.get("ErrorCode") is None):
                failed.append((entry, result))
            elif type(entry) is Aggregate:
                self._landed(entry, Landing(shard_id, sequence_number, ok), done)
            else:
                one: PendingRecord = entry  # type: ignore[assignment]
                one._res = answer
                one._pos = position
                if not one.done():  # (the caller may have cancelled its future)
                    one.set_result(None)  # type: ignore[arg-type]  # see PendingRecord
                if tracker is not None and one.shard != shard_id:
                    misrouted = True
                done.append(one)
        if misrouted:
            self._misrouted()
        self.kinesis_records += len(batch) - len(failed)
        if done:
            self.delivered += len(done)
            self.resolved(done)
        if not failed:
            return
        now = _monotonic()
        # Failures are resolved in groups (one log line each), keyed by code and message.
        expired: dict[tuple[str, str], list[PendingRecord]] = {}
        rejected: dict[tuple[str, str], list[PendingRecord]] = {}
        for entry, result in failed:
            code = str(result.get("ErrorCode") or "InvalidResponse")
            message = str(result.get("ErrorMessage") or "")
            self.entry_errors[code] = self.entry_errors.get(code, 0) + 1
            attempt = Attempt(code, message, started_at, duration)
            records = entry_records(entry)
            for record in records:
                self.record_attempt(record, attempt)
            if not _retriable(code):
                rejected.setdefault((code, message), []).extend(records)
            else:
                late = self.retry(_unpacked(entry), now)
                if late:
                    expired.setdefault((code, message), []).extend(late)
        for (code, message), records in rejected.items():
            cause = _aws.error_for_code(code, message, "PutRecords")
            self.fail(records, f"Kinesis rejected the record: {code}", cause)
        for (code, message), records in expired.items():
            cause = _aws.error_for_code(code, message, "PutRecords")
            self.fail(records, "record_ttl ran out before a successful try", cause)

    def _request_failed(
        self, batch: list[Entry], attempt: Attempt, exc: errors.AWSError, now: float
    ) -> None:
        records = [r for entry in batch for r in entry_records(entry)]
        for record in records:
            self.record_attempt(record, attempt)
        if not exc.retriable:
            self.fail(records, f"PutRecords failed: {exc}", exc)
            if isinstance(exc, errors.ResourceNotFound) and self._on_missing is not None:
                self._on_missing(exc)  # the stream is gone: what waits fails now
                if self._start is not None:
                    self.restart()
            return
        log.debug("PutRecords failed (%s); retrying %d records", exc.code, len(records))
        expired = [r for entry in batch for r in self.retry(_unpacked(entry), now)]
        if expired:
            self.fail(expired, "record_ttl ran out before a successful try", exc)

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
            when += random.random() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, tries - 1))
        live = [r for r in records if when < r.deadline]
        if live:
            self.retried += len(live)
            self._acc.retry_at(live, when)
        if len(live) == len(records):
            return []
        return [r for r in records if when >= r.deadline]

    # --- aggregates ----------------------------------------------------------------------

    def _landed(self, agg: Aggregate, landing: Landing, done: list[PendingRecord]) -> None:
        """An aggregate was written (``landing``): deliver its records, or, if it went
        to a shard whose range may not hold them all, park them (:mod:`.offshard`)."""
        shard_id = landing.shard_id
        if shard_id != agg.shard:
            self._misrouted()
            if not self._off_shard.holds_all(agg, shard_id):
                self._off_shard.park(agg, landing)
                return
        self.deliver_aggregate(agg, landing, done)

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

    def _misrouted(self) -> None:
        self.misrouted += 1
        if self._tracker is not None:
            self._tracker.mark_stale()


def _leaf(exc: BaseException) -> BaseException:
    """The one error inside (nested) single-member exception groups, else ``exc``."""
    inner = getattr(exc, "exceptions", None)
    while isinstance(inner, tuple) and len(inner) == 1:
        exc = inner[0]
        inner = getattr(exc, "exceptions", None)
    return exc


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
