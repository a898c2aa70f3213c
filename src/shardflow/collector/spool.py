"""Where a BufferedOutput keeps events until its output confirms them: memory or SQLite.

Both stores hold serialised events (orjson bytes) in arrival order under increasing ids,
and offer the same operations: append (with optional eviction of the oldest to stay
within limits), read the oldest, and settle a sent batch (delete what was delivered or
dropped, count a failed attempt for the rest). :class:`BufferedOutput` owns the policies
(overflow, retries, purge); the stores own the mechanics and exact counters.

:class:`SQLiteSpool` is durable: every append is one committed transaction in a WAL-mode
SQLite file created with mode 0600, and it survives a crash of the process (and, with
``fsync=True``, of the machine). It is opened with an exclusive lock so that two processes
never drain the same spool. Every SQLite call runs in a worker thread, one at a time.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.to_thread

from .. import errors

__all__ = ["AppendResult", "Entry", "GroupCommit", "MemoryStore", "SQLiteSpool"]

_T = TypeVar("_T")

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One buffered event: its id (arrival order), creation time, failed tries, JSON bytes."""

    id: int
    created: float
    attempts: int
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Ids given to the appended events, and the entries evicted to make room."""

    ids: tuple[int, ...]
    evicted: tuple[Entry, ...] = field(default=())


def _over(records: int, size: int, max_records: int | None, max_bytes: int | None) -> bool:
    return (max_records is not None and records > max_records) or (
        max_bytes is not None and size > max_bytes
    )


class MemoryStore:
    """Events in a dict (insertion ordered); lost when the process ends."""

    durable = False

    def __init__(self) -> None:
        self._entries: dict[int, Entry] = {}
        self._records = 0
        self._bytes = 0
        self._last_id = 0

    @property
    def records(self) -> int:
        return self._records

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def last_id(self) -> int:
        return self._last_id

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def append_now(
        self,
        items: Sequence[tuple[float, bytes]],
        *,
        max_records: int | None = None,
        max_bytes: int | None = None,
    ) -> AppendResult:
        """Synchronous :meth:`append` (nothing here blocks)."""
        ids = []
        for created, data in items:
            self._last_id += 1
            self._entries[self._last_id] = Entry(self._last_id, created, 0, data)
            self._records += 1
            self._bytes += len(data)
            ids.append(self._last_id)
        evicted = []
        while self._entries and _over(self._records, self._bytes, max_records, max_bytes):
            entry = self._entries.pop(next(iter(self._entries)))
            self._records -= 1
            self._bytes -= entry.size
            evicted.append(entry)
        return AppendResult(tuple(ids), tuple(evicted))

    async def append(
        self,
        items: Sequence[tuple[float, bytes]],
        *,
        max_records: int | None = None,
        max_bytes: int | None = None,
    ) -> AppendResult:
        return self.append_now(items, max_records=max_records, max_bytes=max_bytes)

    def clear(self) -> list[Entry]:
        """Remove and return every entry, oldest first."""
        entries = list(self._entries.values())
        self._entries.clear()
        self._records = self._bytes = 0
        return entries

    async def head(self, limit: int) -> list[Entry]:
        out: list[Entry] = []
        for entry in self._entries.values():
            if len(out) >= limit:
                break
            out.append(entry)
        return out

    async def oldest_id(self) -> int | None:
        return next(iter(self._entries), None)

    async def settle(
        self, *, remove: Iterable[Entry] = (), failed: Iterable[Entry] = ()
    ) -> tuple[int, int]:
        removed = removed_bytes = 0
        for entry in remove:
            gone = self._entries.pop(entry.id, None)
            if gone is not None:
                removed += 1
                removed_bytes += gone.size
        self._records -= removed
        self._bytes -= removed_bytes
        for entry in failed:
            current = self._entries.get(entry.id)
            if current is not None:
                self._entries[entry.id] = Entry(
                    current.id, current.created, current.attempts + 1, current.data
                )
        return removed, removed_bytes


class SQLiteSpool:
    """A durable store in one SQLite file (WAL journal, exclusive lock, mode 0600).

    ``fsync=True`` (``PRAGMA synchronous=FULL``) makes each commit survive a power loss;
    ``False`` (``NORMAL``) survives a crash of the process only, for fewer fsyncs.
    Errors from SQLite or the file system are raised as :class:`errors.SpoolError`.
    """

    durable = True

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self._conn: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)
        self._records = 0
        self._bytes = 0
        self._last_id = 0

    def __repr__(self) -> str:
        return f"SQLiteSpool({str(self.path)!r})"

    @property
    def records(self) -> int:
        return self._records

    @property
    def nbytes(self) -> int:
        return self._bytes

    @property
    def last_id(self) -> int:
        return self._last_id

    async def _run(self, what: str, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise errors.SpoolError(f"spool {self.path} is not open")

        def work() -> _T:
            try:
                return fn(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.rollback()
                raise

        try:
            return await anyio.to_thread.run_sync(work, limiter=self._limiter)
        except (sqlite3.Error, OSError) as exc:
            raise errors.SpoolError(f"spool {self.path}: {what} failed: {exc}") from exc

    # --- lifecycle ----------------------------------------------------------------------

    def _open_sync(self) -> sqlite3.Connection:
        # Create the file ourselves so that its mode is 0600 from the start; SQLite gives
        # its -wal file the mode of the database file.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        conn = sqlite3.connect(
            self.path, timeout=1.0, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"could not switch to WAL (got {mode})")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            # The first write takes the exclusive lock and keeps it until close.
            conn.execute("BEGIN IMMEDIATE")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise sqlite3.DatabaseError(
                    f"spool schema version {version} is newer than this shardflow "
                    f"understands ({SCHEMA_VERSION})"
                )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS events ("
                " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " created REAL NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0,"
                " data BLOB NOT NULL)"
            )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute("COMMIT")
            records, size = conn.execute(
                "SELECT count(*), coalesce(sum(length(data)), 0) FROM events"
            ).fetchone()
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
            self._records, self._bytes = int(records), int(size)
            self._last_id = int(row[0]) if row else 0
        except BaseException:
            conn.close()
            raise
        return conn

    async def open(self) -> None:
        """Open (creating if needed) the spool file; it stays locked until :meth:`close`.

        Raises :class:`errors.SpoolError` if the file cannot be opened, is not a spool, or
        is locked by another process.
        """
        if self._conn is not None:
            return
        try:
            self._conn = await anyio.to_thread.run_sync(self._open_sync, limiter=self._limiter)
        except sqlite3.OperationalError as exc:
            hint = " (is another process using this spool?)" if "locked" in str(exc) else ""
            raise errors.SpoolError(f"cannot open spool {self.path}: {exc}{hint}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise errors.SpoolError(f"cannot open spool {self.path}: {exc}") from exc

    async def close(self) -> None:
        """Close the file (idempotent). Not interrupted by cancellation."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    # --- operations ---------------------------------------------------------------------

    async def append(
        self,
        items: Sequence[tuple[float, bytes]],
        *,
        max_records: int | None = None,
        max_bytes: int | None = None,
    ) -> AppendResult:
        """Insert ``(created, data)`` items in one transaction (a group commit).

        With limits, the oldest entries are deleted in the same transaction until the
        spool is within them; they are returned as ``evicted``.
        """
        def work(conn: sqlite3.Connection) -> tuple[list[int], list[Entry]]:
            conn.execute("BEGIN IMMEDIATE")
            ids = []
            for created, data in items:
                cur = conn.execute(
                    "INSERT INTO events (created, data) VALUES (?, ?)", (created, data)
                )
                ids.append(int(cur.lastrowid or 0))
            n = self._records + len(items)
            b = self._bytes + sum(len(d) for _, d in items)
            evicted: list[Entry] = []
            after = 0
            while _over(n, b, max_records, max_bytes):
                rows = conn.execute(
                    "SELECT id, created, attempts, data FROM events WHERE id > ?"
                    " ORDER BY id LIMIT 256",
                    (after,),
                ).fetchall()
                if not rows:
                    break
                for row in rows:
                    if not _over(n, b, max_records, max_bytes):
                        break
                    entry = Entry(int(row[0]), float(row[1]), int(row[2]), bytes(row[3]))
                    evicted.append(entry)
                    n -= 1
                    b -= entry.size
                after = int(rows[-1][0])
            if evicted:
                conn.executemany("DELETE FROM events WHERE id = ?", [(e.id,) for e in evicted])
            conn.execute("COMMIT")
            # Counters change only here, in the (serialised) spool thread, after the commit.
            self._records, self._bytes = n, b
            if ids:
                self._last_id = max(self._last_id, ids[-1])
            return ids, evicted

        ids, evicted = await self._run("append", work)
        return AppendResult(tuple(ids), tuple(evicted))

    async def head(self, limit: int) -> list[Entry]:
        """The ``limit`` oldest entries."""

        def work(conn: sqlite3.Connection) -> list[Entry]:
            rows = conn.execute(
                "SELECT id, created, attempts, data FROM events ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            return [Entry(int(r[0]), float(r[1]), int(r[2]), bytes(r[3])) for r in rows]

        return await self._run("read", work)

    async def oldest_id(self) -> int | None:
        def work(conn: sqlite3.Connection) -> int | None:
            row = conn.execute("SELECT min(id) FROM events").fetchone()
            return None if row[0] is None else int(row[0])

        return await self._run("read", work)

    async def settle(
        self, *, remove: Iterable[Entry] = (), failed: Iterable[Entry] = ()
    ) -> tuple[int, int]:
        """Delete ``remove`` and count a failed try for ``failed``, in one transaction.

        Returns how many entries (and bytes) were really deleted: an entry already evicted
        is not counted twice.
        """
        remove = list(remove)
        failed = list(failed)

        def work(conn: sqlite3.Connection) -> tuple[int, int]:
            conn.execute("BEGIN IMMEDIATE")
            removed = removed_bytes = 0
            for entry in remove:
                if conn.execute("DELETE FROM events WHERE id = ?", (entry.id,)).rowcount:
                    removed += 1
                    removed_bytes += entry.size
            conn.executemany(
                "UPDATE events SET attempts = attempts + 1 WHERE id = ?",
                [(e.id,) for e in failed],
            )
            conn.execute("COMMIT")
            self._records -= removed
            self._bytes -= removed_bytes
            return removed, removed_bytes

        return await self._run("settle", work)


class _Group:
    """Items waiting for one transaction."""

    __slots__ = ("done", "error", "items", "size")

    def __init__(self) -> None:
        self.items: list[tuple[float, bytes]] = []
        self.size = 0
        self.done = anyio.Event()
        self.error: BaseException | None = None


class GroupCommit:
    """Makes concurrent appends to a :class:`SQLiteSpool` share transactions.

    :meth:`append` queues an item and waits until the transaction holding it commits;
    :meth:`run` (a background task) commits whatever queued while the previous
    transaction was in progress, all at once. One fsync then serves many posts. The
    ``max_records``/``max_bytes`` limits, if given, evict the oldest entries in the same
    transaction; the evicted entries go to ``on_evicted``.
    """

    def __init__(
        self,
        spool: SQLiteSpool,
        *,
        max_records: int | None = None,
        max_bytes: int | None = None,
        on_evicted: Callable[[Sequence[Entry]], object] = lambda entries: None,
    ) -> None:
        self._spool = spool
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._on_evicted = on_evicted
        self._group: _Group | None = None
        self._committing: _Group | None = None
        self._wake = anyio.Event()
        self.pending_records = 0
        """Items queued or being committed."""
        self.pending_bytes = 0

    async def append(self, created: float, data: bytes) -> None:
        """Return once ``data`` is committed. Raises :class:`errors.SpoolError`.

        If cancelled while waiting, the item may or may not be committed.
        """
        group = self._group
        if group is None:
            group = self._group = _Group()
        group.items.append((created, data))
        group.size += len(data)
        self.pending_records += 1
        self.pending_bytes += len(data)
        self._wake.set()
        await group.done.wait()
        if group.error is not None:
            raise errors.SpoolError(str(group.error)) from group.error

    async def run(self) -> None:
        """Commit queued items, group after group, until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            group, self._group = self._group, None
            if group is None:
                continue
            self._committing = group
            try:
                result = await self._spool.append(
                    group.items, max_records=self._max_records, max_bytes=self._max_bytes
                )
            except Exception as exc:
                group.error = exc
            else:
                if result.evicted:
                    self._on_evicted(result.evicted)
            finally:
                self.pending_records -= len(group.items)
                self.pending_bytes -= group.size
                self._committing = None
                group.done.set()

    async def idle(self) -> None:
        """Wait until everything queued so far has been committed (or failed)."""
        while True:
            group = self._committing or self._group
            if group is None:
                return
            await group.done.wait()
