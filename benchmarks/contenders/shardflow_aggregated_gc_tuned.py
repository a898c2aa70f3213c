"""``shardflow_aggregated`` with the garbage collector tuned as in
:mod:`benchmarks.contenders.shardflow_gc_tuned` (:mod:`benchmarks.producer` only)."""

from __future__ import annotations

from . import RunContext
from .shardflow import produce
from .shardflow_gc_tuned import tuned_gc

NAME = "shardflow_aggregated_gc_tuned"
DESCRIPTION = "shardflow Producer, KPL aggregation, gc.freeze() and gc.set_threshold(50_000)"
AGGREGATES = True


async def run(ctx: RunContext) -> None:
    with tuned_gc():
        await produce(ctx, read_results=False, aggregate=True)
