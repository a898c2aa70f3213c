"""Contenders for the side-by-side producer benchmark (issue 8): one module each.

Each contender runs in its own process (``python -m benchmarks.contenders NAME ...``) on
the same workload: ``--records`` JSON events of ~200 bytes with 1,000 user ids as
partition keys (:func:`benchmarks.common.make_events`), built before the clock starts,
into one stream of the endpoint at ``--url``. The runner (:mod:`benchmarks.compare`)
starts the endpoint, creates the stream and counts what arrived.

A contender module defines:

``NAME: str``
    The id used by ``--only`` and in tables (the module name with ``-`` for ``_``).
``DESCRIPTION: str``
    One line: the library and how it is driven.
``AGGREGATES: bool``
    True when it packs user records into KPL aggregates.
``unavailable() -> str | None`` (optional)
    Why it cannot run here (a missing package, ...); None when it can.
``run(ctx: RunContext) -> None`` (``async def`` or plain ``def``)
    Untimed setup first (clients, connections, pre-built bodies, a warm-up call), then
    ``with ctx.timer:`` (or ``async with``) around handing over every event and waiting
    until the endpoint acknowledged every record. Serialising the events (orjson or the
    library's own serialiser) is part of the timed work, except for the raw ceiling.
    Client-side rate limiting is lifted where a library has it: the fake endpoint never
    throttles, and the figures are about client cost. A record that fails for good
    raises; the runner also counts what the endpoint received. A warm-up that writes
    records to the stream adds their number to ``ctx.extra_records``.

Adding a contender is one module here plus its name in :data:`CONTENDERS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType

import orjson

from ..common import Event, Timer

__all__ = ["CONTENDERS", "RunContext", "load", "module_name", "qualified"]

CONTENDERS: tuple[str, ...] = (
    "raw_aiohttp",
    "aiobotocore_naive",
    "boto3_sequential",
    "async_kinesis",
    "async_kinesis_kpl",
    "aiokpl",
    # The shardflow contenders (aggregation off / on) come with the producer:
    "shardflow",
    "shardflow_aggregated",
)
"""Every contender, in table order. A listed module that does not exist yet is reported
as unavailable."""


@dataclass
class RunContext:
    """What a contender's ``run`` gets: where to write, what to write, and the clock."""

    url: str
    stream: str
    events: list[Event]
    region: str = "us-east-1"
    in_flight: int = 4
    """Concurrent requests for contenders that choose their own concurrency."""
    timer: Timer = field(default_factory=Timer)
    extra_records: int = 0
    """User records the contender wrote besides the workload (a warm-up record): the runner
    expects ``len(events) + extra_records`` at the endpoint."""

    def payloads(self) -> list[tuple[str, bytes]]:
        """(partition key, JSON bytes) per event: for untimed preparation only.

        The bytes are compact copies: a small ``orjson.dumps`` result keeps a 4 KiB
        allocation alive (measured: ~4,100 bytes of RSS per 200-byte event), so holding
        100,000 of them would cost ~400 MiB and distort peak RSS.
        """
        return [(key, bytes(memoryview(orjson.dumps(event)))) for key, event in self.events]


def module_name(name: str) -> str:
    return name.replace("-", "_")


def qualified(name: str) -> str:
    """The module of contender ``name``: one of this package, or any module given by its
    dotted path (a name with a dot, e.g. one a test writes)."""
    return name if "." in name else f"benchmarks.contenders.{module_name(name)}"


def load(name: str) -> ModuleType:
    """Import the contender module ``name``; ImportError when there is none."""
    return importlib.import_module(qualified(name))
