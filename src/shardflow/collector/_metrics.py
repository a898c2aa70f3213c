"""The collector's instruments (see :mod:`shardflow._core.metrics`): all observed from the
counters :meth:`Collector.stats` and :meth:`BufferedOutput.stats` read, so posting an
event costs nothing more."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .._core.metrics import Attributes, Meter, Observable, stat

__all__ = ["buffer_metrics", "collector_metrics"]

_DROP_REASONS = {
    "overflow": "dropped_overflow",
    "purged": "dropped_purged",
    "retries": "dropped_retries",
    "rejected": "dropped_rejected",
    "close": "dropped_at_close",
}


def _collector_dropped(collector: Any) -> Iterable[tuple[float, Attributes]]:
    s = collector.stats()
    return ((s.filtered_out, {"reason": "filter"}), (s.unrouted, {"reason": "unrouted"}))


def _buffer_dropped(output: Any) -> Iterable[tuple[float, Attributes]]:
    s = output.stats()
    return [(getattr(s, field), {"reason": reason}) for reason, field in _DROP_REASONS.items()]


_COLLECTOR = (
    Observable("counter", "shardflow.collector.events.posted", "{event}",
               "Events accepted by post() (before filters)", stat("posted")),
    Observable("counter", "shardflow.collector.events.dropped", "{event}",
               "Events dropped before any output (reason=filter: a filter returned None; "
               "reason=unrouted: no output matched the tag)", _collector_dropped),
    Observable("counter", "shardflow.collector.events.failed", "{event}",
               "Posts that raised because an output refused the event", stat("failed")),
)

_BUFFER = (
    Observable("updown", "shardflow.collector.spool.events", "{event}",
               "Events held in the buffer (spooled, or queued for a spool commit)",
               stat("buffered")),
    Observable("updown", "shardflow.collector.spool.size", "By",
               "Bytes of the events held in the buffer", stat("buffered_bytes")),
    Observable("counter", "shardflow.collector.events.sent", "{event}",
               "Events the output accepted", stat("sent")),
    Observable("counter", "shardflow.collector.send.failures", "{event}",
               "Failed tries of events (retried by policy)", stat("failed_attempts")),
    Observable("counter", "shardflow.collector.events.refused", "{event}",
               "Events refused at post() (overflow='raise', or closed)", stat("refused")),
    Observable("counter", "shardflow.collector.spool.dropped", "{event}",
               "Events dropped by policy (reason: overflow, purged, retries, rejected, close)",
               _buffer_dropped),
)


def collector_metrics(collector: Any, meter: Meter) -> None:
    """Observe ``collector``'s counters."""
    meter.observe(collector, _COLLECTOR, {})


def buffer_metrics(output: Any, meter: Meter) -> None:
    """Observe a BufferedOutput's counters (attribute ``shardflow.output``: the type of
    the output it feeds)."""
    meter.observe(output, _BUFFER, {"shardflow.output": type(output.output).__name__})
