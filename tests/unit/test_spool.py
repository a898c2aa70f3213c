"""The two stores behind BufferedOutput: exact counters, eviction, settling, reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardflow import errors
from shardflow.collector.spool import MemoryStore, SQLiteSpool


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> MemoryStore | SQLiteSpool:
    return MemoryStore() if request.param == "memory" else SQLiteSpool(tmp_path / "s.db")


def items(*sizes: int) -> list[tuple[float, bytes]]:
    return [(float(i), b"x" * size) for i, size in enumerate(sizes)]


async def test_append_head_settle_keep_exact_counters(store: MemoryStore | SQLiteSpool) -> None:
    await store.open()
    try:
        result = await store.append(items(10, 20, 30))
        assert list(result.ids) == sorted(result.ids)
        assert (store.records, store.nbytes) == (3, 60)
        head = await store.head(2)
        assert [e.size for e in head] == [10, 20]
        removed = await store.settle(remove=head[:1], failed=head[1:])
        assert removed == (1, 10)
        # Settling the same entry again removes nothing and counts nothing.
        assert await store.settle(remove=head[:1]) == (0, 0)
        assert (store.records, store.nbytes) == (2, 50)
        assert [e.attempts for e in await store.head(10)] == [1, 0]
        assert await store.oldest_id() == head[1].id
        assert store.last_id == result.ids[-1]
    finally:
        await store.close()


async def test_eviction_by_records_and_bytes_takes_the_oldest(
    store: MemoryStore | SQLiteSpool,
) -> None:
    await store.open()
    try:
        await store.append(items(10, 10, 10, 10))
        result = await store.append(items(10, 10), max_records=4)
        assert [e.created for e in result.evicted] == [0.0, 1.0]
        assert store.records == 4
        result = await store.append(items(25), max_bytes=50)
        assert [e.created for e in result.evicted] == [2.0, 3.0]  # 40 + 25 - 20 <= 50
        assert (store.records, store.nbytes) == (3, 45)
    finally:
        await store.close()


async def test_a_reopened_spool_has_its_entries_counters_and_ids(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = SQLiteSpool(path, fsync=False)
    await spool.open()
    first = await spool.append(items(5, 6, 7))
    await spool.settle(remove=(await spool.head(3))[2:])
    await spool.close()
    await spool.close()  # idempotent

    again = SQLiteSpool(path)
    await again.open()
    try:
        assert (again.records, again.nbytes) == (2, 11)
        assert again.last_id == first.ids[-1]
        later = await again.append(items(1))
        assert later.ids[0] > first.ids[-1]  # ids are never reused
    finally:
        await again.close()


async def test_a_closed_spool_refuses_work(tmp_path: Path) -> None:
    spool = SQLiteSpool(tmp_path / "s.db")
    with pytest.raises(errors.SpoolError, match="not open"):
        await spool.head(1)


async def test_a_spool_in_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    spool = SQLiteSpool(tmp_path / "missing" / "s.db")
    with pytest.raises(errors.SpoolError, match="cannot open spool"):
        await spool.open()
