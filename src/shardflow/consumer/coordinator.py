"""The consumer's coordinator: shard list, assignment, reader lifecycle, delivery queue.

It keeps every shard it has seen (ListShards at start, every ``resync_interval`` and when
a shard ends, plus GetRecords' ``ChildShards``), asks the checkpointer which shards this
worker may read, and starts a :class:`ShardReader` for a granted shard once each of its
parents is done (delivered here to its end, or stored at SHARD_END). It is the
consumer's :class:`AssignmentListener` (for the checkpointer) and :class:`ReaderEvents`
(for the readers).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import anyio
import anyio.abc

from .. import errors
from .._core import logs as _logs
from .._core.aws import list_shards
from .._core.logs import get_logger
from ..models import Shard
from .checkpoint import CheckpointSession, StartPositions
from .record_conversion import Row
from .shard_reader import ReadContext, ShardReader, Signal, backoff_delay

__all__ = ["Coordinator"]

log = get_logger("shardflow.consumer")


class Coordinator:
    """Shard list, assignment, reader lifecycle and the delivery queue of one consumer.

    It is the consumer's AssignmentListener (for the checkpointer) and ReaderEvents
    (for the readers).
    """

    def __init__(self, client: Any, stream: str, resync_interval: float) -> None:
        self.client = client
        self.stream = stream
        self.resync_interval = resync_interval
        self.ctx: ReadContext | None = None
        self.task_group: anyio.abc.TaskGroup | None = None
        self.known: dict[str, Shard] = {}
        self.initial: set[str] = set()
        self.readers: dict[str, ShardReader] = {}
        self.done: set[str] = set()
        # Shards this application has read (here, or a stored checkpoint says so): their
        # children continue the lineage from TRIM_HORIZON, whatever start_at says.
        self.consumed: set[str] = set()
        self.lost: set[str] = set()
        self.taken = 0  # readers started (shards assigned), for metrics
        self.revoked = 0  # readers stopped because the shard was revoked
        self.retry_lost = False
        self.on_revoke: list[Callable[[str], object]] = []
        """Called with a shard id as soon as it is revoked (e.g. Consumer.pipe's sink)."""
        self.ready: deque[ShardReader] = deque()
        self.announced: deque[ShardReader] = deque()
        self.mode: str | None = None
        self.data = Signal()
        self.announce = Signal()
        self.closing = False
        self._failure: BaseException | None = None
        self._wake = anyio.Event()
        self._wake_pending = False
        self._scope = anyio.CancelScope()
        self._tasks = 0
        self._idle = anyio.Event()

    # --- AssignmentListener -------------------------------------------------------------

    def revoke(self, shard_id: str) -> None:
        reader = self.readers.pop(shard_id, None)
        self.lost.add(shard_id)
        if reader is not None:
            self.revoked += 1
            log.info("lost %s: stopping its reader", shard_id, extra={"shard": shard_id})
            reader.revoke()
            self.announce.fire()
        for hook in self.on_revoke:
            hook(shard_id)
        self.wake()

    def reassign(self) -> None:
        self.retry_lost = True
        self.wake()

    # --- ReaderEvents ---------------------------------------------------------------------

    def reader_started(self, reader: ShardReader) -> None:
        if self.mode != "records":
            self.announced.append(reader)
            self.announce.fire()

    def reader_has_data(self, reader: ShardReader) -> None:
        if self.mode != "shards" and not reader.queued:
            reader.queued = True
            self.ready.append(reader)
            self.data.fire()

    def reader_ended(self, reader: ShardReader, children: Sequence[Shard]) -> None:
        for child in children:
            self.known.setdefault(child.shard_id, child)
        self.wake()

    def reader_done(self, reader: ShardReader) -> None:
        if self.readers.get(reader.shard_id) is reader:
            self.done.add(reader.shard_id)
            if reader.consumed:
                self.consumed.add(reader.shard_id)
        self.wake()

    def reader_lost(self, reader: ShardReader) -> None:
        if self.readers.get(reader.shard_id) is reader:
            self.revoke(reader.shard_id)

    def reader_failed(self, reader: ShardReader, exc: Exception) -> None:
        self.fail(exc)

    def failure(self) -> BaseException | None:
        return self._failure

    # --- state --------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        if mode == "shards":
            assert self.ctx is not None
            self.ctx.per_shard = True
            for reader in self.ready:
                reader.queued = False
            self.ready.clear()
        else:
            self.announced.clear()

    def wake(self) -> None:
        self._wake_pending = True
        self._wake.set()

    def fail(self, exc: BaseException) -> None:
        if self._failure is None and not self.closing:
            log.error("consumer of %s failed: %r", self.stream, exc)
            self._failure = exc
        self.stop()

    def stop(self) -> None:
        """Stop every reader and the sync loop; wake everything waiting (idempotent)."""
        self.closing = True
        self._scope.cancel()
        for reader in self.readers.values():
            reader.stop()
        self.data.fire()
        self.announce.fire()

    def spawn(self, fn: Callable[[], Awaitable[None]], name: str) -> None:
        """Start a background task, counted so that close can wait for them all."""
        assert self.task_group is not None
        if self._idle.is_set():
            self._idle = anyio.Event()
        self._tasks += 1
        self.task_group.start_soon(self._counted, fn, name=name)

    async def _counted(self, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        finally:
            self._tasks -= 1
            if self._tasks == 0:
                self._idle.set()

    async def stopped(self) -> None:
        """Wait until every reader and the sync loop have returned (after stop())."""
        if self._tasks:
            await self._idle.wait()

    async def flush_checkpoints(self) -> None:
        for reader in list(self.readers.values()):
            if reader.checkpoint_pending:
                try:
                    await reader.flush()
                except errors.ShardflowError as exc:
                    log.warning("checkpoint of %s not written at close: %s", reader.shard_id, exc,
                                extra={"shard": reader.shard_id})

    # --- delivery -----------------------------------------------------------------------

    async def next_batch(self) -> tuple[ShardReader, list[Row]] | None:
        """The next batch, shards taking turns; None once closing."""
        while True:
            if self._failure is not None:
                raise self._failure
            if self.closing:
                return None
            ready = self.ready
            while ready:
                reader = ready.popleft()
                batch = reader.take()
                if reader.has_batches:
                    ready.append(reader)
                else:
                    reader.queued = False
                if batch:
                    return reader, batch
            await self.data.wait()

    # --- shard sync ---------------------------------------------------------------------

    async def run(self) -> None:
        """Re-sync every resync_interval and when woken; never raises."""
        assert self.ctx is not None
        attempt = 0
        retry_soon = False
        with self._scope:
            while True:
                if not retry_soon and not self._wake_pending:
                    with anyio.move_on_after(self.resync_interval) as timer:
                        await self._wake.wait()
                    if timer.cancelled_caught:
                        self.retry_lost = True  # the periodic sync reconsiders lost shards
                self._wake_pending = False
                self._wake = anyio.Event()
                try:
                    await self.sync()
                except errors.ShardflowError as exc:
                    if not exc.retriable:
                        self.fail(exc)
                        return
                    log.warning("shard sync failed (%s); retrying", exc)
                    retry_soon = True
                    await anyio.sleep(backoff_delay(attempt, base=0.5))
                    attempt += 1
                    continue
                except Exception as exc:
                    self.fail(exc)
                    return
                retry_soon = False
                attempt = 0

    async def sync(self, shards: Sequence[Shard] | None = None, *, initial: bool = False) -> None:
        """List the shards (unless given), ask which are ours, start and stop readers."""
        assert self.ctx is not None
        if shards is None:
            shards = await list_shards(self.client, self.stream)
        for shard in shards:
            self.known[shard.shard_id] = shard
        if initial:
            self.initial = set(self.known)
        granted = set(await self.ctx.session.assign(list(self.known.values())))
        if self.closing:
            return
        for shard_id, reader in list(self.readers.items()):
            if shard_id not in granted and not reader.ended:
                self.revoke(shard_id)
        # A shard lost is started again only when the checkpointer says the assignment
        # changed (reassign) or at a periodic sync, never in a loop right after its loss.
        retry_lost, self.retry_lost = self.retry_lost, False
        for shard_id in sorted(granted):
            if shard_id in self.readers or shard_id in self.done:
                continue
            if shard_id in self.lost and not retry_lost:
                continue
            candidate = self.known.get(shard_id)
            if candidate is None or not await self._parents_done(candidate, self.ctx.session):
                continue
            if self.closing:
                return
            self._start(candidate)

    async def _parents_done(self, shard: Shard, session: CheckpointSession) -> bool:
        for parent in shard.parent_ids:
            if parent in self.done or parent not in self.known:
                continue  # delivered here, or trimmed away long ago
            if parent in self.readers:
                return False  # being read here: wait for its end
            try:
                checkpoint = await session.get(parent)
            except errors.LeaseLost:
                return False  # someone else's parent: its owner will finish it
            if checkpoint is None or not checkpoint.is_shard_end:
                return False  # not finished (here or by another worker)
            self.done.add(parent)
            self.consumed.add(parent)
        return True

    def _start_at(self, shard: Shard) -> str | datetime:
        """Where ``shard`` starts when it has no checkpoint: a position the checkpointer
        stores (a lease's sentinel) wins; else start_at applies to shards there at start
        whose lineage this application has not read; any other shard is read from its
        beginning."""
        assert self.ctx is not None
        session = self.ctx.session
        if isinstance(session, StartPositions):
            stored = session.start_position(shard.shard_id)
            if stored is not None:
                return stored
        if shard.shard_id in self.initial and not any(
            parent in self.consumed for parent in shard.parent_ids
        ):
            return self.ctx.config.start_at
        return "TRIM_HORIZON"

    def _start(self, shard: Shard) -> None:
        assert self.ctx is not None
        assert self.task_group is not None
        self.lost.discard(shard.shard_id)
        reader = ShardReader(shard, self.ctx, start_at=self._start_at(shard))
        self.readers[shard.shard_id] = reader
        self.taken += 1
        log.debug("starting reader for %s", shard.shard_id)
        token = _logs.push(shard=shard.shard_id)  # the reader's log records carry it
        try:
            self.spawn(reader.run, f"shardflow reader {shard.shard_id}")
        finally:
            _logs.pop(token)
