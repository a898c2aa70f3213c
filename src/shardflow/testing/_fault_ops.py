"""What :class:`shardflow.testing.FaultProxy` does to each Kinesis operation (private).

:class:`FaultEngine` holds the fault settings, the seeded random generator, the counts,
the per-shard budgets and the shard and iterator maps, and turns one request into one
answer. It does no I/O of its own: it calls the ``forward`` coroutine it is given for the
request at hand, and a ``list_shards`` coroutine for shard maps. The HTTP side (server,
connections, resets, stall, latency) is the proxy's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from aiohttp import web

from .. import errors
from .._core import aws as _aws
from .._core.validate import as_float, shown
from ..limits import KinesisLimits
from ..shardmap import ShardMap
from . import _faults
from ._faults import EXPIRED_ITERATOR, INTERNAL_FAILURE, THROTTLED

__all__ = ["COUNTS", "DATA_PLANE", "KEEP_SEED", "FaultConfig", "FaultEngine", "Reply"]

log = logging.getLogger("shardflow.testing")

DATA_PLANE = frozenset({"PutRecord", "PutRecords", "GetRecords"})
"""Operations request-level faults apply to unless ``operations`` says otherwise."""

RESHARDING = ("SplitShard", "MergeShards", "UpdateShardCount", "CreateStream", "DeleteStream")
"""Operations after which the proxy fetches a stream's shard map again."""

COUNTS: Mapping[str, str] = {
    "requests": "HTTP requests received",
    "forwarded": "requests sent to the upstream (the proxy's own ListShards excluded)",
    "put_entries": "records in PutRecords/PutRecord requests past the request-level faults",
    "written_entries": "records the upstream acknowledged as written",
    "throttled_entries": "records answered ProvisionedThroughputExceededException",
    "write_limited_entries": "of throttled_entries, those over a shard's write limits",
    "internal_failure_entries": "records answered InternalFailure",
    "errors_5xx": "requests answered 500 InternalFailure or 503 ServiceUnavailable",
    "resets_before": "connections reset before forwarding (nothing applied)",
    "resets_after": "connections reset after the upstream answered",
    "reset_after_entries": "records written upstream whose answer a reset dropped",
    "delayed": "requests given added latency",
    "stalled": "requests held by stall",
    "get_records": "GetRecords requests received",
    "read_records": "records returned by forwarded GetRecords calls",
    "expired_iterators": "GetRecords answered ExpiredIteratorException",
    "read_throttled": "GetRecords answered ProvisionedThroughputExceededException",
    "read_limited": "of read_throttled, those over a shard's read limits",
    "upstream_errors": "forwarded requests the upstream answered with an error status",
    "upstream_unreachable": "requests whose upstream call failed (client connection reset)",
    "shard_map_refreshes": "ListShards calls the proxy made to map entries to shards",
    "subscriptions": "SubscribeToShard requests received",
    "subscriptions_in_use": "SubscribeToShard answered ResourceInUseException",
    "subscriptions_limited": "SubscribeToShard answered LimitExceededException",
    "subscription_events": "events forwarded from SubscribeToShard streams",
    "subscriptions_cut": "SubscribeToShard streams cut mid-way (connection reset)",
    "subscriptions_failed": "SubscribeToShard streams ended by an InternalFailure event",
    "subscriptions_closed": "relayed SubscribeToShard streams that ended, by either side",
}
"""Every key of :attr:`FaultProxy.counts`, with what it counts."""


# --- settings ---------------------------------------------------------------------------


def _fraction(name: str, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number between 0 and 1, got {shown(value)}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {shown(value)}")


def _operations(value: object) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str | bytes) or not isinstance(value, set | frozenset | list | tuple):
        raise TypeError(
            f"operations must be a set of operation names such as {{'PutRecords'}}, or None; "
            f"got {shown(value)}"
        )
    names = frozenset(value)
    for name in names:
        if not isinstance(name, str) or not name:
            raise TypeError(f"operations must hold non-empty operation names, got {shown(name)}")
    return names


