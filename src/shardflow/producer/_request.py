"""One PutRecords request and what becomes of its records (:class:`PutRecordsRequest`).

The sender makes one handler per request; the handler sends it, reads the answer entry
by entry and resolves every record it carries (through the :class:`.Resolver`). A
delivered entry resolves its record, or every record of its aggregate (with its index as
sub-sequence number). Failed entries with a retriable code (throughput exceeded, internal
failure) go back to the accumulator, first in line, after a jittered backoff: a failed
aggregate's records all go back together (packed again with the shard map of that
moment). Other codes fail their records at once. A request-level failure (5xx, reset,
timeout) is handled the same way for every record. Every try is an :class:`Attempt`.

Off-shard aggregates. An entry that lands on a shard other than the predicted one means
the shard map is stale: it is counted as misrouted and the map is refreshed. A plain
record is delivered wherever it landed. An aggregate was written too, but a KCL consumer
drops an aggregate WHOLE when any of its records' effective hash keys falls outside the
shard's hash-key range (``AggregatorUtil.deaggregate`` in the KCL), and so does
shardflow's Consumer: its records are delivered only if the landed shard's range holds
them all. Otherwise the handler keeps the aggregate (:attr:`PutRecordsRequest.parked`)
until the refreshed map comes (:meth:`PutRecordsRequest.judge`): then every one of its
records gets a ``WrongShard`` attempt and is sent again. Meanwhile the records predicted
for that shard wait too (their lane is suspended). A parked record whose deadline passes
before the map is refreshed fails (:meth:`PutRecordsRequest.expire`).
"""

from __future__ import annotations

import time
from itertools import repeat
from operator import attrgetter
from typing import Any

from .. import errors
from .._core import aws as _aws
from .._core.logs import get_logger
from ..models import Attempt
from ..shardmap import hash_key
from ._accumulator import Accumulator
from ._records import Aggregate, Answer, Entry, Landing, PendingRecord, deliver, positions
from ._resolve import Resolver, entry_records, unpacked
from ._shards import ShardTracker
from ._transport import Transport, all_written, all_written_raw, parse_response

__all__ = ["MIN_REQUEST_TIMEOUT", "REQUEST_TIMEOUT", "WRONG_SHARD", "PutRecordsRequest"]

log = get_logger("shardflow.producer")

WRONG_SHARD = "WrongShard"
"""Error code of the attempt of an aggregate that landed where a KCL consumer drops it."""
REQUEST_TIMEOUT = 30.0
"""Longest a request may wait for its answer (it is also cut at its records' deadline)."""
MIN_REQUEST_TIMEOUT = 0.2

_monotonic = time.monotonic  # the producer's clock for deadlines and linger
_RETRIABLE: dict[str, bool] = {}
_deadline = attrgetter("deadline")
_fragment = attrgetter("fragment")
_shard = attrgetter("shard")
_repeat_shard_id = repeat("ShardId")


def _retriable(code: str) -> bool:
    known = _RETRIABLE.get(code)
    if known is None:
        known = _RETRIABLE[code] = _aws.error_for_code(code).retriable
    return known


