"""Checkpoints: where a consumer application has got to in each shard, and who may read it.

A :class:`Checkpointer` is what a :class:`~shardflow.Consumer` asks three questions:

1. *Which shards may this worker read now?* (:meth:`CheckpointSession.assign`). A plain
   store answers "all of them"; a lease coordinator (``DynamoDBLeases``) answers with the
   shards whose leases this worker holds, and may change its answer over time.
2. *Where did this application stop in shard X?* (:meth:`CheckpointSession.get`).
3. *Remember that everything up to here is done* (:meth:`CheckpointSession.save`).

The protocol, in order of use:

- ``Checkpointer.bind(scope, listener)`` returns an async context manager, entered once
  by ``Consumer.__aenter__`` and exited (after the consumer wrote its pending
  checkpoints) by ``Consumer.aclose``. It yields a :class:`CheckpointSession`. Background
  work (lease renewal, taking and stealing leases) lives inside that context, in the
  implementation's own task group; leaving the context is the graceful hand-over
  (a lease coordinator releases its leases there). The consumer enters and exits the
  context in its owner task with no cancel scope of its own around the exit (a task
  group may be held across the ``yield``), so the context must shield and bound its
  own cleanup (``anyio.CancelScope(shield=True)``). One checkpointer object may be bound
  by several consumers at once and outlives them, so positions survive a consumer.
- ``scope`` (:class:`ConsumerScope`) names the application and the stream. Stored
  positions are keyed by (``scope.app_name``, ``scope.stream_name``, shard id): two
  applications, or two streams, never share a position.
- ``listener`` (:class:`AssignmentListener`) lets the implementation push changes:
  ``listener.revoke(shard_id)`` when it learns that this worker lost a shard (the
  consumer stops that shard's reader at once, drops its buffered records, delivers
  nothing more from it and refuses its checkpoints with :class:`errors.LeaseLost`), and
  ``listener.reassign()`` when the set of shards it would grant has changed (the consumer
  calls ``assign`` again soon). A revoked shard is started again only after
  ``reassign()`` or at a periodic re-sync. Both are plain functions, called from the
  event loop. A :class:`errors.LeaseLost` raised by ``get`` or ``save`` for a shard
  also stops that shard's reader (and only it).
- ``session.assign(shards)`` receives every shard of the stream (open and closed, from
  ListShards and from GetRecords' ``ChildShards``) and returns the ids this worker may
  read now. It is called at start, periodically, when a shard ends and after
  ``reassign()``. The consumer starts a shard's reader only once each of its parents
  is done: either this consumer delivered the parent to its end, or the parent's stored
  checkpoint is SHARD_END. A lease coordinator should grant a child only when all its
  parents are at SHARD_END in its table; a consumer revokes any running, unfinished
  reader whose shard is missing from the answer.
- ``session.get(shard_id)`` returns the stored :class:`Checkpoint` or None. A checkpoint
  means "every record up to and including this position is done"; the consumer resumes
  right after it (``AFTER_SEQUENCE_NUMBER``, or ``AT_SEQUENCE_NUMBER`` skipping the
  sub-records already done when the position is inside a KPL aggregate). SHARD_END
  means the whole (closed) shard is done.
- ``session.save(shard_id, checkpoint)`` stores a position. The consumer never moves a
  shard's position backwards and never has two saves for one shard in flight. It raises
  :class:`errors.LeaseLost` when the worker no longer owns the shard, and may raise
  :class:`errors.AWSError` subclasses; it should retry transient failures itself.

Positions are stored as (sequence number, sub-sequence number) exactly as the KCL does:
``Checkpoint("4961...", 3)`` is the fourth user record of the aggregate with that
sequence number; ``Checkpoint("4961...")`` a whole Kinesis record.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

import anyio
import anyio.to_thread

from .._core.logs import get_logger
from .._core.validate import check_number, shown
from ..models import Shard, _position

__all__ = [
    "SHARD_END",
    "AssignmentListener",
    "Checkpoint",
    "CheckpointSession",
    "Checkpointer",
    "ConsumerScope",
    "MemoryCheckpointer",
    "SQLiteCheckpointer",
    "StartPositions",
]

log = get_logger("shardflow.consumer")

_SHARD_END = "SHARD_END"
END_POSITION: tuple[int, int] = (1 << 256, 0)
"""Sorts after every real position: the position of SHARD_END."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A stored position in one shard: everything up to and including it is done.

    ``sequence_number`` is a Kinesis sequence number (decimal string) or ``"SHARD_END"``;
    ``sub_sequence_number`` the index of a user record inside a KPL aggregate, or None
    for a whole Kinesis record (and always None for SHARD_END).
    """

    sequence_number: str
    sub_sequence_number: int | None = None

    SHARD_END_MARKER: ClassVar[str] = _SHARD_END

    def __post_init__(self) -> None:
        seq, sub = self.sequence_number, self.sub_sequence_number
        if not isinstance(seq, str) or not (seq.isdigit() or seq == _SHARD_END):
            raise ValueError(
                f"Checkpoint.sequence_number must be a decimal string or 'SHARD_END', "
                f"got {shown(seq)}"
            )
        if sub is not None and (not isinstance(sub, int) or isinstance(sub, bool) or sub < 0):
            raise ValueError(
                f"Checkpoint.sub_sequence_number must be None or an int >= 0, got {shown(sub)}"
            )
        if seq == _SHARD_END and sub is not None:
            raise ValueError("a SHARD_END Checkpoint has no sub_sequence_number")

    @property
    def is_shard_end(self) -> bool:
        """True when the whole shard is done (it is closed and every record processed)."""
        return self.sequence_number == _SHARD_END

    @property
    def position(self) -> tuple[int, int]:
        """Sortable position, comparable with :attr:`Record.position`."""
        if self.sequence_number == _SHARD_END:
            return END_POSITION
        return _position(self.sequence_number, self.sub_sequence_number)


SHARD_END = Checkpoint(_SHARD_END)
"""The checkpoint of a closed shard whose records are all done."""


@dataclass(frozen=True, slots=True)
class ConsumerScope:
    """What a consumer tells its checkpointer about itself when it binds.

    ``stream`` is the name or ARN the consumer was given; ``stream_name`` the bare name
    (the key stored positions use). ``start_at`` is the consumer's start position for
    shards that have no checkpoint: "TRIM_HORIZON", "LATEST" or an aware datetime.
    """

    app_name: str
    stream: str
    stream_name: str
    start_at: str | datetime


@runtime_checkable
class AssignmentListener(Protocol):
    """The consumer's side of a binding: how a checkpointer pushes changes to it."""

    def revoke(self, shard_id: str) -> None:
        """This worker lost ``shard_id``: stop reading it at once (idempotent)."""

    def reassign(self) -> None:
        """The shards this worker may read changed: call ``assign`` again soon."""