_FRACTION_GROUPS = (
    ("throttle_fraction", "internal_failure_fraction"),
    ("reset_before_fraction", "error_5xx_fraction", "reset_after_fraction"),
    ("expire_iterator_fraction", "read_throttle_fraction"),
    ("subscription_in_use_fraction", "subscription_limit_fraction"),
)


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """The faults a :class:`~shardflow.testing.FaultProxy` injects (see :mod:`shardflow.testing`).

    Fractions are probabilities in [0, 1]. The fractions of one group share one random
    draw, so their sum must not exceed 1: per PutRecords entry (throttle, internal
    failure), per request (reset before, 5xx, reset after), per GetRecords call (expire
    iterator, read throttle), per SubscribeToShard call (in use, limit exceeded).
    """

    throttle_fraction: float = 0.0
    internal_failure_fraction: float = 0.0
    error_5xx_fraction: float = 0.0
    reset_before_fraction: float = 0.0
    reset_after_fraction: float = 0.0
    latency: float = 0.0
    enforce_write_limits: bool = False
    enforce_read_limits: bool = False
    expire_iterator_fraction: float = 0.0
    read_throttle_fraction: float = 0.0
    stall: bool = False
    operations: frozenset[str] | None = None
    limits: KinesisLimits = KinesisLimits()  # noqa: RUF009 - frozen value
    subscription_in_use_fraction: float = 0.0
    subscription_limit_fraction: float = 0.0
    cut_subscription_after: int | None = None
    fail_subscription_after: int | None = None

    def __post_init__(self) -> None:
        for group in _FRACTION_GROUPS:
            for name in group:
                _fraction(name, getattr(self, name))
            if sum(getattr(self, name) for name in group) > 1.0:
                raise ValueError(f"{' + '.join(group)} must not exceed 1")
        latency = self.latency
        if not isinstance(latency, int | float) or isinstance(latency, bool):
            raise TypeError(f"latency must be a number of seconds, got {shown(latency)}")
        latency = as_float("latency", latency, "finite and >= 0 seconds")
        if not (latency >= 0 and math.isfinite(latency)):
            raise ValueError(f"latency must be finite and >= 0 seconds, got {shown(latency)}")
        for name in ("enforce_write_limits", "enforce_read_limits", "stall"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {shown(getattr(self, name))}")
        object.__setattr__(self, "operations", _operations(self.operations))
        if not isinstance(self.limits, KinesisLimits):
            raise TypeError(f"limits must be a KinesisLimits, got {shown(self.limits)}")
        for name in ("cut_subscription_after", "fail_subscription_after"):
            n = getattr(self, name)
            if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
                raise ValueError(f"{name} must be a number of events >= 0 or None, got {shown(n)}")

    def applies_to(self, operation: str) -> bool:
        """True if request-level faults (5xx, resets, latency, stall) apply to it."""
        ops = DATA_PLANE if self.operations is None else self.operations
        return operation in ops or "*" in ops


FIELDS = frozenset(f.name for f in dataclasses.fields(FaultConfig))


# --- requests ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """The upstream's answer to a forwarded request (headers without framing ones)."""

    status: int
    headers: dict[str, str]
    body: bytes

    def response(self) -> web.Response:
        return web.Response(status=self.status, body=self.body, headers=self.headers)


Forward = Callable[[bytes], Awaitable[Reply]]
"""Sends the client's request upstream with the given body."""
ListShards = Callable[[dict[str, str], Mapping[str, str]], Awaitable["ShardMap | None"]]
"""Fetches a stream's shard map: (ListShards parameters, the client's request headers)."""
Outcome = tuple[web.StreamResponse, int]
"""An answer, and how many records the upstream wrote for it."""
RequestFault = Literal["reset_before", "5xx", "reset_after"]


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _stream_of(doc: Mapping[str, Any] | None) -> tuple[str, dict[str, str]] | None:
    """(cache key, ListShards parameters) for the stream a request names."""
    if doc is None:
        return None
    name, arn = doc.get("StreamName"), doc.get("StreamARN")
    if isinstance(name, str) and name:
        return name, {"StreamName": name}
    if isinstance(arn, str) and arn:
        try:
            return _aws.stream_name(arn), {"StreamARN": arn}
        except ValueError:
            return arn, {"StreamARN": arn}
    return None


class FaultEngine:
    """Fault decisions and their effect on Kinesis operations (see the module docstring)."""

    def __init__(self, config: FaultConfig, seed: int | None, list_shards: ListShards) -> None:
        self.config = config
        self.rng = random.Random(seed)
        self.counts = dict.fromkeys(COUNTS, 0)
        self.maps = _faults.ShardMaps(list_shards)
        self._iterators = _faults.IteratorShards()
        self._expired = _faults.IteratorShards()
        self._write_budgets: dict[tuple[str, str], _faults.WriteBudget] = {}
        self._read_budgets: dict[tuple[str, str], _faults.ReadBudget] = {}
        self._handlers: dict[str, Callable[[bytes, Mapping[str, str], Forward], Awaitable[Outcome]]]
        self._handlers = {
            "PutRecords": self._put_records,
            "PutRecord": self._put_record,
            "GetRecords": self._get_records,
            "GetShardIterator": self._get_shard_iterator,
        }
        for name in RESHARDING:
            self._handlers[name] = self._reshard

    def bump(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def snapshot(self) -> dict[str, int]:
        counts = dict(self.counts)
        counts["shard_map_refreshes"] = self.maps.refreshes
        return counts

    def configure(self, seed: Any, options: Mapping[str, Any]) -> None:
        """Apply new settings (validated first: nothing changes on error)."""
        unknown = set(options) - FIELDS
        if unknown:
            raise TypeError(f"unknown FaultProxy option(s): {', '.join(sorted(unknown))}")
        new = dataclasses.replace(self.config, **options)
        old, self.config = self.config, new
        if seed is not KEEP_SEED:
            self.rng.seed(seed)
        if new.limits != old.limits or new.enforce_write_limits != old.enforce_write_limits:
            self._write_budgets.clear()
        if new.limits != old.limits or new.enforce_read_limits != old.enforce_read_limits:
            self._read_budgets.clear()

    # --- random choices -----------------------------------------------------------------

    def request_fault(self) -> RequestFault | None:
        """One draw: reset before, 5xx, reset after, or nothing."""
        c = self.config
        if c.reset_before_fraction + c.error_5xx_fraction + c.reset_after_fraction <= 0:
            return None
        r = self.rng.random()
        if r < c.reset_before_fraction:
            return "reset_before"
        r -= c.reset_before_fraction
        if r < c.error_5xx_fraction:
            return "5xx"
        r -= c.error_5xx_fraction
        return "reset_after" if r < c.reset_after_fraction else None

    def subscription_fault(self) -> web.Response | None:
        """One draw per SubscribeToShard call: the error answer to send instead of
        forwarding it (ResourceInUseException, LimitExceededException), or None."""
        self.bump("subscriptions")
        c = self.config
        if c.subscription_in_use_fraction + c.subscription_limit_fraction <= 0:
            return None
        r = self.rng.random()
        if r < c.subscription_in_use_fraction:
            self.bump("subscriptions_in_use")
            return _faults.error_response(
                400, "ResourceInUseException",
                "Another active subscription exists for this consumer and shard.",
            )
        if r < c.subscription_in_use_fraction + c.subscription_limit_fraction:
            self.bump("subscriptions_limited")
            return _faults.error_response(
                400, "LimitExceededException",
                "Rate exceeded for consumer and shard: one SubscribeToShard per second.",
            )
        return None

    def error_5xx(self) -> web.Response:
        self.bump("errors_5xx")
        if self.rng.random() < 0.5:
            return _faults.error_response(500, INTERNAL_FAILURE, _faults.INTERNAL_FAILURE_MESSAGE)
        return _faults.error_response(
            503, _faults.SERVICE_UNAVAILABLE, _faults.SERVICE_UNAVAILABLE_MESSAGE
        )

    def _entry_fault(self) -> str | None:
        c = self.config
        if c.throttle_fraction + c.internal_failure_fraction <= 0:
            return None
        r = self.rng.random()
        if r < c.throttle_fraction:
            return THROTTLED
        if r < c.throttle_fraction + c.internal_failure_fraction:
            return INTERNAL_FAILURE
        return None

    # --- operations ---------------------------------------------------------------------

    async def handle(
        self, operation: str, body: bytes, headers: Mapping[str, str], forward: Forward
    ) -> Outcome:
        """Answer one request (operation-level faults applied); the upstream is reached
        through ``forward``. Errors of ``forward`` and cancellation propagate."""
        handler = self._handlers.get(operation)
        if handler is None:
            return (await forward(body)).response(), 0
        return await handler(body, headers, forward)

    async def _reshard(self, body: bytes, headers: Mapping[str, str], forward: Forward) -> Outcome:
        reply = await forward(body)
        located = _stream_of(_parse(body))
        if located is not None:
            self.maps.mark_stale(located[0])
        return reply.response(), 0

    def _write_budget(self, stream: str, shard: str, now: float) -> _faults.WriteBudget:
        budget = self._write_budgets.get((stream, shard))
        if budget is None:
            limits = self.config.limits
            budget = _faults.WriteBudget(
                limits.shard_write_records_per_s, limits.shard_write_bytes_per_s, now
            )
            self._write_budgets[(stream, shard)] = budget
        return budget

    async def _put_records(
        self, body: bytes, headers: Mapping[str, str], forward: Forward
    ) -> Outcome:
        doc = _parse(body)
        located = _stream_of(doc)
        records = doc.get("Records") if doc is not None else None
        if doc is None or located is None or not _faults.valid_entries(records):
            return (await forward(body)).response(), 0  # the upstream validates
        assert isinstance(records, list)
        stream, params = located
        n = len(records)
        self.bump("put_entries", n)
        faults: dict[int, str] = {}
        for i in range(n):
            code = self._entry_fault()
            if code is not None:
                faults[i] = code
        predicted: dict[int, str] = {}
        ranges = self.maps.cached(stream)
        if self.config.enforce_write_limits:
            ranges = await self.maps.get(stream, params, headers)
            now = time.monotonic()
            for i, record in enumerate(records):
                shard = _shard_of(record, ranges)
                if shard is None:
                    continue
                predicted[i] = shard
                size = _faults.entry_size(record)
                if i not in faults and not self._write_budget(stream, shard, now).take(size, now):
                    faults[i] = THROTTLED
                    self.bump("write_limited_entries")
        errors = {i: _entry_error(code, stream, records[i], ranges) for i, code in faults.items()}
        throttled = sum(1 for code in faults.values() if code == THROTTLED)
        self.bump("throttled_entries", throttled)
        self.bump("internal_failure_entries", len(faults) - throttled)
        if len(faults) == n:
            answer = {"FailedRecordCount": n, "Records": [errors[i] for i in range(n)]}
            return _faults.json_response(orjson.dumps(answer)), 0
        if faults:
            kept = [r for i, r in enumerate(records) if i not in faults]
            body = orjson.dumps({**doc, "Records": kept})
        reply = await forward(body)
        out = _parse(reply.body) if reply.status == 200 else None
        answered = out.get("Records") if out is not None else None
        if out is None or not isinstance(answered, list) or len(answered) != n - len(faults):
            if reply.status == 200:
                log.warning("unexpected PutRecords answer from upstream: %r", reply.body[:200])
            return reply.response(), 0
        forwarded = [i for i in range(n) if i not in faults]
        applied = 0
        for i, entry in zip(forwarded, answered, strict=True):
            if isinstance(entry, dict) and entry.get("SequenceNumber"):
                applied += 1
                if i in predicted and entry.get("ShardId") not in (None, predicted[i]):
                    self.maps.mark_stale(stream)
        self.bump("written_entries", applied)
        if not faults:
            return reply.response(), applied
        merged = iter(answered)
        out["Records"] = [errors[i] if i in errors else next(merged) for i in range(n)]
        out["FailedRecordCount"] = int(out.get("FailedRecordCount") or 0) + len(faults)
        return _faults.json_response(orjson.dumps(out), reply.headers), applied

    async def _put_record(
        self, body: bytes, headers: Mapping[str, str], forward: Forward
    ) -> Outcome:
        doc = _parse(body)
        located = _stream_of(doc)
        if doc is None or located is None or not isinstance(doc.get("PartitionKey"), str):
            return (await forward(body)).response(), 0
        stream, params = located
        self.bump("put_entries")
        code = self._entry_fault()
        ranges = self.maps.cached(stream)
        if self.config.enforce_write_limits:
            ranges = await self.maps.get(stream, params, headers)
        shard = _shard_of(doc, ranges)
        if code is None and self.config.enforce_write_limits and shard is not None:
            now = time.monotonic()
            if not self._write_budget(stream, shard, now).take(_faults.entry_size(doc), now):
                code = THROTTLED
                self.bump("write_limited_entries")
        if code == THROTTLED:
            self.bump("throttled_entries")
            message = _faults.throttle_message(stream, shard)
            return _faults.error_response(400, THROTTLED, message), 0
        if code == INTERNAL_FAILURE:
            self.bump("internal_failure_entries")
            message = _faults.INTERNAL_FAILURE_MESSAGE
            return _faults.error_response(500, INTERNAL_FAILURE, message), 0
        reply = await forward(body)
        out = _parse(reply.body) if reply.status == 200 else None
        applied = 1 if out is not None and out.get("SequenceNumber") else 0
        self.bump("written_entries", applied)
        if applied and shard is not None and out is not None and out.get("ShardId") != shard:
            self.maps.mark_stale(stream)
        return reply.response(), applied

    async def _get_shard_iterator(
        self, body: bytes, headers: Mapping[str, str], forward: Forward
    ) -> Outcome:
        reply = await forward(body)
        doc = _parse(body)
        located = _stream_of(doc)
        out = _parse(reply.body) if reply.status == 200 else None
        if out is not None and doc is not None and located is not None:
            shard = doc.get("ShardId")
            # A newly issued iterator is fresh, even if an upstream (moto) hands out the
            # same string again for the same position.
            self._expired.discard(out.get("ShardIterator"))
            if isinstance(shard, str):
                self._iterators.add(out.get("ShardIterator"), (located[0], shard))
        return reply.response(), 0

    async def _get_records(
        self, body: bytes, headers: Mapping[str, str], forward: Forward
    ) -> Outcome:
        c = self.config
        self.bump("get_records")
        doc = _parse(body)
        iterator = doc.get("ShardIterator") if doc is not None else None
        where = self._iterators.get(iterator)
        stream, shard = where if where is not None else ("", None)
        expired = self._expired.get(iterator) is not None
        if not expired and c.expire_iterator_fraction + c.read_throttle_fraction > 0:
            r = self.rng.random()
            if r < c.expire_iterator_fraction:
                expired = True
                self._expired.add(iterator, where or ("", ""))
            elif r < c.expire_iterator_fraction + c.read_throttle_fraction:
                self.bump("read_throttled")
                message = _faults.throttle_message(stream, shard)
                return _faults.error_response(400, THROTTLED, message), 0
        if expired:  # an expired iterator stays expired, as on AWS
            self.bump("expired_iterators")
            message = _faults.expired_message()
            return _faults.error_response(400, EXPIRED_ITERATOR, message), 0
        budget: _faults.ReadBudget | None = None
        if c.enforce_read_limits and where is not None:
            now = time.monotonic()
            budget = self._read_budgets.get(where)
            if budget is None:
                budget = _faults.ReadBudget(
                    c.limits.shard_read_calls_per_s, c.limits.shard_read_bytes_per_s, now
                )
                self._read_budgets[where] = budget
            if not budget.admit(now):
                self.bump("read_throttled")
                self.bump("read_limited")
                message = _faults.throttle_message(stream, shard)
                return _faults.error_response(400, THROTTLED, message), 0
        reply = await forward(body)
        out = _parse(reply.body) if reply.status == 200 else None
        if out is not None:
            records = out.get("Records")
            if isinstance(records, list):
                self.bump("read_records", len(records))
                if budget is not None:
                    budget.bytes.spend(
                        sum(_faults.b64_size(r.get("Data")) for r in records if isinstance(r, dict))
                    )
            self._expired.discard(out.get("NextShardIterator"))
            if where is not None:
                self._iterators.add(out.get("NextShardIterator"), where)
        return reply.response(), 0


KEEP_SEED: Any = object()
"""``configure``'s ``seed`` argument when the caller passed none."""


def _shard_of(record: Mapping[str, Any], shards: ShardMap | None) -> str | None:
    """The open shard ``record`` goes to per ``shards``; None when unknown or malformed."""
    key, explicit = record.get("PartitionKey"), record.get("ExplicitHashKey")
    if shards is None or not isinstance(key, str):
        return None
    try:
        return shards.shard_for_key(key, explicit if isinstance(explicit, str) else None).shard_id
    except (errors.InvalidHashKey, errors.UnmappedHashKey):
        return None


def _entry_error(
    code: str, stream: str, record: Mapping[str, Any], ranges: ShardMap | None
) -> dict[str, str]:
    if code != THROTTLED:
        return {"ErrorCode": code, "ErrorMessage": _faults.INTERNAL_FAILURE_MESSAGE}
    message = _faults.throttle_message(stream, _shard_of(record, ranges))
    return {"ErrorCode": code, "ErrorMessage": message}
