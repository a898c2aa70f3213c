"""What ``shardflow demo`` measures and prints: the tally, the S3 read-back, the summary.

The :class:`Tally` is filled while the demo runs (by the consumers' archive taps); the
:class:`Summary` is built at the end from the tally and from reading every archived
object back from S3 (events deduplicated by ``event_id``).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import anyio
import anyio.to_thread
import orjson

from .._core import resources as _resources
from ..sinks import Window

__all__ = [
    "ArchiveContents",
    "Console",
    "Minutes",
    "Summary",
    "Tally",
    "format_progress",
    "format_summary",
    "format_window",
    "percentile",
    "read_archive",
]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(slots=True)
class Tally:
    """Counters shared by the demo's tasks (one event loop: no locks needed)."""

    delivered: set[str] = field(default_factory=set)
    """Distinct event ids the consumers received."""
    deliveries: int = 0
    """Records the consumers received, repeats included."""
    archived: set[str] = field(default_factory=set)
    """Distinct event ids in objects S3Sink reported written."""
    delivery_latency: list[float] = field(default_factory=list)
    """Seconds from post() to the first delivery to a consumer, per event."""
    archive_latency: list[float] = field(default_factory=list)
    """Seconds from post() to the report that its S3 object is written, per event."""
    in_aggregates: int = 0
    """Records the consumers received that came out of a KPL aggregate."""
    by_worker: Counter[str] = field(default_factory=Counter)
    """Records each worker archived (repeats included)."""
    target: int | None = None
    """Distinct events to wait for (set by :meth:`expect` once posting is over)."""
    all_archived: anyio.Event = field(default_factory=anyio.Event)
    """Set once ``target`` events are archived."""

    def expect(self, events: int) -> None:
        """Wait for ``events`` distinct events: ``all_archived`` is set once they are."""
        self.target = events
        self.check_archived()

    def check_archived(self) -> None:
        """Set ``all_archived`` if the target is reached (call after archiving more)."""
        if self.target is not None and len(self.archived) >= self.target:
            self.all_archived.set()


@dataclass(frozen=True, slots=True)
class ArchiveContents:
    """Every line of every object under the demo's prefix."""

    objects: int
    lines: int
    event_ids: frozenset[str]
    unreadable: int
    """Lines that are not a JSON object with an ``event_id``."""

    @property
    def duplicates(self) -> int:
        return self.lines - self.unreadable - len(self.event_ids)


async def read_archive(s3: Any, bucket: str, prefix: str) -> ArchiveContents:
    """Read back (and gunzip) every object under ``prefix``; raises errors.AWSError."""
    objects = lines = unreadable = 0
    ids: set[str] = set()
    async for key in _resources.list_keys(s3, bucket, prefix):
        objects += 1
        for line in (await _resources.read_object(s3, bucket, key)).splitlines():
            if not line.strip():
                continue
            lines += 1
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                unreadable += 1
                continue
            event_id = event.get("event_id") if isinstance(event, dict) else None
            if isinstance(event_id, str):
                ids.add(event_id)
            else:
                unreadable += 1
    return ArchiveContents(objects, lines, frozenset(ids), unreadable)


@dataclass(frozen=True, slots=True)
class Summary:
    """The demo's result. ``lost`` must be 0."""

    events: int
    users: int
    shards: int
    workers: int
    endpoint: str
    posted: int
    archive: ArchiveContents
    lost: int
    unexpected: int
    """Event ids found in S3 that were never posted (must be 0)."""
    post_seconds: float
    """From the first post() to the last one returning (events committed to the spool)."""
    pipeline_seconds: float
    """From the first post() to the moment every event was reported archived (or gave up)."""
    wall_seconds: float
    delivery_p50: float | None
    delivery_p99: float | None
    archive_p50: float | None
    archive_p99: float | None
    late_events: int
    by_worker: Mapping[str, int]
    minutes: Sequence[tuple[float, Mapping[str, int]]]
    deliveries: int
    in_aggregates: int

    @property
    def ok(self) -> bool:
        return self.lost == 0


def _n(value: int) -> str:
    return f"{value:,}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _minute(start: float) -> str:
    return datetime.fromtimestamp(start, timezone.utc).strftime("%H:%M")