class PutRecordsRequest:
    """One request: its entries (``batch``, carrying ``records`` user records), sent by
    :meth:`send`, which resolves every record or keeps it in :attr:`parked`."""

    __slots__ = ("_acc", "_plain", "_resolver", "_tracker", "batch", "parked", "records")

    def __init__(
        self,
        batch: list[Entry],
        records: int,
        resolver: Resolver,
        accumulator: Accumulator,
        tracker: ShardTracker | None,
    ) -> None:
        self.batch = batch
        self.records = records
        self._resolver = resolver
        self._acc = accumulator
        self._tracker = tracker
        # records on their own, without predicted shards: the fastest answers to read
        self._plain = tracker is None and not accumulator.aggregate
        self.parked: list[tuple[Aggregate, Landing]] = []
        """(aggregate, where it landed): off-shard aggregates waiting for the next map."""

    def pending(self) -> list[PendingRecord]:
        """Every record of the request (to fail them all when the sender stops)."""
        return [r for entry in self.batch for r in entry_records(entry)]

    async def send(self, transport: Transport) -> errors.AWSError | None:
        """Send the request and resolve its records by the answer (or keep off-shard
        aggregates in :attr:`parked`). Returns the request's error when it failed as a
        whole and was not retriable (e.g. the stream is gone), else None. Cancellation
        propagates with the records unresolved (the sender fails them)."""
        batch = self.batch
        resolver = self._resolver
        started_at = time.time()
        t0 = _monotonic()
        latest = max(map(_deadline, batch))
        timeout = min(REQUEST_TIMEOUT, max(latest - t0, MIN_REQUEST_TIMEOUT))
        try:
            raw = await transport.put_records(list(map(_fragment, batch)), timeout)
            # Records on their own, no predicted shard to compare with: when the answer
            # says every entry was written, it is read only if asked
            results = (
                None
                if self._plain and all_written_raw(raw, len(batch))
                else parse_response(raw, len(batch))
            )
        except errors.AWSError as exc:
            resolver.failed_requests += 1
            attempt = Attempt(exc.code, exc.message or str(exc), started_at, _monotonic() - t0)
            if resolver.on_request is not None:
                resolver.on_request(attempt.duration, exc.code)
            return self._failed(attempt, exc)
        duration = _monotonic() - t0
        if resolver.on_request is not None:
            resolver.on_request(duration, None)
        self._read(raw, results, Attempt(None, None, started_at, duration))
        return None

    def _read(self, raw: bytes, results: list[dict[str, Any]] | None, ok: Attempt) -> None:
        """Resolve the records by the answer (``results``: its entries, None when every
        entry was written, for a producer without predictions)."""
        batch = self.batch
        resolver = self._resolver
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
            resolver.kinesis_records += len(plain)
            resolver.delivered_all(plain)
            return
        done: list[PendingRecord] = []
        failed: list[tuple[Entry, dict[str, Any]]] = []
        misrouted = False
        for entry, result, position in zip(batch, results, positions(len(batch)), strict=False):
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
        resolver.kinesis_records += len(batch) - len(failed)
        if done:
            resolver.delivered_all(done)
        if failed:
            self._entries_failed(failed, ok)

    def _entries_failed(self, failed: list[tuple[Entry, dict[str, Any]]], ok: Attempt) -> None:
        """Send the failed entries again, or fail their records (grouped by code and
        message: one log line each)."""
        resolver = self._resolver
        now = _monotonic()
        expired: dict[tuple[str, str], list[PendingRecord]] = {}
        rejected: dict[tuple[str, str], list[PendingRecord]] = {}
        for entry, result in failed:
            code = str(result.get("ErrorCode") or "InvalidResponse")
            message = str(result.get("ErrorMessage") or "")
            resolver.entry_errors[code] = resolver.entry_errors.get(code, 0) + 1
            attempt = Attempt(code, message, ok.started_at, ok.duration)
            records = entry_records(entry)
            for record in records:
                resolver.record_attempt(record, attempt)
            if not _retriable(code):
                rejected.setdefault((code, message), []).extend(records)
            else:
                late = resolver.retry(unpacked(entry), now)
                if late:
                    expired.setdefault((code, message), []).extend(late)
        for (code, message), records in rejected.items():
            cause = _aws.error_for_code(code, message, "PutRecords")
            resolver.fail(records, f"Kinesis rejected the record: {code}", cause)
        for (code, message), records in expired.items():
            cause = _aws.error_for_code(code, message, "PutRecords")
            resolver.fail(records, "record_ttl ran out before a successful try", cause)

    def _failed(self, attempt: Attempt, exc: errors.AWSError) -> errors.AWSError | None:
        """The whole request failed: send its records again, or fail them."""
        resolver = self._resolver
        records = self.pending()
        for record in records:
            resolver.record_attempt(record, attempt)
        if not exc.retriable:
            resolver.fail(records, f"PutRecords failed: {exc}", exc)
            return exc
        log.debug("PutRecords failed (%s); retrying %d records", exc.code, len(records))
        now = _monotonic()
        expired = [r for entry in self.batch for r in resolver.retry(unpacked(entry), now)]
        if expired:
            resolver.fail(expired, "record_ttl ran out before a successful try", exc)
        return None

    # --- aggregates off their shard ------------------------------------------------------

    def _landed(self, agg: Aggregate, landing: Landing, done: list[PendingRecord]) -> None:
        """An aggregate was written (``landing``): deliver its records, or, if it went
        to a shard whose range may not hold them all, park it until the next map."""
        if landing.shard_id != agg.shard:
            self._misrouted()
            if not self._holds_all(agg, landing.shard_id):
                self.parked.append((agg, landing))
                self._acc.suspend(agg.shard)  # no more aggregates to the wrong shard
                return
        self._resolver.deliver_aggregate(agg, landing, done)

    def _holds_all(self, agg: Aggregate, shard_id: str) -> bool:
        """Whether ``shard_id``'s hash-key range holds the effective hash key of every
        record of ``agg`` (its explicit hash key, else the MD5 of its partition key, as
        the KCL judges it); False while the range is unknown."""
        assert self._tracker is not None
        found = self._tracker.ranges.get(shard_id)
        if found is None:
            return False
        low, high = found
        seen: set[str] = set()
        for record in agg.unpack():  # (records packed at put() keep no key of their own)
            if record.ehk is not None:
                value = int(record.ehk)
            elif record.key in seen:
                continue
            else:
                seen.add(record.key)
                value = hash_key(record.key)
            if not low <= value <= high:
                return False
        return True

    def judge(self) -> None:
        """A new shard map came (the accumulator has it): deliver the parked aggregates
        whose landed shard holds all their records, send the others' records again."""
        resolver = self._resolver
        parked, self.parked = self.parked, []
        done: list[PendingRecord] = []
        for agg, landing in parked:
            if self._holds_all(agg, landing.shard_id):
                resolver.deliver_aggregate(agg, landing, done)
                continue
            records = agg.unpack()
            log.info(
                "an aggregate of %d records predicted for %s landed on %s, whose hash-key "
                "range does not hold them all (a KCL consumer drops it whole): sending all "
                "again",
                len(records),
                agg.shard,
                landing.shard_id,
            )
            _wrong_shard(
                resolver,
                records,
                landing,
                f"the aggregate landed on {landing.shard_id}, whose hash-key range does not "
                "hold all its records (a KCL consumer drops it whole); sent again",
            )
            late = resolver.retry(records, _monotonic(), backoff=False)
            if late:
                resolver.fail(late, "record_ttl ran out before a successful try", None)
        if done:
            resolver.delivered_all(done)

    def expire(self, now: float) -> None:
        """Fail the parked records whose deadline passed before the map was refreshed."""
        keep: list[tuple[Aggregate, Landing]] = []
        late: list[PendingRecord] = []
        for item in self.parked:
            agg, landing = item
            if min(map(_deadline, agg.records)) > now:
                keep.append(item)
                continue
            _wrong_shard(
                self._resolver,
                agg.records,
                landing,
                f"the aggregate landed on {landing.shard_id}, which may not hold all its "
                "records",
            )
            late.extend(agg.records)
        self.parked = keep
        if late:
            self._resolver.fail(
                late,
                "record_ttl ran out: the aggregate landed on an unexpected shard, and the shard "
                "map could not be refreshed in time to send it again where a KCL consumer "
                "keeps it",
                None,
            )

    def parked_records(self) -> list[PendingRecord]:
        """The records of the parked aggregates."""
        return [r for agg, _ in self.parked for r in agg.records]

    def _misrouted(self) -> None:
        self._resolver.misrouted += 1
        if self._tracker is not None:
            self._tracker.mark_stale()


def _wrong_shard(
    resolver: Resolver, records: list[PendingRecord], landing: Landing, message: str
) -> None:
    """Give each of ``records`` a ``WrongShard`` attempt (its aggregate's try)."""
    attempt = Attempt(WRONG_SHARD, message, landing.ok.started_at, landing.ok.duration)
    for record in records:
        resolver.record_attempt(record, attempt)
