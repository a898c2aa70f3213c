"""Tumbling windows by event time, with allowed lateness (e.g. events per type per minute).

Windows are aligned to the epoch: an event at time ``t`` belongs to the window
``[start, start + size)`` with ``start = floor(t / size) * size``, so an event exactly at a
window's end belongs to the next window. Times are handled in whole microseconds, so
boundaries are exact for datetimes and for float seconds alike.

The watermark is the greatest event time seen minus ``allowed_lateness``. A window closes,
and is emitted, once the watermark reaches its end. An event whose window has already
closed is late beyond the allowed lateness: it is counted in ``late_events`` and handed to
``on_late`` when given (else dropped, logged at debug level). Events that arrive out of order
but whose window is still open are simply added.

Closed windows go, in order of start and then of each key's first event in the window, to
``on_window`` (a sync or async callable) when given, otherwise to the async iterator
(``async for window in windows``), which ends after ``aclose()``. ``aclose()`` emits every
window still open. With no new events the watermark stands still; ``advance(t)`` moves it
as an event at ``t`` would (for example from a timer when the input is idle).
"""

from __future__ import annotations

import inspect
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, TypeVar, overload

import anyio
from anyio.abc import AsyncResource

from .. import errors
from .._core.logs import get_logger
from .._core.validate import as_float, check_int, shown
from ..models import Record

__all__ = ["Aggregation", "TumblingWindows", "Window"]

log = get_logger("shardflow.sinks.windows")

E = TypeVar("E")
K = TypeVar("K")
A = TypeVar("A")
V = TypeVar("V")

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Window(Generic[K, A]):
    """One closed window: ``[start, end)`` in epoch seconds, its key, the aggregated
    ``value`` and the number of events (``count``) that went into it."""

    start: float
    end: float
    key: K
    value: A
    count: int


@dataclass(frozen=True, slots=True)
class Aggregation(Generic[E, A]):
    """How a window folds its events: ``add(initial(), e1)``, then ``add(that, e2)`` ...

    ``add`` may return a new value or the same (mutated) one.
    """

    initial: Callable[[], A]
    add: Callable[[A, E], A]

    @staticmethod
    def count() -> Aggregation[Any, int]:
        """The number of events (the default)."""
        return Aggregation(int, _increment)

    @staticmethod
    def sum(value: Callable[[V], float]) -> Aggregation[V, float]:
        """The sum of ``value(event)``."""
        return Aggregation(float, lambda total, event: total + value(event))

    @staticmethod
    def collect() -> Aggregation[V, list[V]]:
        """The events themselves, in arrival order."""

        def append(acc: list[V], event: V) -> list[V]:
            acc.append(event)
            return acc

        return Aggregation(list, append)


def _increment(n: int, _event: object) -> int:
    return n + 1


def _default_time(event: object) -> float | datetime:
    if isinstance(event, Record):
        return event.arrival_time
    if isinstance(event, Mapping) and "time" in event:
        value: float | datetime = event["time"]
        return value
    raise TypeError(
        f"cannot find an event time in a {type(event).__name__}: pass event_time= "
        "(a function returning epoch seconds or a datetime)"
    )


def _to_us(value: object) -> int:
    if isinstance(value, datetime):
        when = value.replace(tzinfo=_UTC) if value.tzinfo is None else value
        return (when - _EPOCH) // _US
    if isinstance(value, int | float) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value * 1_000_000):
            raise ValueError(f"event time must be finite, got {value!r}")
        return round(value * 1_000_000)
    raise TypeError(
        f"event time must be epoch seconds (int/float) or a datetime, got {type(value).__name__}"
    )


class _Cell(Generic[A]):
    __slots__ = ("count", "value")

    def __init__(self, value: A) -> None:
        self.value = value
        self.count = 0


