"""S3Sink: records archived to S3 as NDJSON objects (gzip by default) under UTC hour keys.

The sink's lifecycle and its S3 calls live here. How objects are named and what their
lines hold is in :mod:`shardflow.sinks.s3_layout`; when an object is cut, and how a replay
from a reported checkpoint rewrites the same objects instead of adding duplicates, is in
:mod:`shardflow.sinks.s3_buffers`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .. import errors
from .._core import aws as _aws
from .._core import logs as _logs
from .._core import metrics as _metrics
from .._core.backoff import full_jitter
from .._core.lifecycle import exit_task_group, open_task_group
from .._core.logs import get_logger
from .._core.validate import check_int, check_number, shown
from ..models import Record
from ._metrics import S3SinkMetrics
from .base import Durable
from .s3_buffers import SealedObject, ShardBuffer, ShardBuffers
from .s3_layout import Encoded, Layout, Position, encode, encode_record

__all__ = ["S3Sink", "S3SinkStats", "encode_record"]

log = get_logger("shardflow.sinks.s3")

MiB = 1024 * 1024
_MAX_OBJECT_BYTES = 5 * 1024**3
"""S3's limit for one PutObject."""
_MAX_ATTEMPTS = 6
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0
_RETRY_AFTER = 5.0
"""The timer tries a failed object again after this many seconds (or max_interval)."""
_MAX_CONCURRENT_PUTS = 8


@dataclass(frozen=True, slots=True)
class S3SinkStats:
    """Counters since the sink was created. Bytes: ``bytes_in`` uncompressed NDJSON,
    ``bytes_out`` as stored."""

    objects: int
    records: int
    bytes_in: int
    bytes_out: int
    buffered_records: int
    buffered_bytes: int
    pending_objects: int
    duplicates_skipped: int


# --- the sink ---------------------------------------------------------------------------


