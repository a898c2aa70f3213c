"""The demo's consumer group: workers that archive to S3 and note what they archived.

Each :class:`Worker` is a :class:`~shardflow.Consumer` with its own
:class:`~shardflow.DynamoDBLeases` (one lease table for the group), piping into an
:class:`ArchiveTap`: an S3Sink wrapper that records, per event, when it was delivered and
when the S3 object holding it was reported written (into the shared :class:`Tally`).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import orjson
from anyio.streams.memory import MemoryObjectSendStream

from . import errors
from ._demo_report import Tally
from .consumer import Consumer, DynamoDBLeases
from .models import Record
from .sinks import S3Sink
from .sinks.base import Durable

__all__ = ["APP_NAME", "PREFIX", "ArchiveTap", "Where", "Worker", "shardflow_error"]

log = logging.getLogger("shardflow.demo")

APP_NAME = "shardflow-demo"
PREFIX = "events/"
FAILOVER_TIME = 3.0
"""Lease failover of the demo's group: short, so that the two workers balance quickly."""
POLL_INTERVAL = 0.25
OBJECT_INTERVAL = 1.0
"""S3Sink max_interval: an object per shard and second while events flow."""
TICK = 0.2
"""How often each archive tap asks its S3Sink which objects were written."""
MAX_RESTARTS = 5


# --- the archive tap: S3Sink plus what the demo measures ---------------------------------


def _event(record: Record) -> dict[str, Any] | None:
    try:
        event = orjson.loads(record.data)
    except orjson.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and isinstance(event.get("event_id"), str) else None


class ArchiveTap:
    """A Sink in front of an S3Sink: forwards every batch, and notes for each event when
    it was delivered and when the object holding it was reported written.

    A background tick asks the S3Sink (``write([])``) every ``TICK`` seconds for objects
    its interval timer wrote, so archive times are precise to a tick; those positions are
    handed to ``Consumer.pipe`` with the next report, which checkpoints them.
    """

    def __init__(
        self,
        inner: S3Sink,
        worker: str,
        tally: Tally,
        windows: MemoryObjectSendStream[dict[str, Any]],
    ) -> None:
        self._inner = inner
        self._worker = worker
        self._tally = tally
        self._windows = windows
        self._pending: dict[str, deque[tuple[tuple[int, int], str, float]]] = {}
        self._unsorted: set[str] = set()
        self._stash: Durable = {}
        self._stop = anyio.Event()
        self._tick_done = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> ArchiveTap:
        await self._inner.__aenter__()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._tick)
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
            tg, self._tg = self._tg, None
            try:
                if tg is not None:
                    await tg.__aexit__(exc_type, exc, tb)
            finally:
                await self._inner.__aexit__(exc_type, exc, tb)

    async def write(self, records: Sequence[Record]) -> Durable:
        """Note the records, then ``S3Sink.write`` them; raises and cancels as it does."""
        now = time.time()
        tally = self._tally
        for record in records:
            event = _event(record)
            if event is None:
                continue
            event_id: str = event["event_id"]
            posted_at = float(event.get("time", now))
            pending = self._pending.setdefault(record.shard_id, deque())
            if pending and record.position < pending[-1][0]:
                self._unsorted.add(record.shard_id)
            pending.append((record.position, event_id, posted_at))
            tally.deliveries += 1
            if record.sub_sequence_number is not None:
                tally.in_aggregates += 1
            if event_id not in tally.delivered:
                tally.delivered.add(event_id)
                tally.delivery_latency.append(now - posted_at)
                self._windows.send_nowait(event)
        return self._report(await self._inner.write(records))

    async def flush(self) -> Durable:
        return self._report(await self._inner.flush())

    async def aclose(self) -> Durable:
        """Stop the tick (it finishes its write), then ``S3Sink.aclose()``."""
        self._stop.set()
        if self._tg is not None:
            await self._tick_done.wait()
        return self._report(await self._inner.aclose())

    async def _tick(self) -> None:
        try:
            while not self._stop.is_set():
                with anyio.move_on_after(TICK):
                    await self._stop.wait()
                if self._stop.is_set():
                    return
                try:
                    durable = await self._inner.write([])
                except errors.SinkClosed:
                    return
                except errors.ShardflowError as exc:  # the pipe's next write raises it too
                    log.debug("%s: S3Sink tick: %s", self._worker, exc)
                    continue
                self._stash = self._merge(self._stash, self._account(durable))
        finally:
            self._tick_done.set()

    def _report(self, durable: Durable) -> Durable:
        stash, self._stash = self._stash, {}
        return self._merge(stash, self._account(durable))

    @staticmethod
    def _merge(into: Durable, more: Mapping[str, Record]) -> Durable:
        for shard_id, record in more.items():
            held = into.get(shard_id)
            if held is None or record.position > held.position:
                into[shard_id] = record
        return into

    def _account(self, durable: Durable) -> Durable:
        now = time.time()
        tally = self._tally
        for shard_id, last in durable.items():
            pending = self._pending.get(shard_id)
            if not pending:
                continue
            limit = last.position
            if shard_id in self._unsorted:
                done = [item for item in pending if item[0] <= limit]
                pending = deque(item for item in pending if item[0] > limit)
                self._pending[shard_id] = pending
                if all(a[0] <= b[0] for a, b in pairwise(pending)):
                    self._unsorted.discard(shard_id)
            else:
                done = []
                while pending and pending[0][0] <= limit:
                    done.append(pending.popleft())
            tally.by_worker[self._worker] += len(done)
            for _, event_id, posted_at in done:
                if event_id not in tally.archived:
                    tally.archived.add(event_id)
                    tally.archive_latency.append(now - posted_at)
        if tally.target is not None and len(tally.archived) >= tally.target:
            tally.all_archived.set()
        return durable