@runtime_checkable
class CheckpointSession(Protocol):
    """A checkpointer bound to one consumer (application and stream)."""

    async def assign(self, shards: Sequence[Shard]) -> Collection[str]:
        """The ids, among ``shards``, that this worker may read now."""
        ...

    async def get(self, shard_id: str) -> Checkpoint | None:
        """The stored position of ``shard_id``, or None when there is none."""
        ...

    async def save(self, shard_id: str, checkpoint: Checkpoint) -> None:
        """Store ``checkpoint`` for ``shard_id``; raises errors.LeaseLost if not owned."""
        ...


@runtime_checkable
class StartPositions(Protocol):
    """Optional for a :class:`CheckpointSession`: where a shard without a checkpoint starts.

    A lease table stores a start position (TRIM_HORIZON, LATEST, AT_TIMESTAMP) in leases
    that have no checkpoint yet; it wins over the consumer's ``start_at``, as in the KCL
    (IteratorBuilder starts from the lease's sentinel).
    """

    def start_position(self, shard_id: str) -> str | datetime | None:
        """"TRIM_HORIZON", "LATEST" or a datetime stored for ``shard_id``; None when the
        session stores nothing there (the consumer's own rule applies)."""
        ...


@runtime_checkable
class Checkpointer(Protocol):
    """Stores positions per (application, stream, shard) and decides who reads what."""

    def bind(
        self, scope: ConsumerScope, listener: AssignmentListener
    ) -> AbstractAsyncContextManager[CheckpointSession]:
        """A context holding this checkpointer's state for one consumer's lifetime."""
        ...


