"""S3Sink: records archived to S3 as NDJSON objects (gzip by default) under UTC hour keys.

Object layout
    ``<prefix>/YYYY/MM/DD/HH/<stream>-<shard>-<first>-<last>.ndjson.gz`` where the hour is
    the UTC ``arrival_time`` of the object's first record and ``<first>``/``<last>`` are the
    sequence numbers of its first and last record, written ``<seq>_<sub>`` for records that
    came out of a KPL aggregate. Without ``stream`` the name starts at ``<shard>``; without
    compression it ends in ``.ndjson``. A ``prefix`` gets a ``/`` appended unless empty.

Lines
    One JSON value per line. A record whose data is a JSON document (UTF-8) is written as
    is (outer whitespace stripped, line breaks between tokens turned into spaces, nothing
    re-encoded, so big numbers survive). Any other record becomes an envelope object
    ``{"data_base64", "partition_key", "sequence_number", "sub_sequence_number",
    "shard_id", "arrival_time", "explicit_hash_key"}`` (time in ISO 8601 UTC).

When an object is cut (per shard; objects never mix shards)
    - before a record whose arrival time is ``max_interval`` or more after the object's
      first record, or falls in another UTC hour (so the key's hour holds all its lines);
    - after the record that brings the object to ``max_bytes`` of uncompressed NDJSON;
    - when the object has been buffered for ``max_interval`` seconds (a timer), and on
      ``flush()`` / ``aclose()``.

Replay idempotence
    The first three rules depend only on the records, so the same records give the same
    objects. The timer and ``flush()`` cut wherever reading happened to be; to make those
    objects repeatable too, the first time the sink sees a shard it lists the objects that
    start at the incoming record (one ListObjectsV2 per shard and hour) and, while earlier
    objects are found, ends each object exactly where the earlier one ended. A replay from a
    checkpoint the sink reported (always the end of an object) therefore rewrites the same
    keys with the same bytes (gzip without a timestamp): no duplicate objects. Once a record
    starts no earlier object, the sink stops listing. Without ``s3:ListBucket`` permission
    it logs a warning and relies on the content rules alone. While an object is being
    rewritten, ``flush()`` and ``aclose()`` keep its records instead of cutting it short:
    they are stored already, in the earlier object, and are not reported, so they are read
    again next time and the object is completed then.
"""

from __future__ import annotations

import base64
import gzip
import logging
import math
import random
import re
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import TracebackType
from typing import Any

import anyio
import orjson
from anyio.abc import TaskGroup

from .. import _aws, errors
from ..models import Record
from .base import Durable

__all__ = ["S3Sink", "S3SinkStats", "encode_record"]

log = logging.getLogger("shardflow.sinks.s3")

MiB = 1024 * 1024
_MAX_OBJECT_BYTES = 5 * 1024**3
"""S3's limit for one PutObject."""
_GZIP_LEVEL = 6
_MAX_ATTEMPTS = 6
_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 2.0
_RETRY_AFTER = 5.0
"""The timer tries a failed object again after this many seconds (or max_interval)."""
_MAX_CONCURRENT_PUTS = 8

_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_US = timedelta(microseconds=1)
_HOUR_US = 3_600_000_000
_POSITION = r"\d+(?:_\d+)?"
_NAME_TAIL = re.compile(rf"^{_POSITION}-({_POSITION})$")

Position = tuple[int, int]


# --- encoding ---------------------------------------------------------------------------


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=_UTC) if when.tzinfo is None else when.astimezone(_UTC)


def _epoch_us(when: datetime) -> int:
    if not isinstance(when, datetime):
        raise TypeError(f"arrival_time must be a datetime, got {type(when).__name__}")
    return (_utc(when) - _EPOCH) // _US


def _position_text(record: Record) -> str:
    if record.sub_sequence_number is None:
        return record.sequence_number
    return f"{record.sequence_number}_{record.sub_sequence_number}"


def _parse_position(text: str) -> Position:
    seq, _, sub = text.partition("_")
    return (int(seq), int(sub) if sub else -1)


def encode_record(record: Record) -> bytes:
    """The record as one NDJSON line, newline included (see the module docstring)."""
    data = record.data
    if not isinstance(data, bytes):
        raise TypeError(f"Record.data must be bytes, got {type(data).__name__}")
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    else:
        line = data.strip()
        if b"\n" in line or b"\r" in line:
            # Raw line breaks in valid JSON can only be whitespace between tokens.
            line = line.replace(b"\r", b" ").replace(b"\n", b" ")
        return line + b"\n"
    envelope = {
        "data_base64": base64.b64encode(data).decode("ascii"),
        "partition_key": record.partition_key,
        "sequence_number": record.sequence_number,
        "sub_sequence_number": record.sub_sequence_number,
        "shard_id": record.shard_id,
        "arrival_time": _utc(record.arrival_time),
        "explicit_hash_key": record.explicit_hash_key,
    }
    return orjson.dumps(envelope, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE)


