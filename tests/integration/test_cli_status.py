"""`shardflow status`: shards, lease owners or checkpoints, and lag, against moto (Kinesis
and DynamoDB), run as a user would (`python -m shardflow status ...`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

import anyio

from shardflow import Consumer, DynamoDBLeases, SQLiteCheckpointer

from support import create_stream, unique_name
from support_consumer import POLL, collect, numbered, put_records


def shardflow(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardflow", *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def status_json(*args: str) -> dict[str, Any]:
    proc = shardflow(*args, "--json")
    assert proc.returncode == 0, proc.stderr
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


async def test_leases_owner_checkpoint_and_lag(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=2)
    table = unique_name("leases")
    put_records(moto_url, stream, numbered(40))
    leases = DynamoDBLeases(table, worker_id="worker-1", endpoint_url=moto_url)
    async with Consumer(
        stream, endpoint_url=moto_url, app_name="billing", checkpointer=leases,
        poll_interval=POLL,
    ) as consumer:
        records = await collect(consumer, 40)
        last = {r.shard_id: r for r in records}
        first_shard = sorted(last)[0]
        # one shard checkpointed at its end, the other halfway
        await consumer.checkpoint(last[first_shard])
        halfway = [r for r in records if r.shard_id != first_shard]
        await consumer.checkpoint(halfway[len(halfway) // 2 - 1])
        args = ("--endpoint-url", moto_url, "status", stream, "--table", table)
        doc = await anyio.to_thread.run_sync(lambda: status_json(*args))
        text = await anyio.to_thread.run_sync(lambda: shardflow(*args))
    shards = {s["shard_id"]: s for s in doc["shards"]}
    assert set(shards) == set(last)
    done = shards[first_shard]
    assert done["owner"] == "worker-1"
    assert done["checkpoint"] == last[first_shard].sequence_number
    assert done["millis_behind_latest"] == 0  # caught up
    assert done["next_record_arrival"] is None
    behind = shards[next(s for s in shards if s != first_shard)]
    assert behind["checkpoint"] == halfway[len(halfway) // 2 - 1].sequence_number
    assert behind["next_record_arrival"] is not None  # records left after the checkpoint
    assert behind["state"] == "open"
    assert behind["parents"] == []
    assert {s["starting_hash_key"] for s in doc["shards"]} >= {"0"}
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"stream {stream}: 2 shards (2 open), lease table {table}")
    assert lines[1].split() == ["SHARD", "STATE", "PARENTS", "HASH", "RANGE", "OWNER",
                                "CHECKPOINT", "LAG"]
    row = next(line for line in lines if line.startswith(first_shard)).split()
    assert row[1:3] == ["open", "-"]
    assert row[4:] == ["worker-1", last[first_shard].sequence_number, "0s"]


async def test_sqlite_checkpoints_and_shards_without_a_position(
    moto_url: str, tmp_path: Any
) -> None:
    stream = create_stream(moto_url, shards=2)
    put_records(moto_url, stream, numbered(20))
    path = str(tmp_path / "cp.db")
    async with Consumer(
        stream, endpoint_url=moto_url, app_name="billing",
        checkpointer=SQLiteCheckpointer(path), poll_interval=POLL,
    ) as consumer:
        records = await collect(consumer, 20)
        one = records[0]
        await consumer.checkpoint(one)  # only one shard has a checkpoint
    args = ("--endpoint-url", moto_url, "status", stream, "--app", "billing",
            "--checkpoints", path)
    doc = await anyio.to_thread.run_sync(lambda: status_json(*args))
    shards = {s["shard_id"]: s for s in doc["shards"]}
    assert shards[one.shard_id]["checkpoint"] == one.sequence_number
    assert shards[one.shard_id]["owner"] is None
    other = next(s for s in shards.values() if s["shard_id"] != one.shard_id)
    assert other["checkpoint"] is None
    assert other["millis_behind_latest"] is None
    plain = await anyio.to_thread.run_sync(
        lambda: status_json("--endpoint-url", moto_url, "status", stream)
    )
    assert all(s["checkpoint"] is None for s in plain["shards"])
    assert len(plain["shards"]) == 2

    wrong_app = shardflow(*args[:4], "--app", "other", "--checkpoints", path)
    assert wrong_app.returncode == 1
    assert wrong_app.stderr == (
        f"shardflow status: no checkpoints of application 'other' on stream {stream!r} in "
        f"{path!r} (applications there: billing)\n"
    )
    no_app = shardflow(*args[:4], "--checkpoints", path)
    assert no_app.returncode == 1
    assert "--checkpoints needs --app" in no_app.stderr
    missing = shardflow(*args[:4], "--app", "billing", "--checkpoints", path + ".nope")
    assert missing.returncode == 1
    assert "not found" in missing.stderr


def test_missing_stream_and_table_are_one_line(moto_url: str) -> None:
    proc = shardflow("--endpoint-url", moto_url, "status", "no-such-stream")
    assert proc.returncode == 1
    assert proc.stderr.startswith("shardflow status: stream 'no-such-stream' not found")
    assert proc.stderr.count("\n") == 1
    stream = create_stream(moto_url, shards=1)
    proc = shardflow("--endpoint-url", moto_url, "status", stream, "--table", "no-such-table")
    assert proc.returncode == 1
    assert proc.stderr.startswith("shardflow status: table 'no-such-table' not found")
    assert proc.stderr.count("\n") == 1


def test_watch_refreshes_until_interrupted(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardflow", "--endpoint-url", moto_url, "status", stream,
         "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        seen += line.startswith(f"stream {stream}: 1 shards")
        if seen == 3:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert seen == 3
    assert proc.returncode == 130, err