# --- plain stores: every shard is this worker's, positions kept by key -------------------

_Key = tuple[str, str, str]


class _StoreSession:
    """A session over a key-value store: grants every shard, never revokes."""

    __slots__ = ("_app", "_store", "_stream")

    def __init__(self, store: _Store, scope: ConsumerScope) -> None:
        self._store = store
        self._app = scope.app_name
        self._stream = scope.stream_name

    async def assign(self, shards: Sequence[Shard]) -> Collection[str]:
        return {shard.shard_id for shard in shards}

    async def get(self, shard_id: str) -> Checkpoint | None:
        return await self._store._load((self._app, self._stream, shard_id))

    async def save(self, shard_id: str, checkpoint: Checkpoint) -> None:
        await self._store._save((self._app, self._stream, shard_id), checkpoint)


class _Store:
    """Shared part of the plain checkpointers: binding, reading back."""

    async def _load(self, key: _Key) -> Checkpoint | None:
        raise NotImplementedError

    async def _save(self, key: _Key, checkpoint: Checkpoint) -> None:
        raise NotImplementedError

    async def _load_all(self, app_name: str, stream: str) -> dict[str, Checkpoint]:
        raise NotImplementedError

    async def _opened(self) -> None:
        """Called when a consumer binds (before its first read)."""

    async def _released(self) -> None:
        """Called when a consumer's binding ends."""

    def bind(
        self, scope: ConsumerScope, listener: AssignmentListener
    ) -> AbstractAsyncContextManager[CheckpointSession]:
        """Bind to one consumer; see the module docstring. Every shard is granted."""
        return self._binding(scope)

    @asynccontextmanager
    async def _binding(self, scope: ConsumerScope) -> AsyncIterator[CheckpointSession]:
        await self._opened()
        try:
            yield _StoreSession(self, scope)
        finally:
            with anyio.CancelScope(shield=True):
                await self._released()

    async def checkpoints(self, app_name: str, stream: str) -> dict[str, Checkpoint]:
        """Every stored position of ``app_name`` on ``stream`` (a name), by shard id."""
        await self._opened()
        try:
            return await self._load_all(app_name, stream)
        finally:
            with anyio.CancelScope(shield=True):
                await self._released()


class MemoryCheckpointer(_Store):
    """Positions in a dict: they outlive consumers, not the process.

    Share one instance between consumers (one after another, or at the same time for
    different applications or streams) to resume where the previous one stopped.
    """

    def __init__(self) -> None:
        self._data: dict[_Key, Checkpoint] = {}

    def __repr__(self) -> str:
        return f"MemoryCheckpointer(positions={len(self._data)})"

    async def _load(self, key: _Key) -> Checkpoint | None:
        return self._data.get(key)

    async def _save(self, key: _Key, checkpoint: Checkpoint) -> None:
        self._data[key] = checkpoint

    async def _load_all(self, app_name: str, stream: str) -> dict[str, Checkpoint]:
        return {
            shard: cp
            for (app, name, shard), cp in self._data.items()
            if app == app_name and name == stream
        }


_SCHEMA = """
CREATE TABLE IF NOT EXISTS shardflow_checkpoints (
    app_name TEXT NOT NULL,
    stream TEXT NOT NULL,
    shard_id TEXT NOT NULL,
    sequence_number TEXT NOT NULL,
    sub_sequence_number INTEGER,
    updated_at REAL NOT NULL,
    PRIMARY KEY (app_name, stream, shard_id)
)
"""


