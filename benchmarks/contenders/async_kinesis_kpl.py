"""async-kinesis with its KPL processor: JSON events packed into KPL aggregates (it uses
aws-kinesis-agg). Throttle lifted, as for every contender.

Its KPL mode refuses partition keys ("Custom partition keys are not supported with KPL
aggregation"): every sub-record gets the key "a" and each aggregate a time-based key, so
the events go in without their user ids.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from . import RunContext
from .async_kinesis import produce
from .async_kinesis import unavailable as _missing_library

NAME = "async_kinesis_kpl"
DESCRIPTION = ("async-kinesis Producer, KPL aggregation (KPLJsonProcessor), throttle lifted; "
               "it refuses partition keys, so none are given")
AGGREGATES = True


def unavailable() -> str | None:
    missing = _missing_library()
    if missing:
        return missing
    if importlib.util.find_spec("aws_kinesis_agg") is None:
        return "its KPL processor needs aws-kinesis-agg (pip install -e '.[dev]')"
    return None


def processor() -> Any:
    from kinesis.processors import KPLJsonProcessor  # type: ignore[import-untyped]

    return KPLJsonProcessor()


async def run(ctx: RunContext) -> None:
    await produce(ctx, processor(), keyed=False)
