"""The Consumer: every shard of a stream, read concurrently, delivered in order per shard.

Inside, a coordinator keeps the shard list (ListShards at start, every
``resync_interval`` seconds, and whenever a shard ends), asks the checkpointer which
shards this worker may read, and starts one :class:`ShardReader` task per shard once its
parents are done. Delivery takes one buffered batch (one GetRecords response) from each
shard with data in turn, so shards are interleaved fairly and each shard stays in order.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Literal

import anyio
import anyio.abc

from .. import errors
from .._core import aws as _aws
from .._core import logs as _logs
from .._core import metrics as _metrics
from .._core import trace as _trace
from .._core.aws import list_shards
from .._core.lifecycle import exit_task_group, open_task_group
from .._core.logs import get_logger
from .._core.signed import open_signed
from .._core.validate import check_bool, check_int, check_number, shown
from ..limits import KinesisLimits
from ..models import Record
from ..sinks.base import Sink, first_failure, pipe
from ._fan_out import check_consumer_name, open_fan_out
from ._metrics import ConsumerMetrics
from ._transport import ReadTransport
from .checkpoint import Checkpointer, CheckpointSession, ConsumerScope, MemoryCheckpointer
from .coordinator import Coordinator
from .record_conversion import Row, as_records, new_record
from .shard_reader import (
    Counters,
    PollingSource,
    ReadContext,
    ReaderConfig,
    ShardReader,
    Source,
)

__all__ = ["Consumer", "ConsumerStats", "start_position"]

log = get_logger("shardflow.consumer")

_START_WORDS = {
    "trim_horizon": "TRIM_HORIZON", "trim-horizon": "TRIM_HORIZON", "trim": "TRIM_HORIZON",
    "oldest": "TRIM_HORIZON", "latest": "LATEST", "now": "LATEST", "new": "LATEST",
}
MIN_POLL_INTERVAL = 0.2
PIPE_IDLE_REPORT = 1.0
"""Seconds without records after which pipe() asks the sink for what it made durable."""


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    """A snapshot of a consumer's counters (``Consumer.stats()``)."""

    shards_reading: int
    """Shards with a running reader (started, not ended, not lost; 0 once closed)."""
    shards_done: int
    """Shards delivered to their end (or found at SHARD_END)."""
    records_fetched: int
    records_delivered: int
    """Records handed to the application (taken from the buffers)."""
    records_buffered: int
    get_records_calls: int
    throttled: int
    """Reads refused for throughput (each retried after a jittered backoff)."""
    retries: int
    """Other transient failures retried."""
    iterators_renewed: int
    """Expired shard iterators replaced."""
    checkpoints_saved: int
    out_of_range_dropped: int = 0
    """Sub-records of aggregates dropped for hashing outside their shard (as the KCL)."""
    subscriptions: int = 0
    """SubscribeToShard subscriptions opened (fan-out: one per shard, again at each
    renewal and after each failure)."""


