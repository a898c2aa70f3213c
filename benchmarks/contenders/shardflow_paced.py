"""shardflow's Producer, aggregation off, with per-shard pacing on (``rate_limit=1.0``) but
limits far above what the run sends: the cost of shard prediction and token buckets on
the unaggregated hot path (:mod:`benchmarks.producer` only, not a contender of its own)."""

from __future__ import annotations

from shardflow import KinesisLimits

from . import RunContext
from .shardflow import produce

NAME = "shardflow_paced"
DESCRIPTION = "shardflow Producer, rate_limit=1.0 with limits that never bind, 8 in flight"
AGGREGATES = False
UNBOUNDED = KinesisLimits(shard_write_records_per_s=10**9, shard_write_bytes_per_s=10**12)


async def run(ctx: RunContext) -> None:
    await produce(ctx, read_results=False, rate_limit=1.0, limits=UNBOUNDED)
