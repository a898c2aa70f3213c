"""Helpers for lease (consumer group) tests: group workers in this process or in their
own processes, and the lease table read back with boto3 (the independent referee).

Run as a script, this module is one group worker (see :func:`main`): it prints one JSON
line per event on stdout and obeys commands on stdin ("checkpoint", "close").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from shardflow import Consumer, DynamoDBLeases, Record, errors

from support_kcl_leases import is_lease

POLL = 0.2
APP = "app"


# --- the lease table, read with boto3 ------------------------------------------------------


def dynamodb(url: str) -> Any:
    import boto3

    return boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")


def lease_items(url: str, table: str) -> dict[str, dict[str, Any]]:
    """Every item of ``table`` by leaseKey, raw (typed attribute values); none before the
    table exists."""
    client = dynamodb(url)
    items: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        try:
            page = client.scan(**kwargs)
        except client.exceptions.ResourceNotFoundException:
            return {}  # not created yet
        for item in page["Items"]:
            items[item["leaseKey"]["S"]] = item
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def owners(url: str, table: str) -> dict[str, str | None]:
    """leaseKey -> leaseOwner (None when unowned), for unfinished leases (items that are
    not leases by the KCL's rule, e.g. a KCL 3.x worker-metrics item, are left out)."""
    return {
        key: item["leaseOwner"]["S"] if "leaseOwner" in item else None
        for key, item in lease_items(url, table).items()
        if is_lease(item) and "checkpoint" in item and item["checkpoint"]["S"] != "SHARD_END"
    }


def loads(url: str, table: str) -> Counter[str | None]:
    return Counter(owners(url, table).values())


async def wait_for(predicate: Callable[[], bool], within: float, what: str = "") -> float:
    """Poll ``predicate`` until true; return the seconds it took; fail after ``within``."""
    start = time.monotonic()
    deadline = start + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what or predicate}")
        await anyio.sleep(0.05)
    return time.monotonic() - start


async def table_loads(url: str, table: str) -> Counter[str | None]:
    return await anyio.to_thread.run_sync(loads, url, table)


async def wait_loads(
    url: str, table: str, expected: Callable[[Counter[str | None]], bool], within: float
) -> Counter[str | None]:
    """Poll the table's owner counts until ``expected(counts)``."""
    deadline = time.monotonic() + within
    while True:
        counts = await table_loads(url, table)
        if expected(counts):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"lease owners not as expected within {within}s: {counts}")
        await anyio.sleep(0.1)


# --- a worker in this process --------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    worker: str
    shard_id: str
    data: bytes
    at: float = field(default_factory=time.monotonic)


class GroupWorker:
    """A Consumer with DynamoDBLeases reading in a task: every delivery goes to ``log``.

    Checkpoints every ``checkpoint_every``-th record; ``lost`` counts LeaseLost errors.
    """

    def __init__(
        self,
        name: str,
        *,
        kinesis_url: str,
        dynamodb_url: str,
        stream: str,
        table: str,
        failover_time: float,
        log: list[Delivery],
        checkpoint_every: int = 1,
        app: str = APP,
        shared_table: bool = False,
        **consumer_options: Any,
    ) -> None:
        self.name = name
        self.leases = DynamoDBLeases(
            table,
            worker_id=name,
            failover_time=failover_time,
            endpoint_url=dynamodb_url,
            shared_table=shared_table,
        )
        self.consumer = Consumer(
            stream,
            app_name=app,
            checkpointer=self.leases,
            endpoint_url=kinesis_url,
            poll_interval=POLL,
            resync_interval=5.0,
            **consumer_options,
        )
        self.log = log
        self.checkpoint_every = checkpoint_every
        self.lost = 0
        self.last: Record | None = None
        self.closed = anyio.Event()

    @property
    def reading(self) -> int:
        return self.consumer.stats().shards_reading

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            async with self.consumer as consumer:
                task_status.started()
                count = 0
                async for record in consumer:
                    self.last = record
                    self.log.append(Delivery(self.name, record.shard_id, record.data))
                    count += 1
                    if count % self.checkpoint_every == 0:
                        try:
                            await consumer.checkpoint(record)
                        except errors.LeaseLost:
                            self.lost += 1
        finally:
            self.closed.set()

    async def close(self) -> None:
        """Graceful: pending checkpoints, then the leases are released."""
        await self.consumer.aclose()
        await self.closed.wait()


