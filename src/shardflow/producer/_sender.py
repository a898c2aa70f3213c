"""The sender: one loop that cuts batches and keeps up to ``max_in_flight`` requests going.

The loop takes each due batch from the accumulator (failing the records it found
expired), hands it to a :class:`.PutRecordsRequest` of its own, which sends it and
resolves its records, and sleeps until the next batch is due, a request ends, or new
records come. A request that kept off-shard aggregates stays with the sender until the
next shard map (:meth:`Sender.map_refreshed`) lets it judge them. Until the background
start (the stream's description and shard map) succeeded, nothing is sent.

If the loop crashes, every record not yet resolved fails with
:class:`errors.DeliveryFailed` before the error propagates, so no delivery is left
hanging.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from .. import errors
from .._core.logs import get_logger
from ..shardmap import ShardMap
from ._accumulator import Accumulator
from ._ledger import Ledger
from ._records import PendingRecord
from ._request import PutRecordsRequest
from ._resolve import Resolver
from ._shards import ShardTracker
from ._transport import Transport

__all__ = ["Sender"]

log = get_logger("shardflow.producer")

_monotonic = time.monotonic  # the producer's clock for deadlines and linger


class Sender:
    """Drains the accumulator into PutRecords requests, one handler each.

    ``start`` (the stream's description and map) runs in the background first;
    ``on_missing`` is told when a request finds the stream gone.
    """

    def __init__(
        self,
        accumulator: Accumulator,
        ledger: Ledger,
        resolver: Resolver,
        transport: Transport,
        *,
        max_in_flight: int,
        record_ttl: float,
        tracker: ShardTracker | None = None,
        start: Callable[[], Awaitable[None]] | None = None,
        on_missing: Callable[[errors.ResourceNotFound], None] | None = None,
    ) -> None:
        self._acc = accumulator
        self._ledger = ledger
        self.resolver = resolver
        self._transport = transport
        self._on_missing = on_missing
        self._start = start
        self.blocked = start is not None
        """True until ``start`` (the stream's description, its shard map) succeeded: no
        request goes out meanwhile, records wait (and expire at their deadline)."""
        self._restart = anyio.Event()
        self.start_error: errors.AWSError | None = None
        """The last error of ``start`` while it retries (for the failures of records that
        expire meanwhile)."""
        self._max_in_flight = max_in_flight
        self._sweep_interval = min(1.0, max(0.05, record_ttl / 20))
        self._tracker = tracker
        if tracker is not None:
            tracker.on_refresh = self.map_refreshed
        self._tracker_scope = anyio.CancelScope()
        self._wake: asyncio.Future[None] | None = None
        self._flying: set[PutRecordsRequest] = set()
        self._parked: list[PutRecordsRequest] = []
        self._closing = False
        self._scope = anyio.CancelScope()
        self.finished = anyio.Event()
        self.crashed: BaseException | None = None
        self.in_flight_records = 0
        self.requests = 0

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
        return sum(len(request.parked_records()) for request in self._parked)

    def map_refreshed(self, shard_map: ShardMap) -> None:
        """A new shard map: pack with it from now on, judge the parked aggregates."""
        self._acc.set_map(shard_map)
        parked, self._parked = self._parked, []
        for request in parked:
            request.judge()
        self.notify()

    def fail_waiting(self, error: errors.DeliveryFailed) -> None:
        """Stop sending, and fail every record waiting (queued, backing off or parked);
        requests in flight resolve their records by their answers."""
        self.blocked = True
        self._fail_pending(self._acc.drain(), error)

    def fail_all(self, error: errors.DeliveryFailed) -> None:
        """Fail every record not yet resolved (queued, backing off, in flight or parked)."""
        pending = self._acc.drain()
        for request in self._flying:
            pending += request.pending()
        self._flying.clear()
        self.in_flight_records = 0
        self._fail_pending(pending, error)

    def _fail_pending(self, pending: list[PendingRecord], error: errors.DeliveryFailed) -> None:
        for request in self._parked:
            pending += request.parked_records()
        self._parked.clear()
        self.resolver.fail_pending(pending, error)

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
        resolver = self.resolver
        next_sweep = _monotonic() + self._sweep_interval
        while True:
            now = _monotonic()
            if self._closing and acc.waiting == 0 and not self._flying and not self._parked:
                return
            flushing = self._closing or self._ledger.flushing
            if now >= next_sweep:
                next_sweep = now + self._sweep_interval
                expired = acc.expire(now)
                if expired:
                    cause = self.start_error if self.blocked else None
                    why = "record_ttl ran out while the record was queued"
                    if cause is not None:
                        why += f" (the endpoint could not be reached: {cause})"
                    resolver.fail(expired, why, cause, taken=False)
                for request in self._parked:
                    request.expire(now)
                self._parked = [request for request in self._parked if request.parked]
            while not self.blocked and len(self._flying) < self._max_in_flight:
                batch = acc.next_batch(now, flushing)
                if batch is None:
                    break
                if batch.expired:
                    resolver.fail(
                        batch.expired,
                        "record_ttl ran out before the record could be sent",
                        None,
                        taken=False,
                    )
                if not batch.entries:
                    break
                request = PutRecordsRequest(
                    batch.entries, batch.records, resolver, acc, self._tracker
                )
                self._flying.add(request)
                self.in_flight_records += batch.records
                self.requests += 1
                tg.start_soon(self._send, request)
            wake_at: float | None = None
            if not self.blocked and len(self._flying) < self._max_in_flight:
                wake_at = acc.wake_time(now, flushing)
            if acc.waiting or self._parked:
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

    async def _send(self, request: PutRecordsRequest) -> None:
        # A cancelled or crashed request stays in _flying: fail_all() resolves it.
        gone = await request.send(self._transport)
        self._flying.discard(request)
        self.in_flight_records -= request.records
        if request.parked:
            self._parked.append(request)
        if isinstance(gone, errors.ResourceNotFound) and self._on_missing is not None:
            self._on_missing(gone)  # the stream is gone: what waits fails now
            if self._start is not None:
                self.restart()
        self.notify()


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