class TumblingWindows(AsyncResource, Generic[E, K, A]):
    """Tumbling event-time windows of ``size`` seconds, per ``key(event)``.

    Options (keyword-only, validated here):

    - ``key``: the grouping function (default: every event has the key None).
    - ``aggregation``: an :class:`Aggregation` (default ``Aggregation.count()``).
    - ``allowed_lateness``: seconds an event may trail the greatest event time seen and
      still be counted in its window (default 0).
    - ``event_time``: returns epoch seconds or a datetime (naive means UTC). Default: a
      Record's ``arrival_time``, or a mapping's ``"time"`` field (the collector's).
    - ``on_window``: receives each closed window (sync or async). Without it, iterate.
    - ``on_late``: receives each event dropped as too late (sync or async).
    - ``max_buffered``: closed windows held for the iterator; ``add`` waits while full.

    Use one task to feed it. ``async with`` closes it (emitting what is open) on exit.
    """

    @overload
    def __init__(
        self: TumblingWindows[E, K, int],
        size: float,
        *,
        key: Callable[[E], K] | None = None,
        aggregation: None = None,
        allowed_lateness: float = 0.0,
        event_time: Callable[[E], float | datetime] | None = None,
        on_window: Callable[[Window[K, int]], object] | None = None,
        on_late: Callable[[E], object] | None = None,
        max_buffered: int = 10_000,
    ) -> None: ...

    @overload
    def __init__(
        self,
        size: float,
        *,
        key: Callable[[E], K] | None = None,
        aggregation: Aggregation[E, A],
        allowed_lateness: float = 0.0,
        event_time: Callable[[E], float | datetime] | None = None,
        on_window: Callable[[Window[K, A]], object] | None = None,
        on_late: Callable[[E], object] | None = None,
        max_buffered: int = 10_000,
    ) -> None: ...

    def __init__(
        self,
        size: float,
        *,
        key: Callable[[E], K] | None = None,
        aggregation: Aggregation[E, Any] | None = None,
        allowed_lateness: float = 0.0,
        event_time: Callable[[E], float | datetime] | None = None,
        on_window: Callable[[Window[K, Any]], object] | None = None,
        on_late: Callable[[E], object] | None = None,
        max_buffered: int = 10_000,
    ) -> None:
        if not _nonneg("size", size) or size <= 0:
            raise ValueError(f"size must be a positive number of seconds, got {shown(size)}")
        if not _nonneg("allowed_lateness", allowed_lateness):
            raise ValueError(
                "allowed_lateness must be a non-negative number of seconds, "
                f"got {shown(allowed_lateness)}"
            )
        self._size_us = round(size * 1_000_000)
        if self._size_us < 1:
            raise ValueError(f"size must be at least one microsecond, got {size!r}")
        for name, fn in (
            ("key", key),
            ("event_time", event_time),
            ("on_window", on_window),
            ("on_late", on_late),
        ):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        if aggregation is not None and not isinstance(aggregation, Aggregation):
            raise TypeError(f"aggregation must be an Aggregation, got {type(aggregation).__name__}")
        check_int("max_buffered", max_buffered, 1)
        self.size = float(size)
        self.allowed_lateness = float(allowed_lateness)
        self._lateness_us = round(allowed_lateness * 1_000_000)
        self._key: Callable[[E], Any] = key if key is not None else _no_key
        self._agg: Aggregation[E, Any] = aggregation or Aggregation.count()
        self._time: Callable[[E], object] = event_time if event_time is not None else _default_time
        self._on_window = on_window
        self._on_late = on_late
        self._open: dict[int, dict[Any, _Cell[Any]]] = {}
        self._ready: deque[Window[K, Any]] = deque()
        self._max_us: int | None = None
        self._closed_until: int | None = None  # windows ending at or before this are closed
        self._late = 0
        self._emitted = 0
        self._closed = False
        self._send, self._receive = anyio.create_memory_object_stream[Window[K, A]](max_buffered)

    # -- inspection ----------------------------------------------------------------------

    @property
    def watermark(self) -> float | None:
        """Greatest event time seen minus the allowed lateness (None before any event)."""
        if self._max_us is None:
            return None
        return (self._max_us - self._lateness_us) / 1_000_000

    @property
    def late_events(self) -> int:
        """Events dropped because their window had closed."""
        return self._late

    @property
    def open_windows(self) -> int:
        """(window, key) pairs still accumulating."""
        return sum(len(cells) for cells in self._open.values())

    # -- input ---------------------------------------------------------------------------

    async def add(self, event: E) -> None:
        """Add one event; emit the windows its time closes.

        Raises errors.SinkClosed after ``aclose()``, and whatever ``event_time``, ``key`` or
        the aggregation raise (TypeError/ValueError for a bad time): then the event is not
        counted and nothing else changes. An exception from ``on_window`` propagates; that
        window stays first in line and is emitted again by the next call (windows are
        emitted at least once, in order). Cancellation during an emission likewise leaves
        the window in line.
        """
        self._check_open()
        at = _to_us(self._time(event))
        key = self._key(event)
        start = at // self._size_us * self._size_us
        if self._closed_until is not None and start + self._size_us <= self._closed_until:
            self._late += 1
            if self._on_late is not None:
                await _call(self._on_late, event)
            else:
                log.debug("dropped a late event at %s (watermark %s)", at / 1e6, self.watermark)
            await self._emit_ready()
            return
        cells = self._open.get(start)
        cell = cells.get(key) if cells is not None else None
        value = self._agg.add(self._agg.initial() if cell is None else cell.value, event)
        if cells is None:
            cells = self._open[start] = {}
        if cell is None:
            cell = cells[key] = _Cell(value)
        cell.value = value
        cell.count += 1
        self._advance_us(at)
        await self._emit_ready()

    async def add_many(self, events: Iterable[E]) -> None:
        """``add`` each event in turn (a failure stops at the failing event)."""
        for event in events:
            await self.add(event)

    async def advance(self, event_time: float | datetime) -> None:
        """Move the watermark as an event at ``event_time`` would, without adding one.

        Never moves it back. Emits the windows that close. Raises like :meth:`add`.
        """
        self._check_open()
        self._advance_us(_to_us(event_time))
        await self._emit_ready()

    async def aclose(self) -> None:
        """Emit every open window (in order), then end the iterator. Idempotent.

        If ``on_window`` raises, the remaining windows stay in line and a later ``aclose()``
        emits them.
        """
        if not self._closed:
            self._closed = True
            self._close_until(None)
        await self._emit_ready()
        await self._send.aclose()

    def __aiter__(self) -> AsyncIterator[Window[K, A]]:
        if self._on_window is not None:
            raise RuntimeError("windows go to on_window; iterate only without it")
        return self._receive.__aiter__()

    # -- internals -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise errors.SinkClosed("TumblingWindows is closed")

    def _advance_us(self, at: int) -> None:
        if self._max_us is not None and at <= self._max_us:
            return
        self._max_us = at
        horizon = (at - self._lateness_us) // self._size_us * self._size_us
        if self._closed_until is None or horizon > self._closed_until:
            self._closed_until = horizon
            self._close_until(horizon)

    def _close_until(self, horizon: int | None) -> None:
        """Move windows ending at or before ``horizon`` (all when None) to the ready line."""
        for start in sorted(self._open):
            end = start + self._size_us
            if horizon is not None and end > horizon:
                break
            for key, cell in self._open.pop(start).items():
                self._ready.append(Window(start / 1e6, end / 1e6, key, cell.value, cell.count))

    async def _emit_ready(self) -> None:
        while self._ready:
            window = self._ready[0]
            if self._on_window is not None:
                await _call(self._on_window, window)
            else:
                await self._send.send(window)
            self._ready.popleft()
            self._emitted += 1


def _no_key(_event: object) -> None:
    return None


async def _call(fn: Callable[[Any], object], arg: object) -> None:
    result = fn(arg)
    if inspect.isawaitable(result):
        await result


def _nonneg(name: str, value: object) -> bool:
    """A number of seconds >= 0 whose microseconds are finite (an int beyond float range
    is a ValueError naming the option)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    seconds = as_float(name, value, "a finite number of seconds")
    return value >= 0 and (isinstance(value, int) or math.isfinite(seconds * 1_000_000))
