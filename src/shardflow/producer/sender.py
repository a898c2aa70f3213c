"""The sender: one loop that cuts batches and keeps up to ``max_in_flight`` requests going.

Each PutRecords answer is read entry by entry. Delivered entries resolve their futures;
failed entries with a retriable code (throughput exceeded, internal failure) go back to
the accumulator, first in line, after an exponential backoff with full jitter; other codes
fail their records at once. A request-level failure (5xx, reset, timeout) is handled the
same way for every record of the request. Nothing is retried past a record's deadline
(``record_ttl`` after ``put``). Every try is recorded as an :class:`Attempt`.

If the loop crashes, every record not yet resolved fails with
:class:`errors.DeliveryFailed` before the error propagates, so no delivery is left
hanging.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .. import _aws, errors
from .._putrecords import PutRecordsTransport
from ..models import Attempt
from .accumulator import Accumulator, Ledger, PendingRecord

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


def _retriable(code: str) -> bool:
    known = _RETRIABLE.get(code)
    if known is None:
        known = _RETRIABLE[code] = _aws.error_for_code(code).retriable
    return known


class Sender:
    """Drains the accumulator into PutRecords requests and resolves every record."""

    def __init__(
        self,
        accumulator: Accumulator,
        ledger: Ledger,
        transport: PutRecordsTransport,
        *,
        max_in_flight: int,
        record_ttl: float,
    ) -> None:
        self._acc = accumulator
        self._ledger = ledger
        self._transport = transport
        self._max_in_flight = max_in_flight
        self._sweep_interval = min(1.0, max(0.05, record_ttl / 20))
        self._wake: asyncio.Future[None] | None = None
        self._flying: dict[int, list[PendingRecord]] = {}
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

    # --- the loop -----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run until closed and drained. Cancellation stops it (the owner fails the rest)."""
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    task_status.started()
                    await self._loop(tg)
        except Exception as exc:
            self.crashed = cause = _leaf(exc)
            log.exception("shardflow producer: sender crashed; failing every pending record")
            self.fail_all(
                errors.DeliveryFailed(f"the producer's sender crashed: {cause!r}", cause=cause)
            )
            raise
        finally:
            self.finished.set()

    async def _loop(self, tg: anyio.abc.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        acc = self._acc
        ledger = self._ledger
        next_sweep = _monotonic() + self._sweep_interval
        while True:
            now = _monotonic()
            if self._closing and acc.waiting == 0 and not self._flying:
                return
            flushing = self._closing or ledger.flushing
            if now >= next_sweep:
                next_sweep = now + self._sweep_interval
                expired = acc.expire(now)
                if expired:
                    # expire() already took them out of their key queues
                    self._fail(
                        expired, "record_ttl ran out while the record was queued", None, taken=False
                    )
            while len(self._flying) < self._max_in_flight:
                batch = acc.next_batch(now, flushing)
                if batch is None:
                    break
                # Seam: per-shard rate tokens will be taken here before the batch goes.
                live = self._drop_expired(batch, now)
                if live:
                    self._dispatch(tg, live)
            wake_at: float | None = None
            if len(self._flying) < self._max_in_flight:
                wake_at = acc.wake_time(now, flushing)
            if acc.waiting:
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

    def _drop_expired(self, batch: list[PendingRecord], now: float) -> list[PendingRecord]:
        for record in batch:
            if record.deadline <= now:
                break
        else:
            return batch
        expired = [r for r in batch if r.deadline <= now]
        self._fail(expired, "record_ttl ran out before the record could be sent", None)
        return [r for r in batch if r.deadline > now]

    def _dispatch(self, tg: anyio.abc.TaskGroup, batch: list[PendingRecord]) -> None:
        request_id = self._next_id
        self._next_id += 1
        self._flying[request_id] = batch
        self.in_flight_records += len(batch)
        self.requests += 1
        tg.start_soon(self._send, request_id, batch)

    # --- one request --------------------------------------------------------------------

    async def _send(self, request_id: int, batch: list[PendingRecord]) -> None:
        started_at = time.time()
        t0 = _monotonic()
        latest = max(r.deadline for r in batch)
        timeout = min(REQUEST_TIMEOUT, max(latest - t0, MIN_REQUEST_TIMEOUT))
        completed = False
        try:
            try:
                results = await self._transport.put_records([r.fragment for r in batch], timeout)
            except errors.AWSError as exc:
                self.failed_requests += 1
                attempt = Attempt(exc.code, exc.message or str(exc), started_at, _monotonic() - t0)
                self._request_failed(batch, attempt, exc, _monotonic())
            else:
                self._read_results(batch, results, started_at, _monotonic() - t0)
            completed = True
        finally:
            # A cancelled or crashed request stays in _flying: fail_all() resolves it.
            if completed:
                del self._flying[request_id]
                self.in_flight_records -= len(batch)
                self.notify()

    def _read_results(
        self,
        batch: list[PendingRecord],
        results: list[dict[str, Any]],
        started_at: float,
        duration: float,
    ) -> None:
        ok = Attempt(None, None, started_at, duration)
        first_try = (ok,)
        done: list[PendingRecord] = []
        failed: list[tuple[PendingRecord, dict[str, Any]]] = []
        append = done.append
        for record, entry in zip(batch, results, strict=True):
            shard_id = entry.get("ShardId")
            sequence_number = entry.get("SequenceNumber")
            if shard_id and sequence_number and "ErrorCode" not in entry:
                if not record.done():  # (the caller may have cancelled its future)
                    record._shard_id = shard_id
                    record._sequence_number = sequence_number
                    record.tries = first_try if record.attempts is None else (*record.attempts, ok)
                    record.set_result(None)  # type: ignore[arg-type]  # see PendingRecord
                append(record)
            elif entry.get("ErrorCode") is None and shard_id and sequence_number:
                record.deliver(shard_id, sequence_number, (*(record.attempts or ()), ok))
                append(record)
            else:
                failed.append((record, entry))
        if done:
            self.delivered += len(done)
            self._resolved(done)
        if not failed:
            return
        now = _monotonic()
        # Failures are resolved in groups (one log line each), keyed by code and message.
        expired: dict[tuple[str, str], list[PendingRecord]] = {}
        rejected: dict[tuple[str, str], list[PendingRecord]] = {}
        for record, entry in failed:
            code = str(entry.get("ErrorCode") or "InvalidResponse")
            message = str(entry.get("ErrorMessage") or "")
            self._record_attempt(record, Attempt(code, message, started_at, duration))
            if not _retriable(code):
                rejected.setdefault((code, message), []).append(record)
            elif not self._retry(record, now):
                expired.setdefault((code, message), []).append(record)
        for (code, message), records in rejected.items():
            cause = _aws.error_for_code(code, message, "PutRecords")
            self._fail(records, f"Kinesis rejected the record: {code}", cause)
        for (code, message), records in expired.items():
            cause = _aws.error_for_code(code, message, "PutRecords")
            self._fail(records, "record_ttl ran out before a successful try", cause)

    def _request_failed(
        self, batch: list[PendingRecord], attempt: Attempt, exc: errors.AWSError, now: float
    ) -> None:
        for record in batch:
            self._record_attempt(record, attempt)
        if not exc.retriable:
            self._fail(batch, f"PutRecords failed: {exc}", exc)
            return
        log.debug("PutRecords failed (%s); retrying %d records", exc.code, len(batch))
        expired = [record for record in batch if not self._retry(record, now)]
        if expired:
            self._fail(expired, "record_ttl ran out before a successful try", exc)

    @staticmethod
    def _record_attempt(record: PendingRecord, attempt: Attempt) -> None:
        if record.attempts is None:
            record.attempts = [attempt]
        else:
            record.attempts.append(attempt)

    def _retry(self, record: PendingRecord, now: float) -> bool:
        """Schedule another try after a jittered backoff; False if it would miss the TTL."""
        tries = len(record.attempts or ())
        ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, tries - 1))
        when = now + random.random() * ceiling
        if when >= record.deadline:
            return False
        self.retried += 1
        self._acc.retry_at(record, when)
        return True

    # --- resolution ---------------------------------------------------------------------

    def _resolved(self, records: list[PendingRecord], *, taken: bool = True) -> None:
        """Release resolved records; ``taken``: they came from next_batch() (key heads)."""
        if taken and self._acc.ordered:
            done = self._acc.done
            for record in records:
                done(record)
        self._ledger.release(records)

    def _fail(
        self,
        records: list[PendingRecord],
        message: str,
        cause: BaseException | None,
        *,
        taken: bool = True,
    ) -> None:
        for record in records:
            _set_failed(record, errors.DeliveryFailed(message, tuple(record.attempts or ()), cause))
        self.failed += len(records)
        log.warning("%d record(s) not delivered: %s", len(records), message)
        self._resolved(records, taken=taken)

    def fail_all(self, error: errors.DeliveryFailed) -> None:
        """Fail every record not yet resolved (queued, backing off or in flight)."""
        pending = self._acc.drain()
        for batch in self._flying.values():
            pending.extend(batch)
        self._flying.clear()
        unique = list({id(r): r for r in pending}.values())
        for record in unique:
            _set_failed(
                record,
                errors.DeliveryFailed(str(error), tuple(record.attempts or ()), error.cause),
            )
        self.failed += len(unique)
        if unique:
            log.warning("%d record(s) not delivered: %s", len(unique), error)
        self.in_flight_records = 0
        self._ledger.release(unique)


def _set_failed(record: PendingRecord, error: errors.DeliveryFailed) -> None:
    """Fail ``record``'s delivery. The failure is logged here, once per batch, so asyncio
    is told it was seen: an unawaited failed delivery does not log again on its own."""
    if not record.done():
        record.set_exception(error)
        record.exception()


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
