"""Checkpoints and the plain checkpointers (memory, SQLite)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import pytest

from shardflow import Checkpoint, Checkpointer, MemoryCheckpointer, SQLiteCheckpointer
from shardflow.consumer import SHARD_END, AssignmentListener, ConsumerScope
from shardflow.models import Shard


class Listener:
    def __init__(self) -> None:
        self.revoked: list[str] = []

    def revoke(self, shard_id: str) -> None:
        self.revoked.append(shard_id)

    def reassign(self) -> None:
        pass


def scope(app: str = "app", stream: str = "logs") -> ConsumerScope:
    return ConsumerScope(app_name=app, stream=stream, stream_name=stream, start_at="LATEST")


def shard(n: int) -> Shard:
    return Shard(f"shardId-{n:012d}", 0, 2**128 - 1)


def test_checkpoint_values() -> None:
    cp = Checkpoint("49590338271490256608559692538361571095921575989136588898", 3)
    assert cp.position == (49590338271490256608559692538361571095921575989136588898, 3)
    assert Checkpoint("12").position == (12, -1)
    assert Checkpoint("12", 0).position > Checkpoint("12").position
    assert Checkpoint("13").position > Checkpoint("12", 99).position
    assert SHARD_END.is_shard_end
    assert not cp.is_shard_end
    assert SHARD_END.position > Checkpoint("9" * 60, 10**6).position
    assert Checkpoint("SHARD_END") == SHARD_END


@pytest.mark.parametrize(
    ("seq", "sub"),
    [("", None), ("12a", None), ("-1", None), ("12", -1), ("12", True), ("SHARD_END", 0),
     ("LATEST", None)],
)
def test_checkpoint_rejects_bad_values(seq: str, sub: int | None) -> None:
    with pytest.raises(ValueError, match="Checkpoint"):
        Checkpoint(seq, sub)


def test_the_plain_checkpointers_follow_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryCheckpointer(), Checkpointer)
    assert isinstance(SQLiteCheckpointer(tmp_path / "x.db"), Checkpointer)
    assert isinstance(Listener(), AssignmentListener)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_store_and_load(kind: str, tmp_path: Path) -> None:
    checkpointer = (
        MemoryCheckpointer() if kind == "memory" else SQLiteCheckpointer(tmp_path / "cp.db")
    )
    async with checkpointer.bind(scope(), Listener()) as session:
        shards = [shard(0), shard(1)]
        assert set(await session.assign(shards)) == {s.shard_id for s in shards}
        assert await session.get("shardId-000000000000") is None
        await session.save("shardId-000000000000", Checkpoint("100"))
        await session.save("shardId-000000000000", Checkpoint("200", 4))
        await session.save("shardId-000000000001", SHARD_END)
        assert await session.get("shardId-000000000000") == Checkpoint("200", 4)
        assert await session.get("shardId-000000000001") == SHARD_END
    # Other applications and other streams never see these positions.
    async with checkpointer.bind(scope(app="other"), Listener()) as session:
        assert await session.get("shardId-000000000000") is None
    async with checkpointer.bind(scope(stream="other"), Listener()) as session:
        assert await session.get("shardId-000000000000") is None
    assert await checkpointer.checkpoints("app", "logs") == {
        "shardId-000000000000": Checkpoint("200", 4),
        "shardId-000000000001": SHARD_END,
    }


async def test_sqlite_survives_a_new_instance_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cp.db"
    path.parent.mkdir()
    old_umask = os.umask(0)  # even a permissive umask gives an owner-only file
    try:
        first = SQLiteCheckpointer(path)
        async with first.bind(scope(), Listener()) as session:
            await session.save("shardId-000000000007", Checkpoint("42", 1))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = SQLiteCheckpointer(str(path))
    async with second.bind(scope(), Listener()) as session:
        assert await session.get("shardId-000000000007") == Checkpoint("42", 1)


async def test_sqlite_concurrent_bindings_share_one_file(tmp_path: Path) -> None:
    checkpointer = SQLiteCheckpointer(tmp_path / "cp.db")

    async def work(app: str) -> None:
        async with checkpointer.bind(scope(app=app), Listener()) as session:
            for i in range(50):
                await session.save(f"shardId-{i % 5:012d}", Checkpoint(str(1000 + i)))

    async with anyio.create_task_group() as tg:
        for app in ("a", "b", "c"):
            tg.start_soon(work, app)
    for app in ("a", "b", "c"):
        stored = await checkpointer.checkpoints(app, "logs")
        assert stored == {f"shardId-{k:012d}": Checkpoint(str(1045 + k)) for k in range(5)}


def test_sqlite_bad_arguments() -> None:
    with pytest.raises(ValueError, match="path"):
        SQLiteCheckpointer("")
    with pytest.raises(ValueError, match="busy_timeout"):
        SQLiteCheckpointer("x.db", busy_timeout=-1)
    assert "x.db" in repr(SQLiteCheckpointer("x.db"))
