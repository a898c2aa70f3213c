"""The asyncio Kinesis producer: bounded queue, batching, retries, per-record results.

:class:`Producer` checks its options, starts and stops the pipeline, and accepts records.
A record goes one way through these modules of the package (see docs/architecture.md):

- :mod:`._intake`: validation, serialisation, the record's entry and cost (one path
  for every record), then :mod:`._ledger`, the queue bounds (``max_queue_records``,
  ``max_queue_bytes``) and flush;
- :mod:`._accumulator`: lanes per predicted shard, retries, expiry and the batch cut
  (with :mod:`._packing` for entries and aggregates, :mod:`._ratelimit` for pacing);
- :mod:`._sender`: the loop that hands each batch to a :mod:`._request` handler, which
  sends it and resolves its records (through :mod:`._resolve`), off-shard aggregates
  included;
- :mod:`._transport`: the PutRecords HTTP request.

:mod:`._startup` reads the stream's description and shard map (:mod:`._shards`) in the
background (the producer starts without reaching the endpoint).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio

from .. import aggregation, errors
from .._core import aws as _aws
from .._core import logs as _logs
from .._core import metrics as _metrics
from .._core import trace as _trace
from .._core.lifecycle import exit_task_group, open_task_group, stop_task_group
from .._core.logs import get_logger
from .._core.signed import open_signed
from .._core.validate import check_bool, check_int, check_number, shown
from ..limits import KinesisLimits
from ..models import PutResult
from ._accumulator import Accumulator
from ._intake import RECORD_OVERHEAD as RECORD_OVERHEAD
from ._intake import RecordMaker, record_cost
from ._ledger import Ledger
from ._metrics import ProducerMetrics
from ._ratelimit import ShardRateLimiter
from ._records import PendingRecord
from ._resolve import Resolver
from ._sender import Sender
from ._shards import ShardTracker
from ._startup import NOT_DESCRIBED, StreamStart, stream_limits
from ._transport import PutRecordsTransport

__all__ = ["Producer", "ProducerStats"]

log = get_logger("shardflow.producer")

MiB = 1024 * 1024
RATE_BURST = 0.5
"""Seconds' worth of a shard's write limits its token buckets hold: sends stay within
AWS's one-second budget even when a network hiccup bunches two bursts together."""
_STOP_TIMEOUT = 5.0  # longest wait for the cancelled sender to unwind
_sleep0 = asyncio.sleep


@dataclass(frozen=True, slots=True)
class ProducerStats:
    """A snapshot of a producer's counters (records unless named otherwise)."""

    queued: int
    """Accepted and not yet resolved: waiting, backing off or in flight."""
    queued_bytes: int
    """Bytes those records hold (their encoded entries), bounded by ``max_queue_bytes``."""
    waiting: int
    """Waiting to be sent or to be retried (or for a shard map refresh)."""
    in_flight: int
    """In a PutRecords request that has not answered yet."""
    in_flight_requests: int
    delivered: int
    failed: int
    retried: int
    """Tries after the first (each failed entry that went back in line counts once)."""
    requests: int
    failed_requests: int
    """Requests that failed as a whole (5xx, reset, timeout, rejected request)."""
    kinesis_records: int = 0
    """Kinesis records written: plain records, and aggregates (each counts once)."""
    misrouted: int = 0
    """Kinesis records that landed on a shard other than the predicted one."""
    shard_map_refreshes: int = 0
    """Shard maps loaded after the first (after a reshard, or a stale prediction)."""


