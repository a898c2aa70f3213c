"""The demo's consumer group: workers that archive to S3 and note what they archived.

Each :class:`Worker` is a :class:`~shardflow.Consumer` with its own
:class:`~shardflow.DynamoDBLeases` (one lease table for the group), piping into an
:class:`ArchiveTap`: an S3Sink wrapper that records, per event, when it was delivered and
when the S3 object holding it was reported written (into the shared :class:`Tally`).
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import orjson
from anyio.streams.memory import MemoryObjectSendStream

from .. import errors
from .._core.lifecycle import exit_task_group, open_task_group
from ..consumer import Consumer, DynamoDBLeases
from ..models import Record
from ..sinks import S3Sink
from ..sinks.base import Durable
from ._report import Tally

__all__ = ["APP_NAME", "PREFIX", "ArchiveTap", "Where", "Worker"]

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
        # Per shard, a heap of (position, event_id, posted_at) of the events not reported
        # archived yet. Mostly in stream order, but a shard whose lease left this worker
        # and came back is read again from its checkpoint.
        self._pending: dict[str, list[tuple[tuple[int, int], str, float]]] = {}
        self._stash: Durable = {}
        self._stop = anyio.Event()
        self._tick_done = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> ArchiveTap:
        await self._inner.__aenter__()
        self._tg = await open_task_group()
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
                    await exit_task_group(tg, exc_type, exc, tb)
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
            pending = self._pending.setdefault(record.shard_id, [])
            heapq.heappush(pending, (record.position, event_id, posted_at))
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

    async def discard(self, shard_id: str) -> int:
        """The shard moved to the other worker: forget it here (it archives it now)."""
        self._pending.pop(shard_id, None)
        self._stash.pop(shard_id, None)
        return await self._inner.discard(shard_id)

    async def aclose(self) -> Durable:
        """Stop the tick (it finishes its write), then ``S3Sink.aclose()``."""
        self._stop.set()
        if self._tg is not None:
            await self._tick_done.wait()
        return self._report(await self._inner.aclose())

    async def _tick(self) -> None:
        try:
            while True:
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
            done = 0
            while pending and pending[0][0] <= last.position:
                _, event_id, posted_at = heapq.heappop(pending)
                done += 1
                if event_id not in tally.archived:
                    tally.archived.add(event_id)
                    tally.archive_latency.append(now - posted_at)
            tally.by_worker[self._worker] += done
        tally.check_archived()
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

    ``windows`` gets the events for the per-minute counts (from the archive tap); it is
    closed when :meth:`run` ends.
    """

    def __init__(
        self,
        name: str,
        where: Where,
        tally: Tally,
        windows: MemoryObjectSendStream[dict[str, Any]],
    ) -> None:
        self.name = name
        leases = DynamoDBLeases(
            where.table,
            worker_id=name,
            failover_time=FAILOVER_TIME,
            endpoint_url=where.endpoint_url,
            region_name=where.region_name,
        )
        self.consumer = Consumer(
            where.stream,
            app_name=APP_NAME,
            checkpointer=leases,
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
        self._windows = windows
        self._tap = ArchiveTap(sink, name, tally, windows)
        tally.by_worker[name] = 0  # named in the summary even if it archived nothing

    def shards_reading(self) -> int:
        return self.consumer.stats().shards_reading

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Join the group and archive until :meth:`stop`; raises what the pipe raises."""
        with self._windows:
            async with self.consumer:
                task_status.started()
                await self.consumer.pipe(self._tap)

    async def stop(self) -> None:
        """Close the consumer gracefully: the sink writes what it holds, the final
        checkpoints are stored, the leases are released; :meth:`run` then returns."""
        await self.consumer.aclose()
