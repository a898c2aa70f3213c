"""``shardflow`` (aggregation off) in a process that tuned Python's garbage collector the
way a high-volume service may: :func:`gc.freeze` after start-up (the imported modules
are never scanned again) and a first-generation threshold of 50,000 instead of 700.
Every accepted record is a live future until it resolves, so the collector's scans are
a visible share of the default run's cost; this row shows how much
(:mod:`benchmarks.producer` only, not a contender of its own). The library itself never
changes the collector's settings."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from . import RunContext
from .shardflow import produce

NAME = "shardflow_gc_tuned"
DESCRIPTION = "shardflow Producer, gc.freeze() and gc.set_threshold(50_000) in the process"
AGGREGATES = False
THRESHOLD = 50_000


@contextmanager
def tuned_gc() -> Iterator[None]:
    """Freeze what exists and raise the first generation's threshold; restore after."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(THRESHOLD, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


async def run(ctx: RunContext) -> None:
    with tuned_gc():
        await produce(ctx, read_results=False)