# --- state ------------------------------------------------------------------------------


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


@dataclass(slots=True)
class _Object:
    key: str
    lines: list[bytes]
    size: int
    count: int
    first: Record
    last: Record
    body: bytes | None = None


class _Shard:
    """One shard's open object, its sealed objects waiting for S3, and its replay state."""

    __slots__ = (
        "accepted",
        "first",
        "first_us",
        "hour",
        "known",
        "last",
        "lines",
        "lock",
        "opened_at",
        "reconciling",
        "retry_at",
        "sealed",
        "shard_id",
        "size",
        "target",
    )

    def __init__(self, shard_id: str, reconciling: bool) -> None:
        self.shard_id = shard_id
        self.lines: list[bytes] = []
        self.size = 0
        self.first: Record | None = None
        self.last: Record | None = None
        self.first_us = 0
        self.hour = ""
        self.opened_at: float | None = None
        self.retry_at: float | None = None
        self.sealed: deque[_Object] = deque()
        self.accepted: Position | None = None
        self.lock = anyio.Lock()
        self.reconciling = reconciling
        # hour -> first position text of an earlier object -> its last position
        self.known: dict[str, dict[str, Position]] = {}
        self.target: Position | None = None


# --- the sink ---------------------------------------------------------------------------


class S3Sink:
    """Archive records to ``bucket`` as NDJSON objects; implements :class:`~.base.Sink`.

    Use as ``async with S3Sink(...) as sink``; ``write`` buffers records per shard and
    returns the positions that became durable (see :mod:`shardflow.sinks.base`). Options
    are keyword-only and validated here (ValueError/TypeError). ``client`` is an injected
    aiobotocore S3 client that stays the caller's; otherwise one is created from
    ``endpoint_url``, ``region_name`` and ``credentials`` (a CredentialSource).
    ``close_timeout`` bounds how long ``aclose()`` spends writing what is left.
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
    ) -> None:
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise ValueError(f"bucket must be a bucket name, got {bucket!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an int, got {type(max_bytes).__name__}")
        if not 1 <= max_bytes <= _MAX_OBJECT_BYTES:
            raise ValueError(f"max_bytes must be in [1, 5 GiB], got {max_bytes}")
        if not _positive(max_interval):
            raise ValueError(
                f"max_interval must be a positive number of seconds, got {max_interval!r}"
            )
        if compression not in ("gzip", None):
            raise ValueError(f"compression must be 'gzip' or None, got {compression!r}")
        if not _positive(close_timeout):
            raise ValueError(
                f"close_timeout must be a positive number of seconds, got {close_timeout!r}"
            )
        _aws.check_endpoint(endpoint_url, region_name)
        if stream is not None:
            _aws.stream_params(stream)  # validates a name or ARN
            stream = _aws.stream_name(stream)
        self.bucket = bucket
        self.prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        self.max_bytes = max_bytes
        self.max_interval = float(max_interval)
        self.compression = compression
        self.stream = stream
        self.close_timeout = float(close_timeout)
        self._endpoint_url = endpoint_url
        self._region_name = region_name
        self._client_arg = client
        self._credentials = credentials
        self._ext = ".ndjson.gz" if compression == "gzip" else ".ndjson"
        self._name_prefix = f"{stream}-" if stream else ""
        self._interval_us = max(1, round(self.max_interval * 1e6))
        self._state = "new"
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._tg: TaskGroup | None = None
        self._shards: dict[str, _Shard] = {}
        self._unreported: Durable = {}
        self._write_lock = anyio.Lock()
        self._puts = anyio.Semaphore(_MAX_CONCURRENT_PUTS)
        self._wake = anyio.Event()
        self._timer_done = anyio.Event()
        # Its own scope: cancelling the task group's would also cancel the code inside
        # the caller's ``async with sink:`` block (e.g. pipe() checkpointing after close).
        self._timer_scope: anyio.CancelScope | None = None
        self._can_list = True
        self._objects = self._records = self._bytes_in = self._bytes_out = self._dupes = 0

    def __repr__(self) -> str:
        return f"S3Sink(bucket={self.bucket!r}, prefix={self.prefix!r}, stream={self.stream!r})"

    # -- lifecycle -----------------------------------------------------------------------

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
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
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
            # (aclose() may run inside other scopes, e.g. shielded by a caller). Only a
            # cancellation concerns it; any other error of the block propagates as is,
            # not wrapped in an ExceptionGroup.
            tg, self._tg = self._tg, None
            if tg is not None:
                if isinstance(exc, anyio.get_cancelled_exc_class()):
                    await tg.__aexit__(exc_type, exc, tb)
                else:
                    await tg.__aexit__(None, None, None)

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
        left = rewriting = 0
        for st in self._shards.values():
            left += sum(obj.count for obj in st.sealed)
            if st.target is None:
                left += len(st.lines)
            else:
                rewriting += len(st.lines)
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
        meanwhile are reported by the next call.
        """
        self._check_open()
        async with self._write_lock:
            self._check_open()
            await self._drain(self._shards.values())
            encoded = [self._encode(record) for record in records]
            await self._prefetch(encoded)
            touched = self._accept(encoded)
            await self._drain(touched)
        return self._take()

    async def flush(self) -> Durable:
        """Write every buffered object (except one being rewritten during a replay, see the
        module docstring); return newly durable positions.

        Raises the S3 error when an object cannot be written; cancellation leaves the
        unwritten objects buffered for a later call.
        """
        if self._state not in ("open", "closing"):
            self._check_open()
        await self._drain(self._shards.values())
        for st in self._shards.values():
            if st.lines and st.target is None:
                self._seal(st)
        await self._drain(self._shards.values())
        return self._take()

    def stats(self) -> S3SinkStats:
        shards = self._shards.values()
        return S3SinkStats(
            objects=self._objects,
            records=self._records,
            bytes_in=self._bytes_in,
            bytes_out=self._bytes_out,
            buffered_records=sum(len(st.lines) for st in shards),
            buffered_bytes=sum(st.size for st in shards),
            pending_objects=sum(len(st.sealed) for st in shards),
            duplicates_skipped=self._dupes,
        )

    # -- internals: accepting ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state == "new":
            raise RuntimeError("S3Sink is not started: use 'async with S3Sink(...) as sink'")
        if self._state != "open":
            raise errors.SinkClosed("S3Sink is closed")

    @staticmethod
    def _encode(record: Record) -> tuple[Record, Position, int, bytes]:
        if not isinstance(record, Record):
            raise TypeError(f"S3Sink.write takes Records, got {type(record).__name__}")
        try:
            position = record.position
        except ValueError:
            raise ValueError(
                f"record has a malformed sequence number {record.sequence_number!r}"
            ) from None
        return record, position, _epoch_us(record.arrival_time), encode_record(record)

    def _shard(self, shard_id: str) -> _Shard:
        st = self._shards.get(shard_id)
        if st is None:
            st = self._shards[shard_id] = _Shard(shard_id, self._can_list)
        return st

    async def _prefetch(self, encoded: Sequence[tuple[Record, Position, int, bytes]]) -> None:
        """List earlier objects for every (shard, hour) a replaying shard may start in."""
        wanted: dict[_Shard, set[str]] = {}
        for record, position, _, _ in encoded:
            st = self._shard(record.shard_id)
            if not st.reconciling or (st.accepted is not None and position <= st.accepted):
                continue
            hour = _utc(record.arrival_time).strftime("%Y/%m/%d/%H")
            if hour not in st.known:
                wanted.setdefault(st, set()).add(hour)
        for st, hours in wanted.items():
            for hour in sorted(hours):
                if not self._can_list:
                    st.reconciling = False
                    break
                st.known[hour] = await self._list_earlier(st.shard_id, hour)

    async def _list_earlier(self, shard_id: str, hour: str) -> dict[str, Position]:
        """{first position text: last position} of the objects already in this hour."""
        start = f"{self.prefix}{hour}/{self._name_prefix}{shard_id}-"
        found: dict[str, Position] = {}
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": start}
        while True:
            try:
                page = await self._call("list_objects_v2", **params)
            except errors.AccessDenied as exc:
                self._can_list = False
                log.warning(
                    "S3Sink cannot list s3://%s/%s (%s): replays rely on content-based "
                    "object boundaries only",
                    self.bucket,
                    self.prefix,
                    exc.code,
                )
                return {}
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                if not key.endswith(self._ext):
                    continue
                tail = key[len(start) : -len(self._ext)]
                match = _NAME_TAIL.match(tail)
                if match is None:
                    continue
                first = tail[: len(tail) - len(match.group(1)) - 1]
                last = _parse_position(match.group(1))
                if first not in found or last > found[first]:
                    found[first] = last
            if not page.get("IsTruncated"):
                return found
            params["ContinuationToken"] = page["NextContinuationToken"]

    def _accept(self, encoded: Sequence[tuple[Record, Position, int, bytes]]) -> list[_Shard]:
        """Add records to their shards' open objects, sealing objects as the rules say.

        Synchronous on purpose: a batch is accepted entirely or (before this) not at all.
        """
        touched: dict[str, _Shard] = {}
        for record, position, at, line in encoded:
            st = self._shard(record.shard_id)
            if st.accepted is not None and position <= st.accepted:
                self._dupes += 1
                continue
            if (
                st.lines
                and st.target is None
                and (
                    at // _HOUR_US != st.first_us // _HOUR_US
                    or at - st.first_us >= self._interval_us
                )
            ):
                self._seal(st)
            if not st.lines:
                self._start(st, record, at)
            st.lines.append(line)
            st.size += len(line)
            st.last = record
            st.accepted = position
            if st.target is not None:
                if position >= st.target:
                    self._seal(st)
            elif st.size >= self.max_bytes:
                self._seal(st)
            touched[st.shard_id] = st
        return list(touched.values())

    def _start(self, st: _Shard, record: Record, at: int) -> None:
        st.first = record
        st.first_us = at
        st.hour = _utc(record.arrival_time).strftime("%Y/%m/%d/%H")
        if st.reconciling:
            earlier_end = st.known.get(st.hour, {}).get(_position_text(record))
            if earlier_end is None:
                st.reconciling = False
                st.known.clear()
            else:
                st.target = earlier_end
                log.debug(
                    "%s: rewriting the object an earlier run started at %s",
                    st.shard_id,
                    record.sequence_number,
                )
        st.opened_at = anyio.current_time()
        self._wake.set()

    def _seal(self, st: _Shard) -> None:
        assert st.first is not None
        assert st.last is not None
        key = (
            f"{self.prefix}{st.hour}/{self._name_prefix}{st.shard_id}-"
            f"{_position_text(st.first)}-{_position_text(st.last)}{self._ext}"
        )
        st.sealed.append(_Object(key, st.lines, st.size, len(st.lines), st.first, st.last))
        st.lines = []
        st.size = 0
        st.first = st.last = None
        st.target = None
        st.opened_at = None

    # -- internals: writing --------------------------------------------------------------

    async def _drain(self, shards: Iterable[_Shard]) -> None:
        """Write the sealed objects of ``shards``: in order within a shard, shards in
        parallel. Raises the first failure after every shard has finished trying."""
        pending = [st for st in shards if st.sealed]
        if len(pending) == 1:
            await self._drain_shard(pending[0])
            return
        failures: list[Exception] = []

        async def one(st: _Shard) -> None:
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

    async def _drain_shard(self, st: _Shard) -> None:
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

    async def _put(self, obj: _Object) -> None:
        """PutObject with retries; the key and bytes are the same on every try."""
        if obj.body is None:
            lines, gz = obj.lines, self.compression == "gzip"
            obj.body = await anyio.to_thread.run_sync(_body, lines, gz)
            obj.lines = []
        content_type = "application/gzip" if self.compression else "application/x-ndjson"
        async with self._puts:
            await self._call(
                "put_object",
                Bucket=self.bucket,
                Key=obj.key,
                Body=obj.body,
                ContentType=content_type,
                Metadata={"records": str(obj.count)},
            )
        log.debug("wrote s3://%s/%s (%d records)", self.bucket, obj.key, obj.count)

    async def _call(self, operation: str, **params: Any) -> Any:
        """One S3 call, retried with full-jitter backoff while the error is retriable."""
        delay = _BACKOFF_BASE
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
            await anyio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, _BACKOFF_CAP)
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
            due: list[_Shard] = []
            upcoming = math.inf
            for st in list(self._shards.values()):
                when = self._due(st)
                if when <= now:
                    due.append(st)
                upcoming = min(upcoming, when)
            if not due:
                with anyio.move_on_after(upcoming - now):
                    await self._wake.wait()
                continue
            for st in due:
                st.retry_at = None
                if st.lines and st.target is None and self._due(st) <= now:
                    self._seal(st)
            try:
                await self._drain(due)
            except Exception as exc:
                log.warning("S3Sink could not write an object, will retry: %s", exc)

    def _due(self, st: _Shard) -> float:
        """When the timer must act on ``st``: its open object's age limit, or a retry."""
        when = math.inf
        if st.lines and st.target is None and st.opened_at is not None:
            when = st.opened_at + self.max_interval
        if st.sealed and st.retry_at is not None:
            when = min(when, st.retry_at)
        return when

    def _take(self) -> Durable:
        taken, self._unreported = self._unreported, {}
        return taken


def _body(lines: list[bytes], gz: bool) -> bytes:
    data = b"".join(lines)
    return gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0) if gz else data


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value * 1e6)  # also in microseconds (max_interval)
        and value > 0
    )
