"""The contract between a consumer and a sink: checkpoint only what the sink made durable.

A sink takes batches of :class:`~shardflow.models.Record` and tells the caller, per shard,
the LAST record that is durably stored (together with everything before it in that shard).
The caller checkpoints exactly those records and nothing else, so a crash never skips a
record that the sink had only buffered: it is read again from the checkpoint.

Every reporting method returns a :data:`Durable` map ``{shard_id: record}`` holding the
positions that became durable since the previous report (each is reported once; a shard
missing from the map made no progress). Calls are the only way positions are reported, so
positions made durable in the background (an interval timer) are returned by the next
``write``, ``flush`` or ``aclose``; ``write([])`` is a cheap way to collect them, and
``Consumer.pipe`` calls it whenever no records came for a second, so an idle stream's
positions (and a closed shard's SHARD_END, which its children's leases wait for) are
checkpointed without new traffic.

``pipe`` is the loop ``Consumer.pipe(sink)`` runs::

    async with sink:
        async for batch in batches:       # raising what sink.failed() returns, if it does
            for record in (await sink.write(batch)).values():
                await checkpoint(record)
        for record in (await sink.aclose()).values():
            await checkpoint(record)
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Protocol, TypeAlias, runtime_checkable

import anyio

from .._core.logs import get_logger
from ..models import Record

__all__ = ["Durable", "Sink", "pipe"]

log = get_logger("shardflow.sinks")

Durable: TypeAlias = dict[str, Record]
"""``{shard_id: last durable record}``: the records (and all before them in their shard)
that are durably stored and may be checkpointed."""


@runtime_checkable
class Sink(Protocol):
    """What a consumer can pipe into.

    Rules every implementation keeps (S3Sink does):

    - ``write(records)`` accepts a batch (records of one shard in stream order; several
      shards may be mixed). It may buffer them, and returns the positions that became
      durable since the last report. A record at or before a position the sink already
      accepted for its shard is a duplicate and is ignored, so resending a batch after a
      failed or cancelled ``write`` is safe.
    - A reported record is durable, and so is every earlier record of its shard that the
      sink was given. Reports per shard only move forward.
    - ``flush()`` makes everything buffered durable (as far as the sink can) and reports.
    - ``aclose()`` refuses new records, flushes what it holds, stops background work and
      returns the final report; it is idempotent (a second call returns ``{}``). Records
      it could not store are not reported, hence never checkpointed: they are read again.
    - Optionally ``discard(shard_id)``: forget, without writing, what the sink holds for a
      shard this worker lost (its new owner writes it again). ``Consumer.pipe`` calls it
      when a lease moves away, so a former owner does not keep writing that shard.
    - Optionally ``failed()``: an awaitable that returns the exception once work the sink
      does in the background (a timer) failed in a way retrying cannot fix. ``pipe``
      raises it at once, so a dead sink stops the pipeline even while no records come.
    - Used as ``async with sink:``; ``__aexit__`` calls ``aclose()``.
    """

    async def __aenter__(self) -> Sink: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def write(self, records: Sequence[Record]) -> Durable: ...

    async def flush(self) -> Durable: ...

    async def aclose(self) -> Durable: ...


async def pipe(
    batches: AsyncIterable[Sequence[Record]],
    sink: Sink,
    checkpoint: Callable[[Record], Awaitable[object]],
) -> None:
    """Feed ``batches`` into ``sink`` and ``checkpoint`` every record the sink made durable.

    Enters and closes ``sink``. Returns when ``batches`` is exhausted, after the sink was
    closed (flushing what it held) and its final positions were checkpointed. Checkpoints
    per shard only move forward.

    On cancellation or an error (from the batches, the sink or ``checkpoint``) the sink is
    still closed, shielded from cancellation within the sink's own close deadline, and what
    it reports is checkpointed; a failure during that clean-up is logged, and the original
    exception propagates, as itself (never wrapped in an ExceptionGroup). When the sink
    has ``failed()`` and it returns, the feeding stops and that exception is raised, with
    or without traffic. Whatever was not checkpointed is read again on restart.
    """
    done: dict[str, tuple[int, int]] = {}

    async def commit(durable: Mapping[str, Record]) -> None:
        for shard_id, record in durable.items():
            if shard_id in done and record.position <= done[shard_id]:
                continue
            await checkpoint(record)
            done[shard_id] = record.position

    async def feed() -> None:
        async for batch in batches:
            await commit(await sink.write(batch))

    failed: Callable[[], Awaitable[BaseException]] | None = getattr(sink, "failed", None)
    async with sink:
        try:
            if failed is None:
                await feed()
            else:
                await first_failure(feed, failed)
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await commit(await sink.aclose())
                except Exception:
                    log.warning("closing the sink after an error failed", exc_info=True)
            raise
        await commit(await sink.aclose())


async def first_failure(
    main: Callable[[], Awaitable[object]], watch: Callable[[], Awaitable[BaseException]]
) -> None:
    """Run ``main`` until it returns; if ``watch`` returns an exception first, cancel
    ``main`` and raise that exception. An exception of ``main`` propagates as itself, not
    in an ExceptionGroup; so does a cancellation from outside.
    """
    failures: list[BaseException] = []

    async def watching(scope: anyio.CancelScope) -> None:
        try:
            failures.append(await watch())
        except Exception as exc:
            failures.append(exc)
        scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watching, tg.cancel_scope)
        try:
            await main()
        except Exception as exc:
            failures.append(exc)
        tg.cancel_scope.cancel()
    if failures:
        raise failures[0]
