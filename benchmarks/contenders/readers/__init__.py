"""Contenders for the side-by-side consumer benchmark (issue 15): one module each.

Each contender runs in its own process (``python -m benchmarks.contenders.readers NAME
...``) and reads ``--records`` user records, already in the stream (plain ~200-byte JSON
records, or KPL aggregates of 100 with ``--aggregated``), from TRIM_HORIZON of every
shard of the stream at ``--url``. The runner (:func:`benchmarks.consumer.compare`) starts
the endpoint, creates and fills the stream.

A contender module defines ``NAME``, ``DESCRIPTION``, optionally ``unavailable() -> str |
None``, and ``run(ctx: ReadContext)`` (``async def`` or plain ``def``): untimed setup
(clients, a warm-up call), then ``with ctx.timer:`` around reading until ``ctx.records``
user records were handed to the application as bytes (aggregates unpacked), counting them
in ``ctx.seen``. Client-side read pacing is lifted where a library has it: the fake never
throttles, and the figures are about client cost.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ...common import Timer

__all__ = ["CONTENDERS", "ReadContext", "load", "read_shards"]

CONTENDERS: tuple[str, ...] = (
    "raw_aiohttp",
    "aiobotocore_naive",
    "boto3_sequential",
    "async_kinesis",
    "shardflow",
    "shardflow_batches",
    "shardflow_fan_out",
)


@dataclass
class ReadContext:
    url: str
    stream: str
    records: int
    aggregated: bool
    region: str = "us-east-1"
    timer: Timer = field(default_factory=Timer)
    seen: int = 0


def load(name: str) -> ModuleType:
    return importlib.import_module(f"benchmarks.contenders.readers.{name.replace('-', '_')}")


async def read_shards(readers: list[Coroutine[Any, Any, None]], done: asyncio.Event) -> None:
    """Run one reader per shard until ``done`` is set (or a reader fails: its error is
    raised); every reader is then cancelled. For the hand-written loops."""
    tasks = [asyncio.create_task(reader) for reader in readers]
    waiter = asyncio.create_task(done.wait())
    finished, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in [waiter, *tasks]:
        task.cancel()
    await asyncio.gather(waiter, *tasks, return_exceptions=True)
    for task in finished:
        if task is not waiter and task.exception() is not None:
            raise RuntimeError("a shard task failed") from task.exception()
