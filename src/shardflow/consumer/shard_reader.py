"""One shard: :class:`ShardReader`, the object that reads it (its task fetches, converts
and buffers), keeps its checkpoints, and is the public iterator over its records.

Each shard is read by its own task, so an idle shard never delays another. The task
resolves the start position (checkpoint, else ``start_at``), then fetches through the
consumer's :class:`Source`: polling (:class:`PollingSource`, GetRecords, here) or
enhanced fan-out (``_fan_out.FanOutSource``, SubscribeToShard). Either hands each answer's
records to :meth:`ShardReader.accept`, which converts them in exactly one place
(:func:`to_rows` in ``record_conversion``, where KPL aggregates are unpacked) and
buffers them as rows (each made a Record as it is handed out); fetching stops while the
buffer is full, so a slow application costs no memory. Polling reads again at once
after a non-empty answer, within the shard's read budget
(``KinesisLimits.shard_read_calls_per_s`` and ``shard_read_bytes_per_s``), and waits
``poll_interval`` when caught up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any, Protocol, TypeVar

import anyio

from .. import errors
from .._core import aws as _aws
from .._core.logs import get_logger
from ..models import Record, Shard
from ._transport import ReadTransport
from .checkpoint import END_POSITION, SHARD_END, Checkpoint, CheckpointSession
from .pacing import ReadPacer
from .pacing import Signal as Signal  # re-exported: the coordinator and leases use these
from .pacing import backoff_delay as backoff_delay
from .record_conversion import (
    Row,
    as_records,
    child_shard,
    new_record,
    row_position,
    to_records,
    to_rows,
)

__all__ = [
    "Counters",
    "PollingSource",
    "ReadContext",
    "ReaderConfig",
    "ReaderEvents",
    "ShardReader",
    "Source",
    "StartPosition",
    "to_records",
]

log = get_logger("shardflow.consumer")

_T = TypeVar("_T")

_NO_POSITION: tuple[int, int] = (-1, -1)
_data = itemgetter("Data")
_UTC = timezone.utc


@dataclass(slots=True)
class Counters:
    """Running totals, shared by every reader of one consumer."""

    get_records_calls: int = 0
    subscriptions: int = 0
    records_fetched: int = 0
    records_delivered: int = 0
    throttled: int = 0
    retries: int = 0
    iterators_renewed: int = 0
    checkpoints_saved: int = 0
    on_checkpoint: Callable[[float], None] | None = None
    """Metrics hook: called with each checkpoint write's duration (seconds)."""
    out_of_range_dropped: int = 0


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    start_at: str | datetime
    poll_interval: float
    min_call_interval: float
    get_records_limit: int
    max_buffer_records: int
    read_bytes_per_s: float = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Where a fetch starts: ``kind`` is a ShardIteratorType (TRIM_HORIZON, LATEST,
    AT_TIMESTAMP, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER)."""

    kind: str
    sequence_number: str | None = None
    timestamp: datetime | None = None


class Source(Protocol):
    """How a consumer's shard readers fetch: polling or enhanced fan-out."""

    async def read(self, reader: ShardReader) -> None:
        """Fetch ``reader``'s shard from :meth:`ShardReader.position` on, handing every
        answer to :meth:`ShardReader.accept` and the end to :meth:`ShardReader.reach_end`.
        Retries what is retriable; raises what is not. Cancelled when the reader stops."""
        ...


class ReaderEvents(Protocol):
    """What a reader tells its consumer."""

    def reader_started(self, reader: ShardReader) -> None:
        """The reader resolved its start position and is about to fetch."""

    def reader_has_data(self, reader: ShardReader) -> None:
        """A batch was added to the reader's buffer."""

    def reader_ended(self, reader: ShardReader, children: Sequence[Shard]) -> None:
        """The reader reached the end of its (closed or vanished) shard."""

    def reader_done(self, reader: ShardReader) -> None:
        """Every record of the shard was handed out (or there was nothing to read)."""

    def reader_lost(self, reader: ShardReader) -> None:
        """The checkpointer raised errors.LeaseLost for the reader's shard."""

    def reader_failed(self, reader: ShardReader, exc: Exception) -> None:
        """A non-retriable error: the consumer should fail."""

    def failure(self) -> BaseException | None:
        """The consumer's failure, if it failed."""