# --- a worker in its own process -----------------------------------------------------------

SCRIPT = Path(__file__).resolve()


class WorkerProcess:
    """``python tests/support_leases.py ...``: one worker; its JSON events collected."""

    def __init__(
        self,
        name: str,
        *,
        kinesis_url: str,
        dynamodb_url: str,
        stream: str,
        table: str,
        failover_time: float,
        checkpoint_every: int = 1,
    ) -> None:
        self.name = name
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.proc = subprocess.Popen(
            [
                sys.executable, str(SCRIPT), "--name", name, "--kinesis", kinesis_url,
                "--dynamodb", dynamodb_url, "--stream", stream, "--table", table,
                "--failover", str(failover_time), "--checkpoint-every", str(checkpoint_every),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._threads = [
            threading.Thread(target=self._read_events, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.stderr.append(line)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in list(self.events) if e["event"] == kind]

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.of("record")

    @property
    def reading(self) -> int:
        reading = self.of("reading")
        return int(reading[-1]["shards"]) if reading else 0

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def diagnostics(self) -> str:
        return "".join(self.stderr[-40:])

    def stop(self) -> None:
        """Ask for a graceful close; kill after a deadline. Idempotent."""
        if self.proc.poll() is None:
            try:
                self.send("close")
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for thread in self._threads:
            thread.join(timeout=5)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def _worker(args: argparse.Namespace) -> None:
    leases = DynamoDBLeases(
        args.table, worker_id=args.name, failover_time=args.failover, endpoint_url=args.dynamodb
    )
    last: Record | None = None
    async with Consumer(
        args.stream,
        app_name=APP,
        checkpointer=leases,
        endpoint_url=args.kinesis,
        poll_interval=POLL,
        resync_interval=5.0,
    ) as consumer:
        _emit("ready")

        async def commands() -> None:
            while True:
                line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
                command = line.strip()
                if command == "checkpoint" and last is not None:
                    try:
                        await consumer.checkpoint(last)
                    except errors.LeaseLost:
                        _emit("checkpoint", result="LeaseLost", shard=last.shard_id)
                    else:
                        _emit("checkpoint", result="ok", shard=last.shard_id)
                elif command in ("close", ""):  # "" is EOF: the test runner went away
                    await consumer.aclose()
                    return

        async def report() -> None:
            reading = -1
            while True:
                now = consumer.stats().shards_reading
                if now != reading:
                    reading = now
                    _emit("reading", shards=now)
                await anyio.sleep(0.05)

        async with anyio.create_task_group() as tg:
            tg.start_soon(commands)
            tg.start_soon(report)
            count = 0
            async for record in consumer:
                last = record
                _emit("record", shard=record.shard_id, data=record.data.decode())
                count += 1
                if args.checkpoint_every and count % args.checkpoint_every == 0:
                    try:
                        await consumer.checkpoint(record)
                    except errors.LeaseLost:
                        _emit("checkpoint", result="LeaseLost", shard=record.shard_id)
                    else:
                        _emit("checkpointed", shard=record.shard_id, data=record.data.decode())
            tg.cancel_scope.cancel()
    _emit("closed")


def main() -> None:
    parser = argparse.ArgumentParser(description="one consumer-group worker (tests)")
    for option in ("--name", "--kinesis", "--dynamodb", "--stream", "--table"):
        parser.add_argument(option, required=True)
    parser.add_argument("--failover", type=float, required=True)
    parser.add_argument("--checkpoint-every", type=int, default=1)
    anyio.run(_worker, parser.parse_args())


if __name__ == "__main__":
    main()
