"""Starting a producer without reaching the endpoint, as the KPL does.

``async with Producer(...)`` opens its clients and returns at once: a service starts
while Kinesis is down. :class:`StreamStart` then runs in the sender's task group: it reads
the stream's description (DescribeStreamSummary: does the stream exist, and its
``MaxRecordSizeInKiB``) and, when the producer aggregates or paces shards, its shard map
(ListShards), retrying with a capped, jittered backoff while the endpoint cannot be
reached. Until it succeeds the sender sends nothing: accepted records wait in the queue
and fail at their deadline (``record_ttl``), naming the last error. A non-retriable answer
(the stream does not exist, access denied) fails fast: ``on_fatal`` fails every pending
record and the producer refuses new ones with that error; it keeps checking, less often
(:data:`RECHECK_INTERVAL`), so that a stream created later is written to.

Record size limits and the start (see :func:`stream_limits`): until the description is
read, records are checked against the given :class:`KinesisLimits` (by default AWS's
1 MiB, which every stream accepts, since ``MaxRecordSizeInKiB`` is at least 1024), so a
record accepted before the stream's own limit is known is never refused for its size
later. A larger record waits in ``put()`` for the description (see ``Producer.put``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import anyio

from .. import errors
from .._core import aws as _aws
from .._core.backoff import full_jitter
from .._core.logs import get_logger
from ..limits import KiB, KinesisLimits
from ..shardmap import ShardMap
from ._intake import record_cost
from ._shards import ShardTracker

__all__ = [
    "NOT_DESCRIBED",
    "RECHECK_INTERVAL",
    "START_BACKOFF_BASE",
    "START_BACKOFF_CAP",
    "StreamStart",
    "stream_limits",
]

log = get_logger("shardflow.producer")

START_BACKOFF_BASE = 0.1
"""First wait (seconds) before describing the stream again after a retriable failure."""
START_BACKOFF_CAP = 2.0
"""Longest wait between two tries (seconds, before jitter): the producer notices soon
that the endpoint is back."""
RECHECK_INTERVAL = 5.0
"""Seconds between two checks of a stream found missing (or not allowed)."""
NOT_DESCRIBED = (
    "the stream's own limit (MaxRecordSizeInKiB) is not known yet: the endpoint has not "
    "answered (put() waits for it up to record_ttl; pass limits= to set it yourself)"
)


def stream_limits(
    limits: KinesisLimits, summary: Mapping[str, Any], *, max_queue_bytes: int, aggregate: bool
) -> KinesisLimits:
    """``limits`` with ``max_record_bytes`` set to the stream's ``MaxRecordSizeInKiB``
    (when the summary has it), but never more than one record the queue can hold
    (``max_queue_bytes``). The request limits (``max_batch_records``,
    ``max_batch_bytes``) stay: a record larger than a request goes in a request of its
    own."""
    size_kib = summary.get("MaxRecordSizeInKiB")
    if not isinstance(size_kib, int) or isinstance(size_kib, bool) or size_kib <= 0:
        return limits
    size = min(size_kib * KiB, 10 * 1024 * KiB)
    if record_cost(size, aggregate) > max_queue_bytes:
        # the largest record the queue can hold (record_cost grows with size)
        low, high = 1, size
        while low < high:
            mid = (low + high + 1) // 2
            if record_cost(mid, aggregate) <= max_queue_bytes:
                low = mid
            else:
                high = mid - 1
        log.info(
            "the stream allows records of %d KiB; max_queue_bytes (%d) holds at most %d bytes",
            size_kib,
            max_queue_bytes,
            low,
        )
        size = low
    return dataclasses.replace(limits, max_record_bytes=size)


class StreamStart:
    """Describe the stream and load its shard map (``tracker``), retrying until both
    succeed (awaiting it returns then): each retriable error goes to ``on_retry``, each
    non-retriable one to ``on_fatal`` (then it checks again after
    :data:`RECHECK_INTERVAL`). Cancellation propagates."""

    def __init__(
        self,
        client: Any,
        stream: str,
        stream_params: dict[str, str],
        tracker: ShardTracker | None,
        *,
        on_summary: Callable[[Mapping[str, Any]], None],
        on_map: Callable[[ShardMap], None],
        on_retry: Callable[[errors.AWSError], None],
        on_fatal: Callable[[errors.ShardflowError], None],
    ) -> None:
        self._client = client
        self._stream = stream
        self._params = stream_params
        self._tracker = tracker
        self._on_summary = on_summary
        self._on_map = on_map
        self._on_retry = on_retry
        self._on_fatal = on_fatal

    async def __call__(self) -> None:
        failures = 0
        described = False
        while True:
            try:
                if not described:
                    answer = await _aws.call(
                        self._client, "describe_stream_summary", **self._params
                    )
                    self._on_summary(answer.get("StreamDescriptionSummary") or {})
                    described = True
                if self._tracker is not None:
                    self._on_map(await self._tracker.load())
            except errors.ShardflowError as exc:
                if not exc.retriable or not isinstance(exc, errors.AWSError):
                    if failures >= 0:
                        log.error("stream %s: the producer cannot send: %s", self._stream, exc)
                        self._on_fatal(exc)
                    failures = -1  # (logged once until it changes)
                    half = RECHECK_INTERVAL / 2
                    await anyio.sleep(half + full_jitter(0, half, half))
                    continue
                if failures < 0:
                    failures = 0
                self._on_retry(exc)
                (log.warning if failures == 0 else log.debug)(
                    "stream %s: the endpoint cannot be reached yet (%s); records wait (up to "
                    "record_ttl) while the producer keeps trying",
                    self._stream,
                    exc,
                )
                failures += 1
                await anyio.sleep(
                    full_jitter(failures - 1, START_BACKOFF_BASE, START_BACKOFF_CAP)
                )
                continue
            if failures:
                log.warning("stream %s: the producer can send now", self._stream)
            return