class S3Sink:
    """Archive records to ``bucket`` as NDJSON objects; implements :class:`~.base.Sink`.

    Use as ``async with S3Sink(...) as sink``; ``write`` buffers records per shard and
    returns the positions that became durable (see :mod:`shardflow.sinks.base`). Keys and
    lines are described in :mod:`shardflow.sinks.s3_layout`, when objects are cut in
    :mod:`shardflow.sinks.s3_buffers`. Options are keyword-only and validated here
    (ValueError/TypeError). ``client`` is an injected aiobotocore S3 client that stays the
    caller's; otherwise one is created from ``endpoint_url``, ``region_name`` and
    ``credentials`` (a CredentialSource). ``close_timeout`` bounds how long ``aclose()``
    spends writing what is left. ``meter_provider``: an OpenTelemetry MeterProvider for
    the sink's metrics (default: the global one when OpenTelemetry is installed).
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        max_bytes: int = 5 * MiB,
        max_interval: float = 60.0,
        compression: str | None = "gzip",
        stream: str | None = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        client: Any = None,
        credentials: _aws.CredentialSource | None = None,
        close_timeout: float = 30.0,
        meter_provider: Any = None,
    ) -> None:
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise ValueError(f"bucket must be a bucket name, got {shown(bucket)}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        check_int("max_bytes", max_bytes, 1, _MAX_OBJECT_BYTES)  # S3's object limit, 5 GiB
        interval = check_number("max_interval", max_interval, unit="seconds")
        if not math.isfinite(interval * 1e6):  # ShardBuffers counts it in microseconds
            raise ValueError(f"max_interval is too large in microseconds, got {interval}")
        if compression not in ("gzip", None):
            raise ValueError(f"compression must be 'gzip' or None, got {shown(compression)}")
        timeout = check_number("close_timeout", close_timeout, unit="seconds")
        _aws.check_endpoint(endpoint_url, region_name)
        if stream is not None:
            _aws.stream_params(stream)  # validates a name or ARN
            stream = _aws.stream_name(stream)
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        self.max_bytes = max_bytes
        self.max_interval = interval
        self.compression = compression
        self.stream = stream
        self.close_timeout = timeout
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._client_arg = client
        self._credentials = credentials
        self._layout = Layout(self.prefix, stream, compression == "gzip")
        self._state = "new"
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._buffers = ShardBuffers(
            self._layout,
            max_bytes=max_bytes,
            max_interval=self.max_interval,
            on_open=lambda: self._wake.set(),
        )
        self._unreported: Durable = {}
        meter = _metrics.meter(meter_provider)
        self._metrics = S3SinkMetrics(self, meter) if meter is not None else None
        self._write_lock = anyio.Lock()
        self._puts = anyio.Semaphore(_MAX_CONCURRENT_PUTS)
        self._wake = anyio.Event()
        self._timer_done = anyio.Event()
        # A failure the timer cannot get past by retrying (e.g. the bucket is gone); it
        # stops trying until a call succeeds, and failed() hands the error to pipe().
        self._failure: Exception | None = None
        self._failed = anyio.Event()
        # Its own scope: cancelling the task group's would also cancel the code inside
        # the caller's ``async with sink:`` block (e.g. pipe() checkpointing after close).
        self._timer_scope: anyio.CancelScope | None = None
        self._objects = self._records = self._bytes_in = self._bytes_out = 0

    def __repr__(self) -> str:
        return f"S3Sink(bucket={self.bucket!r}, prefix={self.prefix!r}, stream={self.stream!r})"

    # -- lifecycle -----------------------------------------------------------------------

    @_logs.with_fields(lambda sink: {"stream": sink.stream, "bucket": sink.bucket})
    async def __aenter__(self) -> S3Sink:
        """Open the client, check the bucket, start the interval timer.

        Raises errors.ResourceNotFound when the bucket does not exist, another
        errors.AWSError when S3 cannot be reached, RuntimeError when entered twice.
        """
        if self._state != "new":
            raise RuntimeError("an S3Sink can be entered only once")
        self._state = "starting"
        stack = AsyncExitStack()
        try:
            self._client = await _aws.open_client(
                stack,
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region_name,
                client=self._client_arg,
                credentials=self._credentials,
                max_pool_connections=_MAX_CONCURRENT_PUTS + 2,
            )
            await self._check_bucket()
        except BaseException:
            self._state = "closed"
            with anyio.CancelScope(shield=True):
                await stack.aclose()
            raise
        self._stack = stack
        self._timer_scope = anyio.CancelScope()
        self._tg = await open_task_group()
        self._tg.start_soon(self._run_timer, self._timer_scope)
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self.aclose()
        finally:
            # The task group exits here, where its cancel scope is the current one
            # (aclose() may run inside other scopes, e.g. shielded by a caller).
            tg, self._tg = self._tg, None
            if tg is not None:
                await exit_task_group(tg, exc_type, exc, tb)

    async def aclose(self) -> Durable:
        """Refuse new records, write everything buffered, stop the timer, close the client.

        Writing is shielded from cancellation and bounded by ``close_timeout``. Returns the
        positions not reported yet. Raises the S3 error that stopped the final writes, or
        errors.DeliveryFailed when ``close_timeout`` ran out; the records not written are
        not reported (so never checkpointed). Idempotent: later calls return what is still
        unreported (normally ``{}``). The ``async with`` block's exit completes the close.
        """
        if self._state in ("closing", "closed"):
            return self._take()
        was_open = self._state == "open"
        self._state = "closing"
        failure: BaseException | None = None
        durable: Durable = {}
        try:
            if was_open:
                with anyio.move_on_after(self.close_timeout, shield=True) as scope:
                    try:
                        durable = await self.flush()
                    except Exception as error:
                        failure = error
                if scope.cancelled_caught:
                    failure = errors.DeliveryFailed(
                        f"S3Sink closed after {self.close_timeout}s with objects not written"
                    )
        finally:
            self._state = "closed"
            stack, self._stack = self._stack, None
            with anyio.CancelScope(shield=True):
                if self._tg is not None and self._timer_scope is not None:
                    self._timer_scope.cancel()
                    await self._timer_done.wait()
                if stack is not None:
                    await stack.aclose()
        left, rewriting = self._buffers.unwritten()
        if left:
            log.warning("S3Sink closed with %d records not written, hence not reported", left)
        if rewriting:
            log.info(
                "S3Sink closed while rewriting earlier objects: %d records left to a replay",
                rewriting,
            )
        if failure is not None:
            raise failure
        durable.update(self._take())
        return durable

    # -- writing -------------------------------------------------------------------------

    async def write(self, records: Sequence[Record]) -> Durable:
        """Buffer ``records`` (any shards, each shard's in stream order); return newly
        durable positions.

        Objects that are due (by size or arrival time) are written before this returns, so
        memory stays near ``max_bytes`` per shard. Records at or before a position already
        accepted for their shard are skipped as duplicates. Calls run one at a time.

        Raises errors.SinkClosed after ``aclose()``, RuntimeError before ``async with``,
        TypeError/ValueError for a malformed record (then no record of the batch is
        accepted), and the S3 error (errors.AWSError subclasses; ResourceNotFound for a
        missing bucket) when an object cannot be written after retries. Objects written
        earlier but not stored are written first; if that fails, nothing is accepted.
        Once accepted, records stay buffered even if the call then fails or is cancelled,
        and are written by a later call, the timer or ``aclose()``; positions made durable
        meanwhile are reported by the next call. ``write([])`` only reports them: it writes
        nothing (the timer retries what is pending) and makes no S3 call.
        """
        self._check_open()
        if not records:
            return self._take()
        async with self._write_lock:
            self._check_open()
            await self._drain(self._buffers.shards.values())
            encoded = [encode(record) for record in records]
            await self._prefetch(encoded)
            touched = self._buffers.accept(encoded)
            await self._drain(touched)
        self._recovered()
        return self._take()

    async def flush(self) -> Durable:
        """Write every buffered object (except one being rewritten during a replay, see
        :mod:`shardflow.sinks.s3_buffers`); return newly durable positions.

        Raises the S3 error when an object cannot be written; cancellation leaves the
        unwritten objects buffered for a later call.
        """
        if self._state not in ("open", "closing"):
            self._check_open()
        shards = self._buffers.shards.values()
        await self._drain(shards)
        self._buffers.seal_all()
        await self._drain(shards)
        self._recovered()
        return self._take()

    async def failed(self) -> Exception:
        """Wait until writing in the background (the interval timer) hits a failure that
        retrying cannot fix, and return it: a missing bucket (errors.ResourceNotFound),
        errors.AccessDenied, or any error that is not retriable.

        ``Consumer.pipe`` and :func:`~shardflow.sinks.base.pipe` raise it, so a dead sink
        stops the pipeline even when no records arrive. The sink itself stays usable: the
        timer stops retrying, and a later ``write`` or ``flush`` tries again (raising the
        error, or clearing it if the cause is gone). Cancellation is safe.
        """
        while True:
            event = self._failed
            await event.wait()
            if self._failure is not None:
                return self._failure

    async def discard(self, shard_id: str) -> int:
        """Drop, unwritten and unreported, what the sink holds for ``shard_id``; return
        how many records that was.

        For a shard this worker no longer owns: its new owner reads it again from the last
        checkpoint and writes the same objects. An object write already under way is
        waited for (it cannot be taken back). Cancellation leaves the shard as it was.
        """
        st = self._buffers.shards.get(shard_id)
        if st is None:
            return 0
        async with st.lock:
            dropped = st.clear()
            if self._buffers.shards.get(shard_id) is st:
                del self._buffers.shards[shard_id]
            self._unreported.pop(shard_id, None)
        if dropped:
            log.info("discarded %d records of %s (the shard moved to another worker)",
                     dropped, shard_id)
        return dropped

    def stats(self) -> S3SinkStats:
        buffered_records, buffered_bytes, pending_objects = self._buffers.buffered()
        return S3SinkStats(
            objects=self._objects,
            records=self._records,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            buffered_records=buffered_records,
            buffered_bytes=buffered_bytes,
            pending_objects=pending_objects,
            duplicates_skipped=self._buffers.duplicates,
        )

    # -- internals: checks and replay listings --------------------------------------------

    def _check_open(self) -> None:
        if self._state == "new":
            raise RuntimeError("S3Sink is not started: use 'async with S3Sink(...) as sink'")
        if self._state != "open":
            raise errors.SinkClosed("S3Sink is closed")

    async def _prefetch(self, encoded: Sequence[Encoded]) -> None:
        """List earlier objects for every (shard, hour) a replaying shard may start in."""
        buffers = self._buffers
        for st, hours in buffers.listings_wanted(encoded).items():
            for hour in hours:
                if not buffers.can_list:
                    st.reconciling = False
                    break
                st.known[hour] = await self._list_earlier(st.shard_id, hour)

    async def _list_earlier(self, shard_id: str, hour: str) -> dict[str, Position]:
        """{first position text: last position} of the objects already in this hour."""
        start = self._layout.shard_prefix(hour, shard_id)
        found: dict[str, Position] = {}
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": start}
        while True:
            try:
                page = await self._call("list_objects_v2", **params)
            except errors.AccessDenied as exc:
                self._buffers.can_list = False
                log.warning(
                    "S3Sink cannot list s3://%s/%s (%s): replays rely on content-based "
                    "object boundaries only",
                    self.bucket,
                    self.prefix,
                    exc.code,
                )
                return {}
            for item in page.get("Contents", ()):
                parsed = self._layout.parse_key(str(item["Key"]), start)
                if parsed is None:
                    continue
                first, last = parsed
                if first not in found or last > found[first]:
                    found[first] = last
            if not page.get("IsTruncated"):
                return found
            params["ContinuationToken"] = page["NextContinuationToken"]

    # -- internals: writing --------------------------------------------------------------

    async def _drain(self, shards: Iterable[ShardBuffer]) -> None:
        """Write the sealed objects of ``shards``: in order within a shard, shards in
        parallel. Raises the first failure after every shard has finished trying."""
        pending = [st for st in shards if st.sealed]
        if len(pending) == 1:
            await self._drain_shard(pending[0])
            return
        failures: list[Exception] = []

        async def one(st: ShardBuffer) -> None:
            try:
                await self._drain_shard(st)
            except Exception as exc:
                failures.append(exc)

        if pending:
            async with anyio.create_task_group() as tg:
                for st in pending:
                    tg.start_soon(one, st)
        if failures:
            raise failures[0]

    async def _drain_shard(self, st: ShardBuffer) -> None:
        async with st.lock:
            while st.sealed:
                obj = st.sealed[0]
                try:
                    await self._put(obj)
                except BaseException:
                    # Stays first in line; the timer tries again (so does the next call).
                    st.retry_at = anyio.current_time() + min(_RETRY_AFTER, self.max_interval)
                    self._wake.set()
                    raise
                st.sealed.popleft()
                self._objects += 1
                self._records += obj.count
                self._bytes_in += obj.size
                self._bytes_out += len(obj.body or b"")
                self._unreported[st.shard_id] = obj.last
            st.retry_at = None

    async def _put(self, obj: SealedObject) -> None:
        """PutObject with retries; the key and bytes are the same on every try."""
        if obj.body is None:
            obj.body = await anyio.to_thread.run_sync(self._layout.body, obj.lines)
            obj.lines = []
        async with self._puts:
            started = anyio.current_time()
            await self._call(
                "put_object",
                Bucket=self.bucket,
                Key=obj.key,
                Body=obj.body,
                ContentType=self._layout.content_type,
                Metadata={"records": str(obj.count)},
            )
            if self._metrics is not None:
                self._metrics.wrote(anyio.current_time() - started)
        log.debug("wrote s3://%s/%s (%d records)", self.bucket, obj.key, obj.count)

    async def _call(self, operation: str, **params: Any) -> Any:
        """One S3 call, retried with full-jitter backoff while the error is retriable."""
        for attempt in range(1, _MAX_ATTEMPTS + 1):
            try:
                return await _aws.call(self._client, operation, service="s3", **params)
            except errors.ResourceNotFound as exc:
                raise errors.ResourceNotFound(
                    exc.code, f"bucket {self.bucket!r} does not exist", operation
                ) from exc
            except errors.ShardflowError as exc:
                if not exc.retriable or attempt == _MAX_ATTEMPTS:
                    raise
                log.debug("%s failed (%s), attempt %d; retrying", operation, exc, attempt)
            await anyio.sleep(full_jitter(attempt - 1, _BACKOFF_BASE, _BACKOFF_CAP))
        raise AssertionError("unreachable")

    async def _check_bucket(self) -> None:
        try:
            await self._call("head_bucket", Bucket=self.bucket)
        except errors.ResourceNotFound as exc:
            raise errors.ResourceNotFound(
                "NoSuchBucket", f"bucket {self.bucket!r} does not exist", "head_bucket"
            ) from exc
        except errors.AccessDenied:
            # HeadBucket needs s3:ListBucket; writing may still be allowed.
            log.debug("HeadBucket on %s denied; going on", self.bucket)

    async def _run_timer(self, scope: anyio.CancelScope) -> None:
        """Cut objects buffered for ``max_interval`` and retry failed ones, until closed."""
        try:
            with scope:
                await self._timer_loop()
        finally:
            self._timer_done.set()

    async def _timer_loop(self) -> None:
        while True:
            self._wake = anyio.Event()
            now = anyio.current_time()
            due: list[ShardBuffer] = []
            upcoming = math.inf
            for st in list(self._buffers.shards.values()):
                when = self._buffers.due(st)
                if when <= now:
                    due.append(st)
                upcoming = min(upcoming, when)
            if self._failure is not None:  # until a write or flush gets through
                upcoming, due = math.inf, []
            if not due:
                with anyio.move_on_after(upcoming - now):
                    await self._wake.wait()
                continue
            for st in due:
                st.retry_at = None
            self._buffers.seal_expired(due, now)
            try:
                await self._drain(due)
            except Exception as exc:
                if isinstance(exc, errors.ShardflowError) and exc.retriable:
                    log.warning("S3Sink could not write an object, will retry: %s", exc)
                    continue
                log.error("S3Sink cannot write objects (%s); stopped retrying", exc)
                self._failure = exc
                self._failed.set()

    def _recovered(self) -> None:
        """A call got its objects written: whatever failed the timer is gone."""
        if self._failure is not None:
            log.info("S3Sink writes again")
            self._failure = None
            self._failed = anyio.Event()
            self._wake.set()

    def _take(self) -> Durable:
        taken, self._unreported = self._unreported, {}
        return taken
