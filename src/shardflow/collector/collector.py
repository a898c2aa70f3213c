"""The Collector: what an application calls to log (after Cookpad's Puree and fluentd).

``post(tag, event)`` stamps the event, runs the filters whose pattern matches the tag (in
the order they were added), and hands the result to every output whose pattern matches.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from anyio.abc import AsyncResource

from .. import errors
from .._core import metrics as _metrics
from .._core import trace as _trace
from .._core.logs import get_logger
from .._core.validate import check_bool, shown
from ._metrics import collector_metrics
from .buffered import BufferedOutput
from .outputs import Event, Output, close_output, start_output
from .tags import TagPattern, validate_tag

__all__ = ["Collector", "CollectorStats", "Filter"]

log = get_logger("shardflow.collector")

Filter = Callable[[Event], Event | Awaitable[Event | None] | None]
"""``fn(event) -> event | None``, sync or async; None drops the event."""

_NEW, _OPEN, _CLOSING, _CLOSED = range(4)
_ROUTE_CACHE_SIZE = 4096


@dataclass(frozen=True, slots=True)
class CollectorStats:
    """Counters since the collector was created.

    ``posted``: events accepted by :meth:`Collector.post` (before filters);
    ``filtered_out``: dropped by a filter; ``unrouted``: matched no output;
    ``failed``: posts that raised because an output refused the event.
    """

    posted: int
    filtered_out: int
    unrouted: int
    failed: int


def _serialise(event: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(event)
    except TypeError as exc:
        raise errors.SerializationError(f"event is not JSON-serialisable: {exc}") from exc


class Collector(AsyncResource):
    """Routes tagged events through filters to outputs.

    ::

        collector = Collector()
        collector.filter("app.**", add_fields({"app": "shop"}))
        collector.output("app.**", BufferedOutput(KinesisOutput(producer), spool="spool.db"))
        async with collector:
            await collector.post("app.click", {"user_id": "u1", "item": 3})

    Events are mappings with string keys and JSON-serialisable values (orjson: dates and
    dataclasses are turned into JSON); anything else raises TypeError at ``post()``. Each
    event gets ``event_id`` (a UUID4 string), ``tag`` and ``time`` (epoch seconds) unless
    it has them. Filters get a private deep copy, so they may change it in place; every
    output gets its own copy of the filtered event, so one output cannot affect another
    (or the caller). Outputs are started on ``async with`` and closed (flushed) on exit.
    ``meter_provider``: an OpenTelemetry MeterProvider for its metrics (default: the
    global one when OpenTelemetry is installed). ``trace_context=True`` (needs the
    ``otel`` extra) adds ``traceparent``, the W3C trace context of the span current at
    :meth:`post`, to each event that has none, so a consumer can continue the trace.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        meter_provider: Any = None,
        trace_context: bool = False,
    ) -> None:
        check_bool("trace_context", trace_context)
        if trace_context:
            _trace.check_available()
        self._trace_context = trace_context
        if not callable(clock):
            raise TypeError(f"clock must be callable() -> epoch seconds, got {shown(clock)}")
        self._clock = clock
        self._filters: list[tuple[TagPattern, Filter]] = []
        self._outputs: list[tuple[TagPattern, Output]] = []
        self._routes: dict[str, tuple[tuple[tuple[TagPattern, Filter], ...], tuple[Output, ...]]]
        self._routes = {}
        self._state = _NEW
        self._posted = self._filtered = self._unrouted = self._failed = 0
        meter = _metrics.meter(meter_provider)
        if meter is not None:
            collector_metrics(self, meter)

    def __repr__(self) -> str:
        return f"Collector({len(self._filters)} filters, {len(self._outputs)} outputs)"

    # --- configuration ------------------------------------------------------------------

    def filter(self, pattern: str, fn: Filter) -> None:
        """Run ``fn`` on events whose tag matches ``pattern`` (after earlier filters).

        ``fn(event)`` returns the event (changed or not, or a new dict), or None to drop
        it; it may be a coroutine function. Raises ValueError for an invalid pattern.
        """
        compiled = TagPattern(pattern)
        if not callable(fn):
            raise TypeError(f"filter must be callable(event) -> event | None, got {shown(fn)}")
        self._filters.append((compiled, fn))
        self._routes.clear()

    def output(self, pattern: str, output: Output) -> None:
        """Send events whose tag matches ``pattern`` to ``output`` (add before starting).

        Raises ValueError for an invalid pattern, TypeError for an object without
        ``send``, RuntimeError once the collector has started.
        """
        compiled = TagPattern(pattern)
        if not callable(getattr(output, "send", None)):
            raise TypeError(
                f"output must have an async send(events) method, got {type(output).__name__}"
            )
        if self._state != _NEW:
            raise RuntimeError("add outputs before the collector starts (async with)")
        self._outputs.append((compiled, output))
        self._routes.clear()

    def _route(
        self, tag: str
    ) -> tuple[tuple[tuple[TagPattern, Filter], ...], tuple[Output, ...]]:
        route = self._routes.get(tag) if isinstance(tag, str) else None
        if route is None:
            validate_tag(tag)
            filters = tuple(f for f in self._filters if f[0].matches(tag))
            outputs: list[Output] = []
            for pattern, output in self._outputs:
                if pattern.matches(tag) and not any(o is output for o in outputs):
                    outputs.append(output)
            route = (filters, tuple(outputs))
            if len(self._routes) >= _ROUTE_CACHE_SIZE:
                self._routes.clear()
            self._routes[tag] = route
        return route

    def _unique_outputs(self) -> list[Output]:
        seen: list[Output] = []
        for _, output in self._outputs:
            if not any(o is output for o in seen):
                seen.append(output)
        return seen

    # --- posting ------------------------------------------------------------------------

    async def post(self, tag: str, event: Mapping[str, Any]) -> str | None:
        """Stamp, filter and hand ``event`` to every output matching ``tag``.

        Returns the event's ``event_id``, or None if a filter dropped it. Waits as long
        as an output does (a spooled BufferedOutput: until the event is committed; a full
        one with ``overflow="block"``: for room). Raises ValueError/TypeError for an
        invalid tag, a non-mapping or non-serialisable event (``errors.SerializationError``),
        whatever a filter raises, :class:`errors.CollectorClosed` outside ``async with``,
        and an output's refusal (e.g. :class:`errors.BufferFull`) after every other
        matching output got the event. If cancelled, some outputs may have the event.
        """
        filters, outputs = self._route(tag)
        if not isinstance(event, Mapping):
            raise TypeError(
                f"event must be a mapping (dict) of JSON values, got {type(event).__name__}"
            )
        if self._state != _OPEN:
            raise errors.CollectorClosed(
                "the collector is not started" if self._state == _NEW else "collector closed"
            )
        self._posted += 1
        stamped: Event = dict(event)
        if "event_id" not in stamped:
            stamped["event_id"] = str(uuid.uuid4())
        if "tag" not in stamped:
            stamped["tag"] = tag
        if "time" not in stamped:
            stamped["time"] = self._clock()
        if self._trace_context and "traceparent" not in stamped:
            parent = _trace.traceparent()
            if parent is not None:
                stamped["traceparent"] = parent
        if filters:
            stamped = orjson.loads(_serialise(stamped))
            for pattern, fn in filters:
                result = fn(stamped)
                if inspect.isawaitable(result):
                    result = await result
                if result is None:
                    self._filtered += 1
                    return None
                if not isinstance(result, dict):
                    raise TypeError(
                        f"filter {fn!r} (for {pattern.pattern!r}) returned "
                        f"{type(result).__name__}; expected a dict, or None to drop the event"
                    )
                stamped = result
        event_id = stamped.get("event_id")
        if not outputs:
            self._unrouted += 1
            _serialise(stamped)  # bad input fails the same way with or without outputs
            return None if event_id is None else str(event_id)
        data = _serialise(stamped)
        failure: Exception | None = None
        for output in outputs:
            try:
                if isinstance(output, BufferedOutput):
                    await output.post_json(data)
                else:
                    results = await output.send([orjson.loads(data)])
                    if results and results[0] is not None:
                        raise results[0]
            except Exception as exc:
                if failure is None:
                    failure = exc
                else:
                    log.error("output %r refused event %s: %s", output, event_id, exc)
        if failure is not None:
            self._failed += 1
            raise failure
        return None if event_id is None else str(event_id)

    async def flush(self) -> None:
        """Flush every output that can (BufferedOutput): wait until what was posted
        before this call is sent or dropped by policy. Safe to cancel."""
        for output in self._unique_outputs():
            flush: Callable[[], Awaitable[None]] | None = getattr(output, "flush", None)
            if flush is not None:
                await flush()

    def stats(self) -> CollectorStats:
        return CollectorStats(self._posted, self._filtered, self._unrouted, self._failed)

    # --- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Collector:
        """Start every output (in the order added); on failure close those started."""
        if self._state != _NEW:
            raise RuntimeError("a Collector can be started only once")
        started: list[Output] = []
        try:
            for output in self._unique_outputs():
                await start_output(output)
                started.append(output)
        except BaseException:
            self._state = _CLOSED
            await self._close_all(reversed(started))
            raise
        self._state = _OPEN
        return self

    async def aclose(self) -> None:
        """Refuse new posts, then close (and so flush) every output, last added first.

        Idempotent. Each BufferedOutput flushes for up to its ``close_timeout``. If
        cancelled, the remaining outputs are still closed, without flushing.
        """
        if self._state in (_CLOSING, _CLOSED):
            return
        self._state = _CLOSING
        try:
            await self._close_all(reversed(self._unique_outputs()))
        finally:
            self._state = _CLOSED

    @staticmethod
    async def _close_all(outputs: Iterable[Output]) -> None:
        """Close each output; a cancellation is re-raised after all were closed (each
        BufferedOutput then skips its flush but still cleans up)."""
        cancelled: BaseException | None = None
        for output in outputs:
            try:
                await close_output(output)
            except Exception:
                log.exception("closing output %r failed", output)
            except BaseException as exc:
                cancelled = cancelled or exc
        if cancelled is not None:
            raise cancelled
