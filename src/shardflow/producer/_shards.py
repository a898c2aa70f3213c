"""The producer's view of the stream's shards: a :class:`ShardMap` kept fresh.

The map is loaded (ListShards) when the producer starts, if it aggregates or paces
shards, and refreshed when the sender reports it stale: a record landed on a shard other
than the predicted one (a reshard happened), or a key fell outside every open shard.
Refreshes run in their own task, never on the hot path, at most once per
``min_interval`` seconds; a failed refresh is retried with a doubling delay (up to
``max_interval``) while the old map stays in use.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import anyio
from anyio.abc import TaskStatus

from .. import errors
from .._core.aws import list_shards
from .._core.logs import get_logger
from ..shardmap import ShardMap

__all__ = ["ShardTracker"]

log = get_logger("shardflow.producer")

MIN_REFRESH_INTERVAL = 1.0
"""Seconds between two shard map refreshes, at least."""
MAX_REFRESH_INTERVAL = 30.0
"""Longest wait before retrying a failed refresh."""


class ShardTracker:
    """Holds the current :class:`ShardMap` of a stream and refreshes it on request.

    ``ranges`` maps every shard ListShards returned (open or closed) to its hash-key
    range, so the range of a shard a record landed on is known even after it closed.
    ``on_refresh`` is called with each new map, in the tracker's task.
    """

    def __init__(
        self,
        client: Any,
        stream: str,
        *,
        min_interval: float = MIN_REFRESH_INTERVAL,
        max_interval: float = MAX_REFRESH_INTERVAL,
    ) -> None:
        self._client = client
        self._stream = stream
        self._min_interval = min_interval
        self._max_interval = max_interval
        self.map: ShardMap | None = None
        self.ranges: dict[str, tuple[int, int]] = {}
        self.refreshes = 0
        """Maps loaded after the first one."""
        self.on_refresh: Callable[[ShardMap], None] | None = None
        self._event = anyio.Event()
        self._last = -math.inf
        self._failures = 0

    def __repr__(self) -> str:
        return f"<ShardTracker {self._stream!r} {self.map!r}>"

    @property
    def stale(self) -> bool:
        """True while a refresh is wanted and not yet done."""
        return self._event.is_set()

    async def load(self) -> ShardMap:
        """Load the map now (ListShards, every page) and make it current.

        Raises :class:`errors.StreamNotFound`, other :class:`errors.AWSError` subclasses,
        or :class:`errors.InvalidShardMap` (overlapping open shards). Cancellation
        propagates; the current map is then unchanged.
        """
        self._last = time.monotonic()
        shards = await list_shards(self._client, self._stream)
        shard_map = ShardMap(shards, require_full_coverage=False)
        self.ranges.update((s.shard_id, (s.starting_hash_key, s.ending_hash_key)) for s in shards)
        self.map = shard_map
        return shard_map

    def mark_stale(self) -> None:
        """Ask for a refresh (it happens in :meth:`run`, rate-limited). Never blocks."""
        if not self._event.is_set():
            self._event.set()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Refresh the map whenever it is marked stale, until cancelled. Never raises
        (failures are logged and retried)."""
        task_status.started()
        while True:
            await self._event.wait()
            interval = min(self._max_interval, self._min_interval * 2**self._failures)
            wait = self._last + interval - time.monotonic()
            if wait > 0:
                await anyio.sleep(wait)
            self._event = anyio.Event()  # marks from now on ask for one more refresh
            try:
                shard_map = await self.load()
            except errors.ShardflowError as exc:
                self._failures += 1
                log.warning("could not refresh the shard map of %s: %s", self._stream, exc)
                self.mark_stale()
                continue
            self._failures = 0
            self.refreshes += 1
            log.info("shard map of %s refreshed: %d open shards", self._stream, len(shard_map))
            if self.on_refresh is not None:
                self.on_refresh(shard_map)
