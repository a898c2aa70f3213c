"""BufferedOutput: batches, retries and (optionally) spools events in front of an output.

Events wait in a store (:mod:`.spool`: memory, or a SQLite spool that survives a crash)
until a background flush loop has sent them and the output confirmed them, or a policy
dropped them; the policies (overflow, purge, retries, rejection) and how drops are counted
are in :mod:`.policies`.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import orjson
from anyio.abc import AsyncResource, TaskGroup

from .. import errors
from .._core import metrics as _metrics
from .._core.backoff import full_jitter
from .._core.lifecycle import open_task_group, stop_task_group
from .._core.logs import get_logger
from .._core.validate import check_bool, check_int, check_number, shown
from ._metrics import buffer_metrics
from .outputs import Event, Output, close_output, start_output
from .policies import (
    OVERFLOW,
    BufferStats,
    DropHook,
    Drops,
    Overflow,
    Triage,
)
from .spool import Entry, GroupCommit, MemoryStore, SQLiteSpool

__all__ = ["BufferStats", "BufferedOutput", "DropHook", "Overflow"]

log = get_logger("shardflow.collector")

_NEW, _OPEN, _CLOSING, _CLOSED = range(4)


class BufferedOutput(AsyncResource):
    """Buffers events in memory or in a SQLite spool and sends them in batches.

    Use it as an output of a :class:`Collector` (which starts and closes it), or on its
    own with ``async with`` and :meth:`post`. Options (keyword-only):

    - ``spool``: path of a SQLite file; each event is committed there before ``post()``
      returns and deleted only once the output confirmed it. Events left by an earlier
      run (a crash, a close that timed out) are sent first. None keeps events in memory.
    - ``flush_interval`` (1.0 s): how often the buffer is drained; it also drains as soon
      as ``max_batch`` events wait. A drain sends the whole backlog, batch after batch.
    - ``max_batch`` (500): events per ``output.send()`` call.
    - ``max_retries`` (None = forever), ``backoff_base`` (0.5 s), ``backoff_cap`` (30 s):
      after a batch with failures the next try waits a random time in
      ``[0, min(cap, base * 2**(n - 1))]`` (full jitter), ``n`` counting consecutive
      failed rounds; a failing ``output.start()`` is retried the same way.
    - ``purge_age`` (None): drop events older than this many seconds, unsent.
    - ``max_spool_records`` (100,000), ``max_spool_bytes`` (64 MiB; None: no limit) and
      ``overflow`` (``"block"``, ``"drop_oldest"`` or ``"raise"``): what a full buffer does.
    - ``close_timeout`` (10 s): how long :meth:`aclose` tries to flush.
    - ``fsync`` (True): with a spool, sync each commit to disk (survives power loss);
      False survives a process crash only and is faster.
    - ``on_drop``: called with the events and the reason each time a policy drops some.
    - ``clock`` (``time.time``): wall clock for event ages (injectable for tests).
    - ``meter_provider``: an OpenTelemetry MeterProvider for its metrics (spool size,
      events sent, dropped by reason); default: the global one when installed.
    """

    def __init__(
        self,
        output: Output,
        *,
        spool: str | os.PathLike[str] | None = None,
        flush_interval: float = 1.0,
        max_batch: int = 500,
        max_retries: int | None = None,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        purge_age: float | None = None,
        max_spool_records: int | None = 100_000,
        max_spool_bytes: int | None = 64 * 1024 * 1024,
        overflow: Overflow = "block",
        close_timeout: float = 10.0,
        fsync: bool = True,
        on_drop: DropHook | None = None,
        clock: Callable[[], float] = time.time,
        meter_provider: Any = None,
    ) -> None:
        if not callable(getattr(output, "send", None)):
            raise TypeError(
                f"output must have an async send(events) method, got {type(output).__name__}"
            )
        seconds = functools.partial(check_number, finite=False, unit="seconds")
        flush_interval = seconds("flush_interval", flush_interval)
        check_int("max_batch", max_batch, 1)
        if max_retries is not None:
            check_int("max_retries", max_retries, 0)
        backoff_base = seconds("backoff_base", backoff_base)
        backoff_cap = seconds("backoff_cap", backoff_cap)
        if backoff_cap < backoff_base:
            raise ValueError(
                f"backoff_cap ({backoff_cap}) must not be smaller than backoff_base "
                f"({backoff_base})"
            )
        if purge_age is not None:
            purge_age = seconds("purge_age", purge_age)
        if max_spool_records is not None:
            check_int("max_spool_records", max_spool_records, 1)
        if max_spool_bytes is not None:
            check_int("max_spool_bytes", max_spool_bytes, 1)
        if overflow not in OVERFLOW:
            raise ValueError(
                f"overflow must be one of {', '.join(OVERFLOW)}; got {shown(overflow)}"
            )
        close_timeout = seconds("close_timeout", close_timeout, positive=False)
        if on_drop is not None and not callable(on_drop):
            raise TypeError("on_drop must be callable(events, reason) or None")
        check_bool("fsync", fsync)
        if not callable(clock):
            raise TypeError(f"clock must be callable() -> epoch seconds, got {shown(clock)}")
        self.output = output
        self.spool_path = None if spool is None else os.fspath(spool)
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.purge_age = purge_age
        self.max_spool_records = max_spool_records
        self.max_spool_bytes = max_spool_bytes
        self.overflow: Overflow = overflow
        meter = _metrics.meter(meter_provider)
        if meter is not None:
            buffer_metrics(self, meter)
        self.close_timeout = close_timeout
        self._drops = Drops(self, on_drop)
        self._clock = clock
        limits: dict[str, int | None] = {}
        if overflow == "drop_oldest":
            limits = {"max_records": max_spool_records, "max_bytes": max_spool_bytes}
        self._limits = limits
        self._memory: MemoryStore | None = None
        self._commits: GroupCommit | None = None
        self._store: MemoryStore | SQLiteSpool
        if spool is None:
            self._memory = self._store = MemoryStore()
        else:
            self._store = SQLiteSpool(spool, fsync=fsync)
            self._commits = GroupCommit(
                self._store,
                **limits,
                on_evicted=lambda entries: self._drops.count("overflow", entries),
            )
        self._state = _NEW
        self._tg: TaskGroup | None = None
        self._ready = anyio.Event()
        """Set once the output has started."""
        self._stop_output = anyio.Event()
        self._output_done = anyio.Event()
        self._wake = anyio.Event()
        self._progress = anyio.Event()
        self._space = anyio.Event()
        self._closed = anyio.Event()
        self._sent = self._failed_attempts = self._refused = 0

    def __repr__(self) -> str:
        where = f"spool={self.spool_path!r}" if self.spool_path else "in memory"
        return f"BufferedOutput({self.output!r}, {where})"

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool and start the background flusher (the output starts in it).

        Returns without waiting for the output's own ``start()``: events posted meanwhile
        wait in the buffer. Raises :class:`errors.SpoolError` if the spool cannot be
        opened, :class:`errors.OutputClosed` once closed.
        """
        if self._state == _OPEN:
            return
        if self._state != _NEW:
            raise errors.OutputClosed(f"{self!r} is closed and cannot be restarted")
        await self._store.open()
        tg = await open_task_group()
        self._tg = tg
        tg.start_soon(self._output_host)
        tg.start_soon(self._flush_loop)
        if self._commits is not None:
            tg.start_soon(self._commits.run)
        self._state = _OPEN
        if self._store.records:
            log.info(
                "%r: resuming with %d buffered events from an earlier run; sending them first",
                self,
                self._store.records,
            )
            self._wake.set()

    async def __aenter__(self) -> BufferedOutput:
        await self.start()
        return self

    async def aclose(self) -> None:
        """Refuse new events, flush for up to ``close_timeout``, close the output, stop.

        Idempotent; call it from the task that started the output (``async with`` does).
        The output's own ``aclose`` (e.g. a producer delivering what it holds) runs in the
        task that started it and is bounded by the output itself. What is still unsent
        stays in the spool for the next start; without a spool it is dropped, counted and
        logged (reason ``close``). If cancelled, the flush and the output's close are cut
        short and the rest of the cleanup still runs.
        """
        if self._state == _CLOSED:
            return
        if self._state == _CLOSING:
            await self._closed.wait()
            return
        if self._state == _NEW:
            self._state = _CLOSED
            self._closed.set()
            return
        self._state = _CLOSING
        self._notify(space=True)
        try:
            with anyio.move_on_after(self.close_timeout) as scope:
                await self.flush()
            if scope.cancelled_caught:
                log.warning(
                    "%r: flush did not finish within close_timeout=%ss", self, self.close_timeout
                )
        finally:
            # The output is closed by the task that started it; the task group is exited
            # outside any other cancel scope (it was entered in start(), in this task);
            # the rest of the cleanup is shielded.
            self._stop_output.set()
            tg, self._tg = self._tg, None
            try:
                if tg is not None:
                    if self._ready.is_set():
                        await self._output_done.wait()
                    await stop_task_group(tg)
            finally:
                with anyio.CancelScope(shield=True):
                    await self._cleanup()

    async def _cleanup(self) -> None:
        left = self._store.records
        if left and self._memory is not None:
            entries = self._memory.clear()
            log.error(
                "%r: closed with %d unsent events in memory; they are dropped", self, left
            )
            self._drops.count("close", entries)
        elif left:
            log.warning(
                "%r: %d unsent events stay in the spool; they are sent first on next start",
                self,
                left,
            )
        await self._store.close()
        self._state = _CLOSED
        self._closed.set()

    # --- posting ------------------------------------------------------------------------

    async def post(self, event: Mapping[str, Any]) -> None:
        """Buffer one event (a JSON-serialisable mapping); see :meth:`post_json`."""
        try:
            data = orjson.dumps(event)
        except TypeError as exc:
            raise errors.SerializationError(f"event is not JSON-serialisable: {exc}") from exc
        await self.post_json(data)

    async def post_json(self, data: bytes) -> None:
        """Buffer one event already serialised as a JSON object.

        With a spool, returns once the event is committed to the file. Waits while the
        buffer is full if ``overflow="block"``. If cancelled while waiting for the commit,
        the event may or may not have been spooled. Raises :class:`errors.BufferFull`
        (``overflow="raise"``), :class:`errors.OutputClosed`, :class:`errors.SpoolError`,
        or ValueError for an event larger than ``max_spool_bytes``.
        """
        if self._state != _OPEN:
            raise errors.OutputClosed(f"{self!r} is not open (use async with, or start())")
        size = len(data)
        if self.max_spool_bytes is not None and size > self.max_spool_bytes:
            raise ValueError(
                f"event of {size} bytes can never fit max_spool_bytes={self.max_spool_bytes}"
            )
        if self.overflow != "drop_oldest":
            while self._full(size):
                if self.overflow == "raise":
                    self._refused += 1
                    held, held_bytes = self._buffered()
                    raise errors.BufferFull(
                        f"{self!r} is full ({held} events, {held_bytes} bytes)"
                    )
                await self._space.wait()
                if self._state != _OPEN:
                    raise errors.OutputClosed(f"{self!r} closed while post() waited for room")
        if self._commits is not None:
            await self._commits.append(self._clock(), data)
        else:
            assert self._memory is not None
            evicted = self._memory.append_now([(self._clock(), data)], **self._limits).evicted
            if evicted:
                self._drops.count("overflow", evicted)
        if self._buffered()[0] >= self.max_batch:
            self._wake.set()

    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        """Output protocol: buffer ``events``; an event's result is None once buffered."""
        results: list[BaseException | None] = []
        for event in events:
            try:
                await self.post(event)
            except (errors.ShardflowError, ValueError, TypeError) as exc:
                results.append(exc)
            else:
                results.append(None)
        return results

    def _buffered(self) -> tuple[int, int]:
        """Events (and bytes) held: stored, plus queued for a spool commit."""
        records, size = self._store.records, self._store.nbytes
        if self._commits is not None:
            records += self._commits.pending_records
            size += self._commits.pending_bytes
        return records, size

    def _full(self, size: int) -> bool:
        records, total = self._buffered()
        return (self.max_spool_records is not None and records + 1 > self.max_spool_records) or (
            self.max_spool_bytes is not None and total + size > self.max_spool_bytes
        )

    # --- flushing -----------------------------------------------------------------------

    async def flush(self) -> None:
        """Wait until every event accepted before this call is sent or dropped by policy.

        Waits as long as the output keeps failing (wrap it in a timeout if needed). Safe
        to cancel. Raises :class:`errors.OutputClosed` if the output was never started or
        is closed.
        """
        if self._state not in (_OPEN, _CLOSING):
            raise errors.OutputClosed(f"{self!r} is not open")
        if self._commits is not None:
            await self._commits.idle()
        target = self._store.last_id
        while True:
            progress = self._progress
            oldest = await self._store.oldest_id()
            if oldest is None or oldest > target:
                return
            self._wake.set()
            await progress.wait()

    async def _output_host(self) -> None:
        """Start the output (retrying), then close it when asked: both in this task, so
        outputs that enter task groups or context managers in start() can exit them."""
        try:
            failures = 0
            while True:
                try:
                    await start_output(self.output)
                except Exception as exc:
                    failures += 1
                    delay = self._backoff(failures)
                    log.warning(
                        "%r: output failed to start (%s); retrying in %.2fs", self, exc, delay
                    )
                    await anyio.sleep(delay)
                else:
                    break
            self._ready.set()
            self._wake.set()
            await self._stop_output.wait()
        finally:
            # No cancel scope around this: the output may exit its own task groups here.
            try:
                if self._ready.is_set():
                    try:
                        await close_output(self.output)
                    except Exception:
                        log.exception("%r: closing the output failed", self)
            finally:
                self._output_done.set()

    async def _flush_loop(self) -> None:
        failures = 0
        while True:
            with anyio.move_on_after(self.flush_interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                if self.purge_age is not None:
                    await self._purge_expired()
                if self._ready.is_set():
                    await self._drain()
                failures = 0
            except Exception as exc:  # a spool error: keep the loop alive and retry
                failures += 1
                delay = self._backoff(failures)
                log.error("%r: flush failed (%s); retrying in %.2fs", self, exc, delay)
                await anyio.sleep(delay)
            finally:
                self._notify()

    def _backoff(self, failures: int) -> float:
        return full_jitter(failures - 1, self.backoff_base, self.backoff_cap)

    def _expired(self, entry: Entry, now: float) -> bool:
        return self.purge_age is not None and entry.created < now - self.purge_age

    async def _purge_expired(self) -> None:
        while True:
            now = self._clock()
            expired = [e for e in await self._store.head(self.max_batch) if self._expired(e, now)]
            if not expired:
                return
            await self._store.settle(remove=expired)
            self._drops.count("purged", expired)
            self._notify(space=True)

    async def _drain(self) -> None:
        failures = 0
        while True:
            batch = await self._store.head(self.max_batch)
            if not batch:
                return
            if await self._send_batch(batch):
                failures += 1
                await anyio.sleep(self._backoff(failures))
            else:
                failures = 0

    async def _send_batch(self, batch: list[Entry]) -> bool:
        """Send one batch and settle it; True if some events failed and will be retried."""
        now = self._clock()
        triage = Triage.decode(batch, lambda entry: self._expired(entry, now))
        events = triage.events
        results: Sequence[BaseException | None] = []
        whole_batch = False
        if events:
            try:
                results = await self.output.send(events)
                if len(results) != len(events):
                    raise RuntimeError(
                        f"{self.output!r}.send returned {len(results)} results "
                        f"for {len(events)} events"
                    )
            except Exception as exc:
                log.warning("%r: sending %d events failed: %s", self, len(events), exc)
                results = [exc] * len(events)
                whole_batch = True
        triage.judge(results, whole_batch=whole_batch, max_retries=self.max_retries)
        if triage.failures and not whole_batch:
            log.info(
                "%r: %d of %d events failed and will be retried",
                self,
                triage.failures,
                len(events),
            )
        await self._store.settle(remove=triage.settled, failed=triage.failed)
        self._sent += len(triage.acked)
        self._failed_attempts += triage.failures
        self._drops.count_triage(triage)
        self._notify(space=True)
        return triage.failures > 0

    # --- accounting ---------------------------------------------------------------------

    def _notify(self, *, space: bool = False) -> None:
        self._progress.set()
        self._progress = anyio.Event()
        if space:
            self._space.set()
            self._space = anyio.Event()

    def stats(self) -> BufferStats:
        """A snapshot of the counters (see :class:`BufferStats`)."""
        held, held_bytes = self._buffered()
        dropped = self._drops.counts
        return BufferStats(
            buffered=held,
            buffered_bytes=held_bytes,
            sent=self._sent,
            failed_attempts=self._failed_attempts,
            refused=self._refused,
            dropped_overflow=dropped["overflow"],
            dropped_purged=dropped["purged"],
            dropped_retries=dropped["retries"],
            dropped_rejected=dropped["rejected"],
            dropped_at_close=dropped["close"],
        )