def format_window(start: float, counts: Mapping[str, int]) -> str:
    """One line of per-minute counts: ``12:04 UTC  view 4,102 · click 2,311 ...``."""
    total = sum(counts.values())
    parts = " · ".join(f"{kind} {_n(n)}" for kind, n in sorted(counts.items(), key=_by_count))
    return f"{_minute(start)} UTC  {_n(total):>7} events: {parts}"


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def format_progress(
    elapsed: float,
    phase: str,
    *,
    events: int,
    posted: int,
    sent: int,
    tally: Tally,
    shards: Mapping[str, int],
) -> str:
    """One progress line (plain text, for standard error); ``shards``: how many shards
    each worker reads now."""
    group = ", ".join(f"{name} {n}" for name, n in sorted(shards.items()))
    return (
        f"[{elapsed:5.1f}s] {phase:<9} posted {_n(posted)}/{_n(events)} · "
        f"to Kinesis {_n(sent)} · consumed {_n(len(tally.delivered))} · "
        f"in S3 {_n(len(tally.archived))} · shards read by {group}"
    )


def format_summary(summary: Summary) -> str:
    """The end-of-run report (plain text, for standard output)."""
    a = summary.archive
    post_rate = summary.posted / summary.post_seconds if summary.post_seconds > 0 else 0.0
    e2e = len(a.event_ids) / summary.pipeline_seconds if summary.pipeline_seconds > 0 else 0.0
    if summary.in_aggregates:
        aggregation = (
            f"{_n(summary.in_aggregates)} of {_n(summary.deliveries)} records read came out "
            "of KPL aggregates"
        )
    else:
        aggregation = "aggregate=True requested; every record read arrived on its own"
    lines = [
        "",
        f"shardflow demo: {_n(summary.events)} events from {_n(summary.users)} users "
        f"-> Collector -> Kinesis ({summary.shards} shards) "
        f"-> {summary.workers}-worker consumer group -> S3",
        f"  endpoint              {summary.endpoint}",
        f"  aggregation           {aggregation}",
        f"  events posted         {_n(summary.posted)}",
        f"  events in S3          {_n(len(a.event_ids))}  (distinct event_id; "
        f"{_n(a.lines)} lines in {_n(a.objects)} objects, read back from S3)",
        f"  duplicates            {_n(a.duplicates)}",
        f"  lost                  {_n(summary.lost)}",
    ]
    if summary.unexpected or a.unreadable:
        lines.append(
            f"  unexpected            {_n(summary.unexpected)} unknown event ids, "
            f"{_n(a.unreadable)} unreadable lines"
        )
    lines += [
        f"  throughput            {_n(round(post_rate))} events/s posted (spooled), "
        f"{_n(round(e2e))} events/s end to end (post -> S3)",
        f"  latency post -> S3    p50 {_s(summary.archive_p50)}, p99 {_s(summary.archive_p99)}"
        "  (collector time stamp to S3Sink reporting the object written)",
        f"  latency post -> read  p50 {_s(summary.delivery_p50)}, "
        f"p99 {_s(summary.delivery_p99)}  (to first delivery to a consumer)",
        "  archived per worker   "
        + ", ".join(f"{name} {_n(n)}" for name, n in sorted(summary.by_worker.items())),
    ]
    if summary.minutes:
        lines.append("  per-minute counts (event time, tumbling windows by event type):")
        lines += [f"    {format_window(start, counts)}" for start, counts in summary.minutes]
    if summary.late_events:
        lines.append(f"  late events           {_n(summary.late_events)} (past allowed lateness)")
    lines.append(f"  wall time             {summary.wall_seconds:.1f} s")
    lines.append(
        "  result                OK: nothing lost"
        if summary.ok
        else f"  result                FAILED: {_n(summary.lost)} events lost"
    )
    return "\n".join(lines)


# --- live display --------------------------------------------------------------------------


class Console:
    """Lines for standard error, written from a worker thread (never in the loop)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._lines: list[str] = []

    def say(self, line: str) -> None:
        if self.enabled:
            self._lines.append(line)

    async def drain(self) -> None:
        """Write what was said so far. Cancellation may drop those lines."""
        lines, self._lines = self._lines, []
        if lines:
            await anyio.to_thread.run_sync(_write_stderr, "\n".join(lines) + "\n")


def _write_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


class Minutes:
    """Collects closed windows (one per minute and event type) into per-minute lines,
    announced on the console as each minute closes."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self.minutes: dict[float, dict[str, int]] = {}
        self._open: float | None = None

    def add(self, window: Window[str, int]) -> None:
        """``on_window`` of the demo's TumblingWindows (windows come in order of start)."""
        if self._open is not None and window.start != self._open:
            self._announce(self._open)
        self._open = window.start
        self.minutes.setdefault(window.start, {})[window.key] = window.value

    def finish(self) -> None:
        if self._open is not None:
            self._announce(self._open)
            self._open = None

    def _announce(self, start: float) -> None:
        self._console.say("window closed: " + format_window(start, self.minutes[start]))
