"""shardflow's Producer with KPL aggregation: every event put() with its partition key,
packed per predicted shard into aggregates of up to 50 KiB, then every record's delivery
checked (each has its aggregate's sequence number and its sub-sequence number)."""

from __future__ import annotations

from . import RunContext
from .shardflow import produce

NAME = "shardflow_aggregated"
DESCRIPTION = "shardflow Producer, KPL aggregation per shard, per-record delivery checked"
AGGREGATES = True


async def run(ctx: RunContext) -> None:
    await produce(ctx, read_results=False, aggregate=True)
