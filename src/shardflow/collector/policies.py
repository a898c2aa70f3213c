"""BufferedOutput's policies: which events leave the buffer unsent, and how that is counted.

Delivery is at least once: an event can be sent twice (the output delivered it, then the
process died before the spool forgot it; consumers deduplicate by ``event_id``), and it
leaves the buffer only when the output confirmed it, or when a policy drops it. Every
drop is counted in :meth:`BufferedOutput.stats`, logged on ``shardflow.collector`` and
passed to ``on_drop`` if given. The policies:

- ``overflow="drop_oldest"``: a full buffer evicts its oldest events (reason ``overflow``);
  an event being sent at that moment may still arrive, but is counted as dropped;
- ``purge_age``: events older than this many seconds are dropped unsent (``purged``);
- ``max_retries``: an event whose sends failed ``1 + max_retries`` times is dropped
  (``retries``); the default, None, retries forever with capped backoff;
- an event the output rejects with a ``ValueError``/``TypeError`` (e.g. an invalid
  partition key) is dropped at once (``rejected``): retrying cannot help;
- without a spool, events still buffered when :meth:`BufferedOutput.aclose` gives up are
  lost with the process (``close``); with a spool they stay on disk for the next start.

``overflow="block"`` makes ``post()`` wait for room and ``overflow="raise"`` makes it raise
:class:`errors.BufferFull`; neither drops anything.

:class:`Triage` sorts one batch by these rules (no I/O); :class:`Drops` counts, logs and
reports what is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import orjson

from .._core.logs import get_logger
from .outputs import Event
from .spool import Entry

__all__ = [
    "OVERFLOW",
    "BufferStats",
    "DropHook",
    "Drops",
    "Overflow",
    "Triage",
]

log = get_logger("shardflow.collector")

Overflow = Literal["block", "drop_oldest", "raise"]
OVERFLOW: tuple[Overflow, ...] = ("block", "drop_oldest", "raise")
DropHook = Callable[[Sequence[Event], str], object]
"""``on_drop(events, reason)``; reason is overflow, purged, retries, rejected or close."""


@dataclass(frozen=True, slots=True)
class BufferStats:
    """Counters of a BufferedOutput since it was created (``buffered*`` are current)."""

    buffered: int
    buffered_bytes: int
    sent: int
    failed_attempts: int
    refused: int
    dropped_overflow: int
    dropped_purged: int
    dropped_retries: int
    dropped_rejected: int
    dropped_at_close: int

    @property
    def dropped(self) -> int:
        """Every event dropped by a policy, for any reason."""
        return (
            self.dropped_overflow
            + self.dropped_purged
            + self.dropped_retries
            + self.dropped_rejected
            + self.dropped_at_close
        )


@dataclass(slots=True)
class Triage:
    """One batch from the buffer, sorted by what becomes of each entry.

    :meth:`decode` sets aside the expired and the undecodable entries and decodes the rest
    (``live``, with their ``events``); :meth:`judge` sorts ``live`` by the output's results.
    """

    live: list[Entry] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    acked: list[Entry] = field(default_factory=list)
    failed: list[Entry] = field(default_factory=list)
    """Failed this time, to be retried."""
    exhausted: list[Entry] = field(default_factory=list)
    """Failed this time with no retry left (``max_retries``)."""
    expired: list[Entry] = field(default_factory=list)
    rejected: list[Entry] = field(default_factory=list)
    first_rejection: BaseException | None = None

    @classmethod
    def decode(cls, batch: Sequence[Entry], expired: Callable[[Entry], bool]) -> Triage:
        triage = cls()
        for entry in batch:
            if expired(entry):
                triage.expired.append(entry)
                continue
            try:
                event = orjson.loads(entry.data)
                if not isinstance(event, dict):
                    raise TypeError(f"not a JSON object: {type(event).__name__}")
            except (TypeError, ValueError) as exc:  # a corrupt spool row
                triage._reject(entry, exc)
                continue
            triage.live.append(entry)
            triage.events.append(event)
        return triage

    def judge(
        self,
        results: Sequence[BaseException | None],
        *,
        whole_batch: bool,
        max_retries: int | None,
    ) -> None:
        """Sort ``live`` by ``results`` (one per event). ``whole_batch``: the send failed
        as a whole, so no error is the event's own fault (nothing is rejected)."""
        for entry, result in zip(self.live, results, strict=True):
            if result is None:
                self.acked.append(entry)
            elif not whole_batch and isinstance(result, ValueError | TypeError):
                self._reject(entry, result)
            elif max_retries is not None and entry.attempts >= max_retries:
                self.exhausted.append(entry)
            else:
                self.failed.append(entry)

    def _reject(self, entry: Entry, error: BaseException) -> None:
        self.rejected.append(entry)
        self.first_rejection = self.first_rejection or error

    @property
    def settled(self) -> list[Entry]:
        """The entries that leave the buffer: sent or dropped."""
        return self.acked + self.expired + self.rejected + self.exhausted

    @property
    def failures(self) -> int:
        """Events whose send failed this time (retried or not)."""
        return len(self.failed) + len(self.exhausted)


class Drops:
    """Counts dropped events per reason, logs each drop and calls ``on_drop``."""

    def __init__(self, owner: object, on_drop: DropHook | None) -> None:
        self._owner = owner
        self._on_drop = on_drop
        self.counts = {"overflow": 0, "purged": 0, "retries": 0, "rejected": 0, "close": 0}

    def count_triage(self, triage: Triage) -> None:
        """Count the drops a batch's triage decided."""
        if triage.expired:
            self.count("purged", triage.expired)
        if triage.rejected:
            self.count("rejected", triage.rejected, triage.first_rejection)
        if triage.exhausted:
            self.count("retries", triage.exhausted)

    def count(
        self, reason: str, entries: Sequence[Entry], error: BaseException | None = None
    ) -> None:
        self.counts[reason] += len(entries)
        because = f": {error}" if error is not None else ""
        log.warning(
            "%r: dropped %d events (%s%s); %d dropped in total",
            self._owner,
            len(entries),
            reason,
            because,
            sum(self.counts.values()),
        )
        if self._on_drop is None:
            return
        events: list[Event] = []
        for entry in entries:
            try:
                events.append(orjson.loads(entry.data))
            except orjson.JSONDecodeError:
                events.append({"_undecodable": entry.data.decode("utf-8", "replace")})
        try:
            self._on_drop(events, reason)
        except Exception:
            log.exception("%r: on_drop callback failed", self._owner)
