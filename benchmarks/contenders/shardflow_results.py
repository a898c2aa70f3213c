"""shardflow's Producer, aggregation off, reading every record's PutResult (shard id and
sequence number) after the flush: the cost with every per-record result materialised."""

from __future__ import annotations

from . import RunContext
from .shardflow import produce

NAME = "shardflow_results"
DESCRIPTION = "shardflow Producer, every PutResult read, 8 in flight"
AGGREGATES = False


async def run(ctx: RunContext) -> None:
    await produce(ctx, read_results=True)