class Producer:
    """Put records into a Kinesis stream, batched into PutRecords requests.

    ``stream`` is a stream name or ARN. Use as ``async with Producer(...) as p``; every
    record accepted by :meth:`put` resolves its delivery future with a
    :class:`~shardflow.PutResult` or fails it with :class:`errors.DeliveryFailed`.

    Options (keyword-only):

    - ``endpoint_url``, ``region_name``, ``credentials``: where and as whom to connect
      (``credentials`` is a :class:`shardflow.CredentialSource`); or ``client``, an
      aiobotocore Kinesis client you own (its endpoint, region and credentials are used).
    - ``max_queue_records``, ``max_queue_bytes``: bounds on records accepted and not yet
      resolved (queued, in flight or waiting to retry). A record's bytes are what the
      producer holds for it in memory: its encoded entry (base64 data and key) plus a
      fixed allowance for its bookkeeping (``RECORD_OVERHEAD``), so a stalled endpoint
      cannot grow memory much past ``max_queue_bytes``.
    - ``linger``: seconds a batch may wait to fill; a full batch goes at once.
    - ``max_in_flight``: concurrent PutRecords requests (default 8).
    - ``ordered``: same-key records reach the stream in put order, also across retries.
      At most one record per partition key is in flight at a time, so a single hot key
      is limited to one record per round trip.
    - ``record_ttl``: seconds after ``put`` within which a record must be delivered.
    - ``limits``: the :class:`KinesisLimits` requests are packed against and shards are
      paced by.
    - ``aggregate``: pack records into KPL aggregates (which the KCL, AWS Lambda and
      :class:`~shardflow.Consumer` deaggregate), per predicted shard only, each at most
      ``max_aggregate_bytes`` (default 51,200, the KPL's). An aggregate carries its first
      record's partition key and an explicit hash key that lands it on its shard; a record
      too large for an aggregate, or alone, goes on its own. Each record's
      :class:`PutResult` has the aggregate's sequence number and the record's index in it
      as ``sub_sequence_number``. A failed aggregate is retried as a whole. With
      ``ordered=True``, same-key records may share an aggregate, in order.
    - ``rate_limit``: the fraction of each shard's write limits
      (``limits.shard_write_records_per_s`` and ``shard_write_bytes_per_s``; an aggregate
      counts as one record) to use, paced with token buckets per shard, so that the
      producer rarely meets throttling; a shard out of tokens never holds up the others.
      None: no pacing.
    - ``meter_provider``: an OpenTelemetry MeterProvider for the producer's metrics
      (README, "Metrics and logs"); default: the global one when OpenTelemetry is
      installed, none otherwise.
    - ``tracer_provider``: an OpenTelemetry TracerProvider: one span per PutRecords
      request (``Kinesis.PutRecords``). Default None: no spans.

    The producer starts without reaching the endpoint (see :meth:`__aenter__`): the
    stream's description (its ``MaxRecordSizeInKiB`` sizes records unless ``limits`` is
    given) and, with ``aggregate`` or ``rate_limit``, its shard map (ListShards) are read
    in the background before the first request. The map is refreshed (in the
    background, at most once a second) when a record lands on a shard other than the
    predicted one, e.g. after a reshard. An aggregate counts as delivered only when the
    shard it landed on holds all its records: one that landed on a shard whose hash-key
    range does not (the KCL and shardflow's Consumer drop it whole) has ALL its records
    sent again with the new map, and the records predicted for its shard wait for that
    map. Readers that keep misplaced aggregates (aws-kinesis-agg alone) may see those
    records twice.
    """

    def __init__(
        self,
        stream: str,
        *,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        credentials: _aws.CredentialSource | None = None,
        max_queue_records: int = 10_000,
        max_queue_bytes: int = 64 * MiB,
        linger: float = 0.1,
        max_in_flight: int = 8,
        aggregate: bool = False,
        max_aggregate_bytes: int = aggregation.DEFAULT_MAX_BYTES,
        ordered: bool = False,
        rate_limit: float | None = 1.0,
        record_ttl: float = 30.0,
        limits: KinesisLimits | None = None,
        meter_provider: Any = None,
        tracer_provider: Any = None,
    ) -> None:
        self._stream_params = _aws.stream_params(stream)
        self.stream = stream
        _aws.check_endpoint(endpoint_url, region_name)
        if client is not None and (endpoint_url or region_name or credentials):
            raise ValueError("pass either client or endpoint_url/region_name/credentials, not both")
        if credentials is not None and not isinstance(credentials, _aws.CredentialSource):
            raise TypeError(f"credentials must be a CredentialSource, got {shown(credentials)}")
        self._limits_given = limits is not None
        if limits is None:
            limits = KinesisLimits()
        elif not isinstance(limits, KinesisLimits):
            raise TypeError(f"limits must be a KinesisLimits, got {shown(limits)}")
        self.limits = limits
        self.max_queue_records = check_int("max_queue_records", max_queue_records, 1)
        self.max_queue_bytes = check_int("max_queue_bytes", max_queue_bytes, 1)
        check_bool("aggregate", aggregate)
        largest = record_cost(limits.max_record_bytes, aggregate)
        if max_queue_bytes < largest:
            raise ValueError(
                f"max_queue_bytes ({max_queue_bytes}) must hold one record of "
                f"limits.max_record_bytes ({limits.max_record_bytes} bytes, {largest} encoded)"
            )
        self.linger = check_number("linger", linger, positive=False, unit="seconds")
        self.max_in_flight = check_int("max_in_flight", max_in_flight, 1, 1000)
        self.record_ttl = check_number("record_ttl", record_ttl, unit="seconds")
        check_bool("ordered", ordered)
        self.aggregate = aggregate
        # (an aggregate is also kept within limits.max_record_bytes, partition key included)
        self.max_aggregate_bytes = check_int(
            "max_aggregate_bytes", max_aggregate_bytes, aggregation.OVERHEAD + 16
        )
        self.ordered = ordered
        if rate_limit is not None:
            if not isinstance(rate_limit, int | float) or isinstance(rate_limit, bool):
                raise TypeError(f"rate_limit must be a fraction or None, got {shown(rate_limit)}")
            if not 0 < rate_limit <= 1:
                raise ValueError(f"rate_limit must be in (0, 1] or None, got {shown(rate_limit)}")
        self.rate_limit = rate_limit
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._client = client
        self._credentials = credentials
        packed = aggregate and not ordered  # records packed into aggregates at put()
        self._maker = RecordMaker(
            limits, aggregate=aggregate, record_ttl=self.record_ttl, packed=packed
        )
        self._prepare = self._maker.make
        self._ledger = Ledger(max_queue_records, max_queue_bytes)
        limiter = None
        if rate_limit is not None:
            limiter = ShardRateLimiter(
                limits.shard_write_records_per_s * rate_limit,
                limits.shard_write_bytes_per_s * rate_limit,
                burst=RATE_BURST,
            )
        self._acc = Accumulator(
            limits,
            self.linger,
            ordered,
            self.record_ttl,
            aggregate=aggregate,
            max_aggregate_bytes=self.max_aggregate_bytes,
            limiter=limiter,
            pressure_records=max(1, max_queue_records // 4),
            tail_of=self._maker.tail_of,
            on_unmapped=self._map_stale,
        )
        self._resolver = Resolver(self._acc, self._ledger, stream)
        self._tracker: ShardTracker | None = None
        self._sender: Sender | None = None
        self._described = anyio.Event()  # the stream's description was read (or never will)
        self._fatal: errors.ShardflowError | None = None
        self._yield = False
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._state = "new"  # new -> starting -> open -> closing -> closed
        self._closed = anyio.Event()
        meter = _metrics.meter(meter_provider)
        self._metrics = ProducerMetrics(self, meter) if meter is not None else None
        self._tracer = _trace.tracer(tracer_provider)

    def __repr__(self) -> str:
        return f"Producer({self.stream!r}, state={self._state})"

    # --- lifecycle ----------------------------------------------------------------------

    @_logs.with_fields(lambda p: {"stream": _aws.stream_name(p.stream)})
    async def __aenter__(self) -> Producer:
        """Open the clients and start the sender, without reaching the endpoint.

        A producer starts while Kinesis is down, as the KPL does: the stream's description
        (DescribeStreamSummary) and, with ``aggregate`` or ``rate_limit``, its shard map
        (ListShards) are read in the background, retried while the endpoint cannot be
        reached; records wait meanwhile (up to ``record_ttl``). When the stream turns out
        not to exist (or access is denied), every waiting record fails with
        :class:`errors.DeliveryFailed` (its ``cause`` the :class:`errors.StreamNotFound`
        naming stream, region and endpoint) and :meth:`put` raises that error while it
        lasts (the producer checks again every few seconds, and takes records once the
        stream exists). Raises here only for local configuration
        (:class:`errors.NoRegion` ...).
        Cancelled or failed, it closes what it opened; the producer cannot be reused.
        """
        if self._state != "new":
            raise RuntimeError("a Producer can be entered only once")
        self._state = "starting"
        stack = AsyncExitStack()
        try:
            client = await _aws.open_client(
                stack,
                "kinesis",
                endpoint_url=self._endpoint_url,
                region_name=self._region_name,
                client=self._client,
                credentials=self._credentials,
            )
            endpoint_url, region_name = _aws.client_endpoint(client)
            self._where = (endpoint_url, region_name)
            http = await open_signed(client, max_connections=self.max_in_flight)
            stack.push_async_callback(http.aclose)
            transport = PutRecordsTransport(http, self._stream_params)
            if self.aggregate or self.rate_limit is not None:
                self._tracker = ShardTracker(client, self.stream)
            start = StreamStart(
                client,
                self.stream,
                self._stream_params,
                self._tracker,
                on_summary=self._described_as,
                on_map=self._acc.set_map,
                on_retry=self._start_retry,
                on_fatal=self._cannot_send,
            )
            self._sender = Sender(
                self._acc,
                self._ledger,
                self._resolver,
                transport,
                max_in_flight=self.max_in_flight,
                record_ttl=self.record_ttl,
                tracker=self._tracker,
                start=start,
                on_missing=self._cannot_send,
            )
            if self._metrics is not None:
                self._metrics.attach(self._resolver)
            if self._tracer is not None:
                self._resolver.on_request = _trace.on_request_span(
                    self._tracer, "PutRecords", {_metrics.STREAM: _aws.stream_name(self.stream)},
                    self._resolver.on_request,
                )
            self._tg = await open_task_group()
            await self._tg.start(self._sender.run)
        except BaseException:
            self._state = "closed"
            self._ledger.close()
            try:
                if self._tg is not None:
                    await stop_task_group(self._tg)
            finally:
                with anyio.CancelScope(shield=True):
                    await stack.aclose()
            raise
        self._stack = stack
        self._loop = self._maker.loop = asyncio.get_running_loop()
        if self._state == "starting":  # (not "failed": the start may have answered already)
            self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        suppress: bool | None = None
        try:
            await self._shutdown(None)
        finally:
            tg, self._tg = self._tg, None
            if tg is not None:  # (a cancellation may be its own, after a sender crash)
                suppress = await exit_task_group(tg, exc_type, exc, tb)
        return suppress

    async def aclose(self, *, grace: float | None = None) -> None:
        """Refuse new puts, deliver what was accepted, then stop the sender. Idempotent.

        Waits up to ``grace`` seconds (default: ``record_ttl`` plus one second, past which
        every accepted record is resolved anyway); what is not delivered by then fails
        with :class:`errors.DeliveryFailed`. A concurrent call waits for the first. If
        cancelled, the remaining records fail at once and the cleanup still completes.
        Leaving the ``async with`` block calls this.
        """
        if grace is not None:
            grace = check_number("grace", grace, positive=False, unit="seconds")
        await self._shutdown(grace)

    @_logs.with_fields(lambda p: {"stream": _aws.stream_name(p.stream)})
    async def _shutdown(self, grace: float | None) -> None:
        if self._state not in ("open", "failed"):
            if self._state == "closing":
                await self._closed.wait()
            elif self._state == "new":
                self._state = "closed"
                self._closed.set()
            return
        self._state = "closing"
        sender = self._sender
        assert sender is not None
        assert self._stack is not None
        self._ledger.close()
        sender.close()
        if grace is None:
            grace = self.record_ttl + 1.0
        try:
            with anyio.move_on_after(grace):
                await sender.finished.wait()
        finally:
            with anyio.CancelScope(shield=True):
                sender.cancel()
                with anyio.move_on_after(_STOP_TIMEOUT):
                    await sender.finished.wait()
                sender.fail_all(
                    errors.DeliveryFailed("the producer closed before the record was delivered")
                )
                try:
                    await self._stack.aclose()
                finally:
                    self._state = "closed"
                    self._closed.set()

    # --- what the background start tells ------------------------------------------------

    def _described_as(self, summary: Mapping[str, Any]) -> None:
        """The stream exists: size records to its ``MaxRecordSizeInKiB`` unless the user
        gave ``limits``; a producer that found it missing takes records again."""
        if self._state == "failed":
            self._state = "open"
            self._fatal = None
        if not self._limits_given:
            self._use_limits(
                stream_limits(
                    self.limits,
                    summary,
                    max_queue_bytes=self.max_queue_bytes,
                    aggregate=self.aggregate,
                )
            )
        self._described.set()

    def _use_limits(self, limits: KinesisLimits) -> None:
        self.limits = limits
        self._maker.set_limits(limits)
        self._acc.set_limits(limits)

    def _start_retry(self, error: errors.AWSError) -> None:
        if self._sender is not None:
            self._sender.start_error = error

    def _cannot_send(self, error: errors.ShardflowError) -> None:
        """The stream is missing (or access is denied): fail what waits, refuse new puts."""
        if isinstance(error, errors.ResourceNotFound) and error.operation == "PutRecords":
            endpoint_url, region_name = self._where
            error = errors.StreamNotFound(
                error.code,
                f"stream {self.stream!r} not found in region {region_name} at {endpoint_url}",
                error.operation,
            )
        self._fatal = error
        if self._state in ("starting", "open"):
            self._state = "failed"
        self._described.set()
        assert self._sender is not None
        self._sender.fail_waiting(
            errors.DeliveryFailed(f"the producer cannot send: {error}", cause=error)
        )


    async def _prepare_when_described(
        self, obj: Any, partition_key: str, explicit_hash_key: str | int | None
    ) -> PendingRecord:
        """A record over the default size limit, put before the stream's own limit is
        known: wait for the stream's description (at most ``record_ttl``), then check it
        against that limit."""
        with anyio.move_on_after(self.record_ttl):
            await self._described.wait()
        if self._state != "open":
            self._check_open()
        try:
            return self._prepare(obj, partition_key, explicit_hash_key)
        except errors.RecordTooLarge as exc:
            if self._described.is_set():
                raise
            raise errors.RecordTooLarge(f"{exc}; {NOT_DESCRIBED}") from None

    def _map_stale(self) -> None:
        """A key fell outside every open shard of the map: refresh it."""
        if self._tracker is not None:
            self._tracker.mark_stale()

    # --- input --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state in ("new", "starting"):
            raise errors.ProducerClosed("the producer is not started (use `async with`)")
        fatal = self._fatal
        if self._state == "failed" and fatal is not None:
            if isinstance(fatal, errors.AWSError):
                raise type(fatal)(fatal.code, fatal.message, fatal.operation)
            raise fatal
        raise errors.ProducerClosed("the producer is closed")

    def _batch_due(self) -> None:
        """A record just queued made a batch due: wake the sender."""
        assert self._sender is not None
        self._sender.notify()
        self._yield = self.aggregate and self._acc.waiting > 1

    async def put(
        self, obj: Any, partition_key: str, *, explicit_hash_key: str | int | None = None
    ) -> asyncio.Future[PutResult]:
        """Accept a record; return the future of its delivery.

        ``obj`` is bytes (sent as is), a str (sent as its UTF-8 bytes, as boto3 sends
        it) or any other value orjson can serialise (sent as JSON).
        Waits only while the queue is full. The future resolves to a
        :class:`~shardflow.PutResult`, or fails with :class:`errors.DeliveryFailed`.
        Cancelling the future does not withdraw the record.

        Raises at once, affecting no other record: :class:`errors.InvalidPartitionKey`,
        :class:`errors.InvalidHashKey`, :class:`errors.RecordTooLarge`,
        :class:`errors.SerializationError`, :class:`errors.ProducerClosed` (also if the
        producer closes while this waits). Cancelled while waiting for room, nothing was
        accepted.
        """
        if self._yield:
            # (aggregating) a batch became ready at the last put: let the sender pack it
            # now, while its records are fresh in the CPU caches, rather than when the
            # queue is full (a loop of puts with room never waits otherwise)
            self._yield = False
            await _sleep0(0)
        if self._state != "open":
            self._check_open()
        try:
            record = self._prepare(obj, partition_key, explicit_hash_key)
        except errors.RecordTooLarge:
            if self._limits_given or self._described.is_set():
                raise
            record = await self._prepare_when_described(obj, partition_key, explicit_hash_key)
        ledger = self._ledger
        if not ledger.try_admit(record):
            await ledger.wait_room(record.cost)
            ledger.admit(record)
            ledger.wake_putter()
        if self._acc.add(record):
            self._batch_due()
        return record

    def put_nowait(
        self, obj: Any, partition_key: str, *, explicit_hash_key: str | int | None = None
    ) -> asyncio.Future[PutResult]:
        """Like :meth:`put`, but raise :class:`errors.QueueFull` instead of waiting."""
        if self._state != "open":
            self._check_open()
        try:
            record = self._prepare(obj, partition_key, explicit_hash_key)
        except errors.RecordTooLarge as exc:
            if self._limits_given or self._described.is_set():
                raise
            raise errors.RecordTooLarge(f"{exc}; {NOT_DESCRIBED}") from None
        if not self._ledger.try_admit(record):
            raise errors.QueueFull(
                f"producer queue is full ({self._ledger.records} records, "
                f"{self._ledger.bytes} bytes)"
            )
        if self._acc.add(record):
            self._batch_due()
        return record

    async def put_and_wait(
        self, obj: Any, partition_key: str, *, explicit_hash_key: str | int | None = None
    ) -> PutResult:
        """:meth:`put`, then wait for the delivery; return its :class:`PutResult`.

        Raises what :meth:`put` raises, or :class:`errors.DeliveryFailed`. Cancelling
        after the record was accepted does not withdraw it: it is still sent.
        """
        future = await self.put(obj, partition_key, explicit_hash_key=explicit_hash_key)
        return await asyncio.shield(future)

    async def flush(self) -> None:
        """Send at once, and wait until every record accepted so far is resolved.

        Returns when each was delivered or failed (see the delivery futures for which).
        Cancelling stops the wait only. Raises nothing.
        """
        waiter = self._ledger.flush_waiter()
        if waiter is None:
            return
        if self._sender is not None:
            self._sender.notify()
        try:
            await waiter
        finally:
            self._ledger.forget_flush_waiter(waiter)

    def stats(self) -> ProducerStats:
        """A snapshot of the producer's counters."""
        sender = self._sender
        resolver = self._resolver
        return ProducerStats(
            queued=self._ledger.records,
            queued_bytes=self._ledger.bytes,
            waiting=self._acc.waiting + (sender.parked_records if sender else 0),
            in_flight=sender.in_flight_records if sender else 0,
            in_flight_requests=sender.in_flight_requests if sender else 0,
            delivered=resolver.delivered,
            failed=resolver.failed,
            retried=resolver.retried,
            requests=sender.requests if sender else 0,
            failed_requests=resolver.failed_requests,
            kinesis_records=resolver.kinesis_records,
            misrouted=resolver.misrouted,
            shard_map_refreshes=self._tracker.refreshes if self._tracker else 0,
        )