# --- the consumer group ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Where:
    stream: str
    bucket: str
    table: str
    endpoint_url: str | None
    region_name: str | None


class Worker:
    """One member of the group: Consumer + DynamoDBLeases, piping into an archive tap.

    If its pipe fails (say a lease was lost while a checkpoint was being written), the
    worker starts a new consumer, which resumes from the lease table's checkpoints.
    """

    def __init__(
        self,
        name: str,
        where: Where,
        tally: Tally,
        windows: MemoryObjectSendStream[dict[str, Any]],
    ) -> None:
        self.name = name
        self._where = where
        self._tally = tally
        self._windows = windows
        self._leases = DynamoDBLeases(
            where.table,
            worker_id=name,
            failover_time=FAILOVER_TIME,
            endpoint_url=where.endpoint_url,
            region_name=where.region_name,
        )
        self.consumer: Consumer | None = None
        self._stopping = False
        self._stopped = anyio.Event()

    def shards_reading(self) -> int:
        return self.consumer.stats().shards_reading if self.consumer is not None else 0

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        where = self._where
        started = False
        try:
            while not self._stopping:
                consumer = Consumer(
                    where.stream,
                    app_name=APP_NAME,
                    checkpointer=self._leases,
                    endpoint_url=where.endpoint_url,
                    region_name=where.region_name,
                    poll_interval=POLL_INTERVAL,
                )
                sink = S3Sink(
                    where.bucket,
                    prefix=PREFIX,
                    max_interval=OBJECT_INTERVAL,
                    stream=where.stream,
                    endpoint_url=where.endpoint_url,
                    region_name=where.region_name,
                )
                self.consumer = consumer
                try:
                    async with consumer:
                        if not started:
                            started = True
                            task_status.started()
                        await consumer.pipe(ArchiveTap(sink, self.name, self._tally,
                                                        self._windows))
                except Exception as exc:
                    error = shardflow_error(exc)
                    restarts = self._tally.restarts[self.name]
                    if not started or error is None or restarts >= MAX_RESTARTS:
                        raise
                    self._tally.restarts[self.name] += 1
                    log.warning("%s stopped (%s); starting it again", self.name, error)
                    await anyio.sleep(1.0)
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Close the consumer gracefully: the sink writes what it holds, the final
        checkpoints are stored, the leases are released."""
        self._stopping = True
        if self.consumer is not None:
            await self.consumer.aclose()
        await self._stopped.wait()


def shardflow_error(exc: BaseException) -> errors.ShardflowError | None:
    """``exc`` or the first shardflow error inside an exception group."""
    if isinstance(exc, errors.ShardflowError):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = shardflow_error(inner)
        if found is not None:
            return found
    return None