@dataclass(slots=True, eq=False)
class ReadContext:
    """What every reader of one consumer shares."""

    client: Any
    stream_params: dict[str, str]
    session: CheckpointSession
    config: ReaderConfig
    counters: Counters
    events: ReaderEvents
    source: Source
    per_shard: bool = False
    """Delivered through ShardReader iterators: a shard is done when its iterator ends."""


class ShardReader:
    """The records of one shard, in order; obtained from :meth:`Consumer.shards`.

    ``async for record in reader`` (or ``async for batch in reader.batches()``) ends when
    the shard's last record was handed out (a closed shard), when this worker lost the
    shard (``lost`` is then True), or when the consumer closes. It raises the consumer's
    error if the consumer failed. Checkpoint with ``Consumer.checkpoint(record)``.
    """

    def __init__(self, shard: Shard, ctx: ReadContext, *, start_at: str | datetime) -> None:
        self.shard = shard
        self._ctx = ctx
        self._start_at = start_at  # where to start without a checkpoint (the coordinator's)
        self.consumed = False  # had a checkpoint or was read: children continue from it
        self.millis_behind: int | None = None  # the last MillisBehindLatest (metrics, lag)
        self._scope = anyio.CancelScope()
        self._batches: deque[list[Row]] = deque()
        self._buffered = 0
        self._data = Signal()
        self._room = Signal()
        self._chunk: list[Row] = []
        self._index = 0
        self.queued = False  # in the consumer's ready queue (the consumer manages this)
        self._ended = False  # the end of the shard was reached: nothing more to fetch
        self._finished = False  # ended and every record handed out
        self._lost = False
        self._stopped = False
        self._start: Checkpoint | None = None
        self._skip_to: tuple[int, int] | None = None
        self._last_seq: str | None = None  # last Kinesis record fetched
        self._last_position: tuple[int, int] | None = None  # last user record fetched
        self._anchor: datetime | None = None  # when LATEST was first asked for
        self._cp_lock = anyio.Lock()
        self._cp_wanted: Checkpoint | None = None
        self._cp_wanted_pos = _NO_POSITION
        self._cp_durable_pos = _NO_POSITION

    def __repr__(self) -> str:
        state = "lost" if self._lost else "ended" if self._finished else "reading"
        return f"<ShardReader {self.shard.shard_id} {state} buffered={self._buffered}>"

    @property
    def shard_id(self) -> str:
        return self.shard.shard_id

    @property
    def lost(self) -> bool:
        """True once this worker lost the shard (its checkpointer revoked it)."""
        return self._lost

    @property
    def ended(self) -> bool:
        """True once the shard is closed and every one of its records was handed out."""
        return self._finished and not self._lost

    @property
    def buffered(self) -> int:
        """User records fetched and not yet handed out."""
        return self._buffered

    # --- public iteration (Consumer.shards() mode) -------------------------------------

    def __aiter__(self) -> ShardReader:
        return self

    async def __anext__(self) -> Record:
        """The next record of this shard; cancellation loses nothing (it stays buffered)."""
        while True:
            if self._index < len(self._chunk):
                if self._lost or self._stopped:
                    self._chunk = []
                    raise StopAsyncIteration
                row = self._chunk[self._index]
                self._index += 1
                return new_record(Record, row)
            batch = await self._next_batch()
            if batch is None:
                raise StopAsyncIteration
            self._chunk, self._index = batch, 0

    async def batches(self) -> AsyncIterator[list[Record]]:
        """This shard's records as lists, in order (one list per GetRecords response)."""
        while True:
            if self._index < len(self._chunk):
                rest = self._chunk[self._index :]
                self._chunk, self._index = [], 0
                if self._lost or self._stopped:
                    return
                yield as_records(rest)
                continue
            batch = await self._next_batch()
            if batch is None:
                return
            yield as_records(batch)

    async def _next_batch(self) -> list[Row] | None:
        while True:
            failure = self._ctx.events.failure()
            if failure is not None:
                raise failure
            if self._lost or self._stopped:
                return None
            # The shard is done only when the application asks past its last record.
            batch = self.take()
            if batch is not None:
                return batch
            if self._ended:
                self._finish()
                return None
            await self._data.wait()

    # --- buffer -------------------------------------------------------------------------

    @property
    def has_batches(self) -> bool:
        return bool(self._batches)

    def take(self) -> list[Row] | None:
        """Hand out the oldest buffered batch (None if empty or lost).

        In records mode, taking the last batch of an ended shard marks it done (the
        consumer's iterator hands out the whole batch before taking another).
        """
        if self._lost or not self._batches:
            return None
        batch = self._batches.popleft()
        self._buffered -= len(batch)
        self._ctx.counters.records_delivered += len(batch)
        self._room.fire()
        if not self._batches and self._ended and not self._ctx.per_shard:
            self._finish()
        return batch

    def _push(self, batch: list[Row]) -> None:
        self._batches.append(batch)
        self._buffered += len(batch)
        self._ctx.counters.records_fetched += len(batch)
        self._data.fire()
        self._ctx.events.reader_has_data(self)

    def _finish(self) -> None:
        if not self._finished:
            self._finished = True
            self._data.fire()
            self._ctx.events.reader_done(self)

    def stop(self) -> None:
        """The consumer is closing: stop fetching and delivering (idempotent)."""
        self._stopped = True
        self._scope.cancel()
        self._data.fire()
        self._room.fire()

    def revoke(self) -> None:
        """This worker lost the shard: stop now and drop what is buffered."""
        self._lost = True
        self._batches.clear()
        self._buffered = 0
        self._chunk = []
        self.stop()

    # --- checkpoints --------------------------------------------------------------------

    async def checkpoint(self, record: Record) -> None:
        """Store ``record``'s position (SHARD_END for the last record of a closed shard).

        Returns once a save at or after this position is durable; concurrent calls share
        one save. Raises errors.LeaseLost if the shard was lost, ValueError for a record
        this reader did not fetch. On cancellation the position stays pending: a later
        checkpoint or the consumer's close writes it.
        """
        if self._lost:
            raise errors.LeaseLost(self.shard_id)
        position = record.position
        if self._last_position is None or position > self._last_position:
            at = f"sequence number {record.sequence_number}"
            if record.sub_sequence_number is not None:
                at += f", sub-sequence number {record.sub_sequence_number}"
            raise ValueError(
                f"cannot checkpoint the record at {at} of {self.shard_id}: "
                "this consumer has not delivered it"
            )
        if position > self._cp_wanted_pos:
            if self._ended and position == self._last_position:
                self._cp_wanted, self._cp_wanted_pos = SHARD_END, END_POSITION
            else:
                cp = Checkpoint(record.sequence_number, record.sub_sequence_number)
                self._cp_wanted, self._cp_wanted_pos = cp, position
        elif position <= self._cp_durable_pos:
            return
        await self.flush(position)

    @property
    def checkpoint_pending(self) -> bool:
        return self._cp_wanted_pos > self._cp_durable_pos and not self._lost

    async def flush(self, position: tuple[int, int] | None = None) -> None:
        """Save the newest wanted checkpoint unless one at or after ``position`` is durable."""
        async with self._cp_lock:
            if self._lost:
                raise errors.LeaseLost(self.shard_id)
            target_pos, target = self._cp_wanted_pos, self._cp_wanted
            if target is None or self._cp_durable_pos >= (position or target_pos):
                return
            started = anyio.current_time()
            await self._ctx.session.save(self.shard_id, target)
            self._ctx.counters.checkpoints_saved += 1
            if self._ctx.counters.on_checkpoint is not None:
                self._ctx.counters.on_checkpoint(anyio.current_time() - started)
            self._cp_durable_pos = max(self._cp_durable_pos, target_pos)

    async def _complete(self) -> None:
        """At the end of a closed shard: SHARD_END if every fetched record is checkpointed."""
        outstanding = self._last_position is not None and self._cp_wanted_pos < self._last_position
        if outstanding or self._cp_wanted_pos == END_POSITION:
            return
        self._cp_wanted, self._cp_wanted_pos = SHARD_END, END_POSITION
        try:
            await self.flush()
        except errors.AWSError as exc:
            log.warning("could not record SHARD_END for %s (%s); retried at close",
                        self.shard_id, exc)

    # --- the reader task ----------------------------------------------------------------

    async def run(self) -> None:
        """The reader task. Never raises: failures go to the consumer."""
        with self._scope:
            try:
                await self._read()
            except errors.LeaseLost:
                # The checkpointer found out first (e.g. a conditional write failed).
                self._ctx.events.reader_lost(self)
            except Exception as exc:  # e.g. StreamNotFound (deleted), AccessDenied
                self._ctx.events.reader_failed(self, exc)

    async def _read(self) -> None:
        ctx = self._ctx
        cp = await self.retry("load checkpoint", lambda: ctx.session.get(self.shard_id))
        self.consumed = cp is not None
        if cp is not None and cp.is_shard_end:
            self._cp_wanted_pos = self._cp_durable_pos = END_POSITION
            self._ended = True
            self._finish()
            return
        latest = self._start_at == "LATEST"
        if cp is None and latest and not self.shard.is_open:
            # Closed before we started at LATEST: nothing in it is ours to read.
            self._ended = True
            self._finish()
            return
        self.consumed = True
        if cp is not None:
            self._start = cp
            self._cp_wanted, self._cp_wanted_pos = cp, cp.position
            self._cp_durable_pos = cp.position
            if cp.sub_sequence_number is not None:
                self._skip_to = cp.position
        ctx.events.reader_started(self)
        await ctx.source.read(self)

    # --- what a source calls ----------------------------------------------------------

    def position(self) -> StartPosition:
        """Where the next fetch starts: right after the last Kinesis record fetched, else
        the checkpoint (at its record when it points inside an aggregate), else
        ``start_at``. LATEST is asked for once; a fetch renewed before anything came
        starts AT_TIMESTAMP of that first ask, so nothing put in between is skipped."""
        if self._last_seq is not None:
            return StartPosition("AFTER_SEQUENCE_NUMBER", self._last_seq)
        if self._start is not None:
            inside = self._start.sub_sequence_number is not None
            kind = "AT_SEQUENCE_NUMBER" if inside else "AFTER_SEQUENCE_NUMBER"
            return StartPosition(kind, self._start.sequence_number)
        start_at = self._start_at
        if isinstance(start_at, datetime):
            return StartPosition("AT_TIMESTAMP", timestamp=start_at)
        if start_at == "TRIM_HORIZON":
            # A shard born while we read (or after a shard we read) starts at its
            # beginning: nothing lost.
            return StartPosition("TRIM_HORIZON")
        if self._anchor is None:
            self._anchor = datetime.now(_UTC)
            return StartPosition("LATEST")
        return StartPosition("AT_TIMESTAMP", timestamp=self._anchor)

    def continue_after(self, sequence_number: str) -> None:
        """The next fetch starts after ``sequence_number`` (a fan-out event's
        ContinuationSequenceNumber, at or after the last record fetched)."""
        if self._last_seq is None or int(sequence_number) > int(self._last_seq):
            self._last_seq = sequence_number

    def accept(self, raw_records: Sequence[dict[str, Any]]) -> int:
        """Convert and buffer one answer's ``Records`` (in the service's JSON shape);
        returns the number of user records they held. Records at or before the last one
        fetched are left out (a renewed fetch may repeat its start)."""
        if not raw_records:
            return 0
        last_seq = self._last_seq
        if last_seq is not None and int(raw_records[0]["SequenceNumber"]) <= int(last_seq):
            after = int(last_seq)
            raw_records = [r for r in raw_records if int(r["SequenceNumber"]) > after]
            if not raw_records:
                return 0
        self._last_seq = raw_records[-1]["SequenceNumber"]
        batch, dropped = to_rows(self.shard, raw_records, self._skip_to)
        if dropped:  # (to_rows logs each dropped aggregate)
            self._ctx.counters.out_of_range_dropped += dropped
        self._skip_to = None
        if batch:
            self._last_position = row_position(batch[-1])
            self._push(batch)
        return len(batch) + dropped

    async def wait_for_room(self) -> None:
        """Return once the buffer has room for another answer."""
        limit = self._ctx.config.max_buffer_records
        while self._buffered >= limit:
            await self._room.wait()

    async def reach_end(self, children: Sequence[Shard]) -> None:
        """The shard is closed and every record was fetched; ``children`` continue it."""
        log.debug("%s ended; children %s", self.shard_id, [c.shard_id for c in children])
        self._ended = True
        await self._complete()
        self._ctx.events.reader_ended(self, children)
        if not self._batches and not self._ctx.per_shard:
            self._finish()
        self._data.fire()  # a ShardReader iterator waiting for data sees the end

    async def retry(self, what: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        """``fn()``, tried again after a jittered backoff while it raises a retriable
        shardflow error (counted as throttled or retried); anything else propagates."""
        attempt = 0
        while True:
            try:
                return await fn()
            except errors.ShardflowError as exc:
                if not exc.retriable:
                    raise
                self.count_retry(exc)
                log.debug("%s for %s failed (%s); retrying", what, self.shard_id, exc)
                await anyio.sleep(backoff_delay(attempt))
                attempt += 1

    def count_retry(self, exc: errors.ShardflowError) -> None:
        if isinstance(exc, errors.ThroughputExceeded):
            self._ctx.counters.throttled += 1
        else:
            self._ctx.counters.retries += 1


class PollingSource:
    """Reads with GetRecords: one iterator per shard, renewed when it expires, each call
    within the shard's read budget; caught up, it waits ``poll_interval``. GetRecords goes
    through the consumer's :class:`ReadTransport` (signed by botocore, parsed by orjson);
    GetShardIterator, called once per shard and on expiry, through the botocore client."""

    def __init__(self, client: Any, transport: ReadTransport, stream_params: dict[str, str],
                 config: ReaderConfig, counters: Counters) -> None:
        self._client = client
        self._transport = transport
        self._stream_params = stream_params
        self._config = config
        self._counters = counters

    async def read(self, reader: ShardReader) -> None:
        cfg, counters, call = self._config, self._counters, self._transport.call
        pacer = ReadPacer(1.0 / cfg.min_call_interval, cfg.read_bytes_per_s)
        limit = cfg.get_records_limit
        # KPL aggregates hold many user records each: ask for fewer Kinesis records so
        # one answer stays within the buffer (max_buffer_records user records).
        per_record = 1.0
        iterator: str | None = await self._iterator(reader)
        attempt = 0
        while iterator is not None:
            await reader.wait_for_room()
            delay = pacer.delay(anyio.current_time())
            if delay > 0:
                await anyio.sleep(delay)
            pacer.called(anyio.current_time())
            counters.get_records_calls += 1
            try:
                ask = min(limit, max(1, int(cfg.max_buffer_records / per_record)))
                response = await call("GetRecords", {"ShardIterator": iterator, "Limit": ask})
            except errors.ExpiredIterator:
                counters.iterators_renewed += 1
                iterator = await self._iterator(reader)
                continue
            except errors.AWSError as exc:
                if not exc.retriable:
                    raise
                reader.count_retry(exc)
                log.debug("GetRecords on %s failed (%s); retrying", reader.shard_id, exc)
                await anyio.sleep(backoff_delay(attempt))
                attempt += 1
                continue
            attempt = 0
            reader.millis_behind = response.get("MillisBehindLatest")
            raw = response.get("Records") or ()
            if raw:
                # AWS counts record data against the shard's 2 MiB/s (base64: 4 chars, 3 bytes)
                nbytes = sum(map(len, map(_data, raw))) * 3 // 4
                pacer.spent(anyio.current_time(), nbytes)
                per_record = max(1.0, reader.accept(raw) / len(raw))
            iterator = response.get("NextShardIterator")
            if iterator is None:
                await reader.reach_end([child_shard(c) for c in response.get("ChildShards") or ()])
                return
            # Caught up: wait poll_interval. A full response, or an empty one that says
            # the tip is still ahead (AWS skips gaps this way), reads again at once.
            behind = response.get("MillisBehindLatest")
            if len(raw) < ask and (behind == 0 or (behind is None and not raw)):
                await anyio.sleep(cfg.poll_interval)

    async def _iterator(self, reader: ShardReader) -> str:
        """A shard iterator at the reader's position."""
        start = reader.position()
        params: dict[str, Any] = dict(
            self._stream_params, ShardId=reader.shard_id, ShardIteratorType=start.kind
        )
        if start.sequence_number is not None:
            params["StartingSequenceNumber"] = start.sequence_number
        if start.timestamp is not None:
            params["Timestamp"] = start.timestamp

        async def get() -> str:
            response = await _aws.call(self._client, "get_shard_iterator", **params)
            return str(response["ShardIterator"])

        return await reader.retry("GetShardIterator", get)