def start_position(start_at: object) -> str | datetime:
    """``start_at`` as the consumer keeps it: "TRIM_HORIZON", "LATEST" or a UTC datetime.

    Takes the spellings of the CLI's ``--from``, in any case: "TRIM_HORIZON", "trim",
    "trim-horizon", "oldest"; "LATEST", "latest", "now", "new"; an ISO 8601 time such as
    "2024-05-01T12:00:00Z" (UTC unless it has an offset); or an aware datetime. Raises
    ValueError for anything else, a naive datetime included (its zone is unknown).
    """
    if isinstance(start_at, datetime):
        if start_at.tzinfo is None or start_at.utcoffset() is None:
            raise ValueError(
                "start_at datetime must be timezone-aware (e.g. datetime.now(timezone.utc)); "
                f"got naive {start_at!r}"
            )
        return start_at.astimezone(timezone.utc)
    if isinstance(start_at, str):
        word = _START_WORDS.get(start_at.strip().lower())
        if word is not None:
            return word
        iso = start_at.strip()
        if iso.endswith(("Z", "z")):
            iso = iso[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(iso) if iso[:1].isdigit() else None
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return when.astimezone(timezone.utc)
    raise ValueError(
        "start_at must be 'TRIM_HORIZON' (or 'trim', 'oldest'), 'LATEST' (or 'latest', "
        "'now'), an ISO 8601 time such as '2024-05-01T12:00:00Z' or an aware datetime, "
        f"got {shown(start_at)}"
    )


def _fan_out_name(fan_out: object, app_name: str | None) -> str | None:
    """The stream consumer's name for ``fan_out`` (None: polling)."""
    if fan_out is False:
        return None
    if fan_out is True:
        if app_name is None:
            raise ValueError(
                "fan_out=True names the stream consumer after app_name: pass app_name, "
                "or fan_out='consumer-name'"
            )
        return check_consumer_name(app_name)
    if not isinstance(fan_out, str):
        raise TypeError(f"fan_out must be a bool or a consumer name, got {shown(fan_out)}")
    return check_consumer_name(fan_out)


class Consumer:
    """Reads every shard of a Kinesis stream and delivers its records.

    ``stream`` is a stream name or ARN. ``start_at`` is where a shard without a
    checkpoint starts: "TRIM_HORIZON", "LATEST", or an aware datetime (AT_TIMESTAMP; a
    naive datetime is a ValueError), also spelled as the CLI's ``--from`` takes them
    ("trim", "latest", "2024-05-01T12:00:00Z": see :func:`start_position`). A stored
    checkpoint always wins. "LATEST" applies only to shards that were there at start and
    whose parents this application never read; a shard born later by resharding, or the
    child of a shard read before, starts at its beginning, so nothing is lost across
    splits and merges.

    Without a ``checkpointer`` positions are kept in memory for this instance only.
    With one, ``app_name`` is required: positions are keyed by application, stream and
    shard. See :mod:`shardflow.consumer.checkpoint` for the protocol (plain stores and
    lease coordinators).

    ``meter_provider``: an OpenTelemetry MeterProvider for the consumer's metrics (README,
    "Metrics and logs"); default: the global one when OpenTelemetry is installed.
    ``tracer_provider``: an OpenTelemetry TracerProvider: one span per GetRecords request
    (``Kinesis.GetRecords``, with the shard). Default None: no spans.

    ``fan_out=True`` reads through enhanced fan-out (SubscribeToShard) as the stream
    consumer named ``app_name`` (``fan_out="name"`` names it), registered on first use and
    reused after; ``deregister_consumer=True`` deregisters it on close. Everything else is
    as with polling (the default, ``fan_out=False``).

    Use exactly one way of reading: ``async for record in consumer`` and
    ``consumer.batches()`` (they share one queue), or ``consumer.shards()``.
    """

    def __init__(
        self,
        stream: str,
        *,
        app_name: str | None = None,
        checkpointer: Checkpointer | None = None,
        start_at: str | datetime = "TRIM_HORIZON",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        credentials: _aws.CredentialSource | None = None,
        poll_interval: float = 1.0,
        max_buffer_records: int = 10_000,
        get_records_limit: int = 10_000,
        resync_interval: float = 60.0,
        close_timeout: float = 10.0,
        limits: KinesisLimits | None = None,
        meter_provider: Any = None,
        tracer_provider: Any = None,
        fan_out: bool | str = False,
        deregister_consumer: bool = False,
    ) -> None:
        self._stream_params = _aws.stream_params(stream)
        self._stream = stream
        _aws.check_endpoint(endpoint_url, region_name)
        if app_name is not None and (not isinstance(app_name, str) or not app_name):
            raise ValueError(f"app_name must be a non-empty string, got {shown(app_name)}")
        if checkpointer is not None:
            if not callable(getattr(checkpointer, "bind", None)):
                raise TypeError(
                    f"checkpointer must implement shardflow.consumer.Checkpointer, "
                    f"got {shown(checkpointer)}"
                )
            if app_name is None:
                raise ValueError("app_name is required with a checkpointer: it keys positions")
        self._app_name = app_name or "shardflow"
        self._fan_out = _fan_out_name(fan_out, app_name)
        self._deregister_consumer = check_bool("deregister_consumer", deregister_consumer)
        self._checkpointer: Checkpointer = checkpointer or MemoryCheckpointer()
        self._start_at = start_position(start_at)
        self._poll_interval = check_number(
            "poll_interval", poll_interval, minimum=MIN_POLL_INTERVAL, unit="seconds"
        )
        self._limits = limits if limits is not None else KinesisLimits()
        if not isinstance(self._limits, KinesisLimits):
            raise TypeError(f"limits must be a KinesisLimits, got {shown(limits)}")
        self._max_buffer = check_int("max_buffer_records", max_buffer_records, 1)
        self._get_limit = check_int("get_records_limit", get_records_limit, 1)
        if self._get_limit > self._limits.max_get_records:
            raise ValueError(
                f"get_records_limit must be <= {self._limits.max_get_records}, "
                f"got {shown(get_records_limit)}"
            )
        self._resync_interval = check_number("resync_interval", resync_interval, unit="seconds")
        self._close_timeout = check_number("close_timeout", close_timeout, unit="seconds")
        if credentials is not None and not isinstance(credentials, _aws.CredentialSource):
            raise TypeError("credentials must provide botocore_credentials()")
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._client_arg = client
        self._credentials = credentials

        self._state: Literal["new", "running", "closed"] = "new"
        self._stack: AsyncExitStack | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._binding: AbstractAsyncContextManager[CheckpointSession] | None = None
        self._coord: Coordinator | None = None
        self._mode: Literal["records", "shards"] | None = None
        self._pipes: list[anyio.Event] = []
        meter = _metrics.meter(meter_provider)
        self._metrics = (
            ConsumerMetrics(self, meter, _metrics.stream_name(stream), self._app_name)
            if meter is not None
            else None
        )
        self._tracer = _trace.tracer(tracer_provider)
        self._chunk: list[Row] = []  # the rows being handed out, a Record each
        self._chunk_reader: ShardReader | None = None
        self._index = 0

    def __repr__(self) -> str:
        return f"<Consumer {self._stream!r} app={self._app_name!r} {self._state}>"

    @property
    def stream(self) -> str:
        return self._stream

    @property
    def app_name(self) -> str:
        return self._app_name

    # --- lifecycle ----------------------------------------------------------------------

    @_logs.with_fields(lambda c: {"stream": _aws.stream_name(c._stream), "app": c._app_name})
    async def __aenter__(self) -> Consumer:
        """List the shards, bind the checkpointer and start the readers.

        Raises errors.StreamNotFound for a missing stream (and other errors.AWSError
        subclasses, e.g. AccessDenied); everything opened so far is closed again.
        """
        if self._state != "new":
            raise RuntimeError("a Consumer can be started once")
        self._state = "running"
        stack = AsyncExitStack()
        try:
            client = await _aws.open_client(
                stack,
                "kinesis",
                endpoint_url=self._endpoint_url,
                region_name=self._region_name,
                client=self._client_arg,
                credentials=self._credentials,
                max_pool_connections=64,
            )
            shards = await list_shards(client, self._stream)
            scope = ConsumerScope(
                app_name=self._app_name,
                stream=self._stream,
                stream_name=_aws.stream_name(self._stream),
                start_at=self._start_at,
            )
            coord = Coordinator(client, self._stream, self._resync_interval)
            # Kept out of the exit stack, like the task group: a binding may hold its own
            # task group (lease renewal), so it is exited in the owner task with no cancel
            # scope of ours around it (see _teardown).
            binding = self._checkpointer.bind(scope, coord)
            session = await binding.__aenter__()
            self._binding = binding
            config = ReaderConfig(
                start_at=self._start_at,
                poll_interval=self._poll_interval,
                min_call_interval=1.0 / self._limits.shard_read_calls_per_s,
                get_records_limit=self._get_limit,
                max_buffer_records=self._max_buffer,
                read_bytes_per_s=self._limits.shard_read_bytes_per_s,
            )
            counters = Counters()
            http = await open_signed(client, max_connections=64)
            stack.push_async_callback(http.aclose)
            transport = ReadTransport(http)
            if self._tracer is not None:  # a span per request, GetRecords included
                attrs = {_metrics.STREAM: _aws.stream_name(self._stream)}
                call = _trace.traced_call(self._tracer, transport.call, attrs)
                setattr(transport, "call", call)  # noqa: B010
            source: Source
            if self._fan_out is None:
                source = PollingSource(client, transport, self._stream_params, config, counters)
            else:
                source = await open_fan_out(stack, client, transport, self._stream,
                                            self._fan_out, counters,
                                            deregister_on_close=self._deregister_consumer)
            coord.ctx = ReadContext(
                client=client,
                stream_params=self._stream_params,
                session=session,
                config=config,
                counters=counters,
                events=coord,
                source=source,
            )
            if self._metrics is not None:
                self._metrics.attach(coord)
            # The task group is kept out of the exit stack: it must be exited first, in
            # the owner task, with no other cancel scope around it.
            task_group = await open_task_group()
            coord.task_group = self._task_group = task_group
            self._coord = coord
            await coord.sync(shards, initial=True)
            coord.spawn(coord.run, "shardflow shard sync")
        except BaseException:
            self._state = "closed"
            if self._coord is not None:
                self._coord.stop()
            await self._teardown(stack, (None, None, None))
            raise
        self._stack = stack
        return self

    async def _teardown(
        self,
        stack: AsyncExitStack,
        exc_info: tuple[type[BaseException] | None, BaseException | None, TracebackType | None],
    ) -> bool | None:
        """Exit the (idle) task group and the checkpointer binding, then close the
        client, shielded. The binding shields and bounds its own cleanup."""
        task_group, self._task_group = self._task_group, None
        binding, self._binding = self._binding, None
        try:
            if task_group is not None:
                return await exit_task_group(task_group, *exc_info)
            return None
        finally:
            try:
                if binding is not None:
                    await binding.__aexit__(None, None, None)
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self._close_timeout):
                    await stack.aclose()

    @_logs.with_fields(lambda c: {"stream": _aws.stream_name(c._stream), "app": c._app_name})
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """:meth:`aclose`, then release the checkpointer binding and the client."""
        suppress: bool | None = None
        try:
            await self.aclose()
        finally:
            stack, self._stack = self._stack, None
            if stack is not None:
                suppress = await self._teardown(stack, (exc_type, exc, tb))
        return suppress

    async def aclose(self) -> None:
        """Stop reading and delivering, then write pending checkpoints.

        Idempotent, callable from any task, shielded from cancellation and bounded by
        ``close_timeout`` per step, so it never hangs. Records still buffered are not
        delivered; iterations in progress end. Leaving the ``async with`` block calls
        this and then releases the checkpointer binding (a lease coordinator hands its
        leases over there) and the client.
        """
        if self._state == "new":
            self._state = "closed"
            return
        coord = self._coord
        self._state = "closed"
        if coord is None:
            return
        coord.stop()
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._close_timeout):
                await coord.stopped()
            with anyio.move_on_after(self._close_timeout) as scope:
                for drained in list(self._pipes):  # the sinks write what they hold
                    await drained.wait()
            if scope.cancelled_caught:
                log.warning("pipe() did not drain its sink within %ss", self._close_timeout)
            with anyio.move_on_after(self._close_timeout) as scope:
                await coord.flush_checkpoints()
            if scope.cancelled_caught:
                log.warning("pending checkpoints not written within %ss", self._close_timeout)

    def _running(self) -> Coordinator:
        if self._coord is None:
            raise RuntimeError("start the Consumer first: `async with Consumer(...) as c:`")
        return self._coord

    def _use(self, mode: Literal["records", "shards"]) -> Coordinator:
        coord = self._running()
        if self._mode is None:
            self._mode = mode
            coord.set_mode(mode)
        elif self._mode != mode:
            used = "shards()" if self._mode == "shards" else "async for / batches()"
            raise RuntimeError(f"this consumer is already read through {used}")
        return coord

    # --- delivery -----------------------------------------------------------------------

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> Record:
        """The next record: in order within its shard, shards taking turns by batch.

        Ends (StopAsyncIteration) when the consumer closes; raises the consumer's error
        if a reader or the shard sync failed (e.g. errors.StreamNotFound,
        errors.AccessDenied). Cancellation loses nothing.
        """
        reader = self._chunk_reader
        if self._index < len(self._chunk) and reader is not None and not reader.lost:
            coord = self._coord
            if coord is not None and not coord.closing:
                row = self._chunk[self._index]
                self._index += 1
                return new_record(Record, row)
        coord = self._use("records")
        batch = await coord.next_batch()
        if batch is None:
            self._chunk = []
            raise StopAsyncIteration
        reader, records = batch
        self._chunk, self._chunk_reader, self._index = records, reader, 1
        return new_record(Record, records[0])

    def batches(
        self, *, max_records: int | None = None, timeout: float | None = None
    ) -> AsyncIterator[list[Record]]:
        """Records as lists: each list holds records of one shard, in order, from one
        GetRecords response (what ``async for`` had not yet handed out comes first).

        ``max_records`` caps a list's length (the rest of that response comes next), as
        aiokafka's ``getmany(max_records=...)``. A list is handed out as soon as records
        are there, never held back to fill it. ``timeout`` (seconds): when no records come
        within it, an EMPTY list is handed out (as ``getmany`` returns ``{}``), so a loop
        can do periodic work on an idle stream; without it the iteration waits.

        Ends when the consumer closes; raises the consumer's error if it failed.
        Cancellation loses nothing. A bad option is a ValueError/TypeError at this call.
        """
        if max_records is not None:
            max_records = check_int("max_records", max_records, 1)
        if timeout is not None:
            timeout = check_number("timeout", timeout, unit="seconds")
        return self._batches(max_records, timeout)

    async def _batches(
        self, max_records: int | None, idle: float | None
    ) -> AsyncIterator[list[Record]]:
        coord = self._use("records")
        while True:
            if self._index < len(self._chunk):
                reader, start = self._chunk_reader, self._index
                end = len(self._chunk) if max_records is None else start + max_records
                rest = self._chunk[start:end]
                self._index = start + len(rest)
                if self._index >= len(self._chunk):
                    self._chunk, self._index = [], 0
                if reader is None or reader.lost or coord.closing:
                    self._chunk, self._index = [], 0  # the shard moved on: drop the rest
                    continue
                yield as_records(rest)
                continue
            if idle is None:
                batch = await coord.next_batch()
            else:
                with anyio.move_on_after(idle) as waited:
                    batch = await coord.next_batch()
                if waited.cancelled_caught:
                    yield []
                    continue
            if batch is None:
                return
            reader, records = batch
            if max_records is not None and len(records) > max_records:
                self._chunk, self._chunk_reader, self._index = records, reader, 0
                continue
            yield as_records(records)

    async def shards(self) -> AsyncIterator[ShardReader]:
        """One :class:`ShardReader` per shard this worker reads, as each starts.

        A child shard appears only after each of its parents ended. Ends when the
        consumer closes; raises the consumer's error if it failed.
        """
        coord = self._use("shards")
        while True:
            if coord.announced:
                yield coord.announced.popleft()
                continue
            failure = coord.failure()
            if failure is not None:
                raise failure
            if coord.closing:
                return
            await coord.announce.wait()

    @_logs.with_fields(lambda c: {"stream": _aws.stream_name(c._stream), "app": c._app_name})
    async def pipe(self, sink: Sink) -> None:
        """Feed every batch to ``sink`` and checkpoint only what it reports durable.

        Runs until the consumer closes, or raises the first failure as itself (never an
        ExceptionGroup): the consumer's error, the sink's (from ``write``, or from the
        sink's ``failed()`` when its background writing cannot go on, e.g. S3Sink's bucket
        was deleted: raised even while no records arrive), the checkpointer's. On close,
        cancellation or error the sink is closed, which writes what it holds, and the
        positions it then reports are checkpointed; nothing else is. While no records come,
        ``sink.write([])`` is called every second, so what the sink writes in the
        background is checkpointed without new traffic. When a shard's lease
        moves to another worker, a sink with ``discard(shard_id)`` drops what it holds for
        that shard, and its checkpoints are skipped (the new owner reads it again).
        ``aclose()`` waits (up to ``close_timeout``) for this before its final checkpoints.
        """
        coord = self._running()

        async def checkpoint(record: Record) -> None:
            # Allowed while closing: close waits for this pipe's last checkpoints.
            try:
                await self._store(coord, record)
            except errors.LeaseLost:
                # Another worker owns the shard now and reads it again from its last
                # checkpoint; the sink's objects for it are rewritten under the same keys.
                log.info("%s was lost; its archived records are not checkpointed here",
                         record.shard_id)

        discard: Callable[[str], Awaitable[object]] | None = getattr(sink, "discard", None)
        revoked, revocations = anyio.create_memory_object_stream[str](math.inf)

        async def forward_revocations() -> BaseException:
            """Returns only the exception of a failed ``discard``."""
            assert discard is not None
            async for shard_id in revocations:
                try:
                    await discard(shard_id)
                except Exception as exc:
                    return exc
            await anyio.sleep_forever()
            raise AssertionError("unreachable")

        async def feed() -> None:
            # An empty batch after an idle second makes pipe() call sink.write([]), which
            # collects what the sink made durable meanwhile: it is checkpointed on time.
            await pipe(self.batches(timeout=PIPE_IDLE_REPORT), sink, checkpoint)

        drained = anyio.Event()
        self._pipes.append(drained)
        coord.on_revoke.append(revoked.send_nowait)
        try:
            if discard is None:
                await feed()
            else:
                await first_failure(feed, forward_revocations)
        finally:
            coord.on_revoke.remove(revoked.send_nowait)
            revoked.close()
            revocations.close()
            drained.set()
            self._pipes.remove(drained)

    # --- checkpoints --------------------------------------------------------------------

    @_logs.with_fields(lambda c: {"stream": _aws.stream_name(c._stream), "app": c._app_name})
    async def checkpoint(self, record: Record) -> None:
        """Mark ``record`` and every earlier record of its shard as done.

        Returns once the position is stored (concurrent calls share one write). When
        ``record`` is the last record of a closed shard, SHARD_END is stored instead.
        A position never moves backwards: an earlier record is a no-op.

        Raises errors.LeaseLost if this worker lost the shard, errors.ConsumerClosed
        once the consumer is closing, ValueError for a record this consumer did not
        deliver, and what the checkpointer raises. On cancellation the position stays
        pending and is written by a later checkpoint or by close.
        """
        if not isinstance(record, Record):
            raise TypeError(f"checkpoint() takes a Record, got {type(record).__name__}")
        coord = self._running()
        if coord.closing or self._state == "closed":
            raise errors.ConsumerClosed("the consumer is closed; checkpoint not stored")
        await self._store(coord, record)

    async def _store(self, coord: Coordinator, record: Record) -> None:
        reader = coord.readers.get(record.shard_id)
        if reader is None:
            if record.shard_id in coord.lost:
                raise errors.LeaseLost(record.shard_id)
            raise ValueError(f"shard {record.shard_id} is not read by this consumer")
        await reader.checkpoint(record)

    def stats(self) -> ConsumerStats:
        """Counters since start (all zero before start)."""
        coord = self._coord
        if coord is None or coord.ctx is None:
            return ConsumerStats(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        c = coord.ctx.counters
        readers = list(coord.readers.values())
        return ConsumerStats(
            shards_reading=0 if coord.closing else sum(
                1 for r in readers if not r.ended and not r.lost
            ),
            shards_done=len(coord.done),
            records_fetched=c.records_fetched,
            records_delivered=c.records_delivered,
            records_buffered=sum(r.buffered for r in readers),
            get_records_calls=c.get_records_calls,
            throttled=c.throttled,
            retries=c.retries,
            iterators_renewed=c.iterators_renewed,
            checkpoints_saved=c.checkpoints_saved,
            out_of_range_dropped=c.out_of_range_dropped,
            subscriptions=c.subscriptions,
        )