class SQLiteCheckpointer(_Store):
    """Positions in an SQLite file: they survive restarts.

    The file is created with mode 0600 when missing (its WAL files follow that mode).
    Every SQLite call runs in a worker thread (``anyio.to_thread``), one at a time per
    instance. The connection is opened when the first consumer binds and closed when
    the last binding ends. Several processes may share one file (WAL mode, busy timeout).
    A ``save`` is committed before it returns (``synchronous=NORMAL`` in WAL: it survives
    a process crash; a power loss can only move positions back, never forward).
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        if not isinstance(path, str | os.PathLike) or not os.fspath(path):
            raise ValueError(f"SQLiteCheckpointer path must be a non-empty path, got {shown(path)}")
        timeout = check_number("busy_timeout", busy_timeout, positive=False, unit="seconds")
        self._path = Path(os.fspath(path))
        self._busy_timeout = timeout
        self._conn: sqlite3.Connection | None = None
        self._users = 0
        # Created on first use, inside the event loop (anyio >= 4.4 needs one).
        self._limiter_obj: anyio.CapacityLimiter | None = None
        self._lock: anyio.Lock | None = None

    def __repr__(self) -> str:
        return f"SQLiteCheckpointer({str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def _limiter(self) -> anyio.CapacityLimiter:
        # One SQLite call at a time per instance: the connection is shared by threads.
        if self._limiter_obj is None:
            self._limiter_obj = anyio.CapacityLimiter(1)
        return self._limiter_obj

    def _lock_for_loop(self) -> anyio.Lock:
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock

    async def _opened(self) -> None:
        async with self._lock_for_loop():
            if self._conn is None:
                self._conn = await anyio.to_thread.run_sync(
                    self._connect, limiter=self._limiter
                )
            self._users += 1

    async def _released(self) -> None:
        async with self._lock_for_loop():
            self._users -= 1
            if self._users == 0 and self._conn is not None:
                conn, self._conn = self._conn, None
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    def _connect(self) -> sqlite3.Connection:
        if not self._path.exists():
            fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o600)
            os.close(fd)
        conn = sqlite3.connect(
            self._path, timeout=self._busy_timeout, check_same_thread=False, isolation_level=None
        )
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("SQLiteCheckpointer used outside a binding")
        return self._conn

    async def _load(self, key: _Key) -> Checkpoint | None:
        conn = self._connection()

        def load() -> Checkpoint | None:
            row = conn.execute(
                "SELECT sequence_number, sub_sequence_number FROM shardflow_checkpoints "
                "WHERE app_name = ? AND stream = ? AND shard_id = ?",
                key,
            ).fetchone()
            return None if row is None else Checkpoint(row[0], row[1])

        return await anyio.to_thread.run_sync(load, limiter=self._limiter)

    async def _save(self, key: _Key, checkpoint: Checkpoint) -> None:
        conn = self._connection()
        row = (*key, checkpoint.sequence_number, checkpoint.sub_sequence_number, time.time())

        def save() -> None:
            conn.execute(
                "INSERT INTO shardflow_checkpoints (app_name, stream, shard_id, "
                "sequence_number, sub_sequence_number, updated_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (app_name, stream, shard_id) DO UPDATE SET "
                "sequence_number = excluded.sequence_number, "
                "sub_sequence_number = excluded.sub_sequence_number, "
                "updated_at = excluded.updated_at",
                row,
            )

        await anyio.to_thread.run_sync(save, limiter=self._limiter)

    async def _load_all(self, app_name: str, stream: str) -> dict[str, Checkpoint]:
        conn = self._connection()

        def load_all() -> dict[str, Checkpoint]:
            rows = conn.execute(
                "SELECT shard_id, sequence_number, sub_sequence_number "
                "FROM shardflow_checkpoints WHERE app_name = ? AND stream = ?",
                (app_name, stream),
            ).fetchall()
            return {shard: Checkpoint(seq, sub) for shard, seq, sub in rows}

        return await anyio.to_thread.run_sync(load_all, limiter=self._limiter)
