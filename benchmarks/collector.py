"""The Collector's post path: posts per second in memory and with a durable SQLite spool.

    python -m benchmarks.collector [--records N] [--concurrency 1,16,128] [--out DIR]

Each run posts ``--records`` ~200-byte events through ``Collector.post`` into one
``BufferedOutput`` whose output confirms every batch at once (no network: this measures
the collector, the buffer and the spool, while the flusher drains concurrently as in
production). ``concurrency`` is the number of tasks posting at the same time; with a
spool, their posts share SQLite transactions (group commit), so each ``post()`` still
returns only after its event is committed. ``fsync`` on: every commit is synced to disk
(survives power loss); off: the commit survives a crash of the process only.

Prints a Markdown table and writes ``benchmarks/results/collector.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

from shardflow import BufferedOutput, Collector

from benchmarks.common import (
    RESULTS_DIR,
    Timer,
    fmt_float,
    fmt_int,
    make_events,
    markdown_table,
    write_results,
)


class NullOutput:
    """Confirms every event at once."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, events: Sequence[dict[str, Any]]) -> Sequence[BaseException | None]:
        self.sent += len(events)
        return [None] * len(events)


async def run(
    events: list[dict[str, Any]], *, spool: Path | None, fsync: bool, concurrency: int
) -> dict[str, Any]:
    output = NullOutput()
    buffered = BufferedOutput(
        output, spool=spool, fsync=fsync, max_spool_records=None, max_spool_bytes=None
    )
    collector = Collector()
    collector.output("**", buffered)
    share = [events[i::concurrency] for i in range(concurrency)]

    async def poster(mine: list[dict[str, Any]]) -> None:
        for event in mine:
            await collector.post("app.click", event)

    async with collector:
        async with Timer() as timer, anyio.create_task_group() as tg:
            for mine in share:
                tg.start_soon(poster, mine)
        await collector.flush()
    assert output.sent == len(events), (output.sent, len(events))
    assert timer.result is not None
    return {
        "store": "memory" if spool is None else ("spool, fsync" if fsync else "spool, no fsync"),
        "concurrency": concurrency,
        "events": len(events),
        "posts_per_second": timer.result.per_second(len(events)),
        "cpu_us_per_post": timer.result.cpu_us_per(len(events)),
        "seconds": timer.result.seconds,
    }


async def suite(records: int, concurrency: list[int]) -> list[dict[str, Any]]:
    events = [event for _, event in make_events(records)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="shardflow-bench-") as tmp:
        for n in concurrency:
            rows.append(await run(events, spool=None, fsync=False, concurrency=n))
            for fsync in (True, False):
                path = Path(tmp) / f"spool-{n}-{fsync}.db"
                rows.append(await run(events, spool=path, fsync=fsync, concurrency=n))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.collector", description=__doc__)
    parser.add_argument("--records", type=int, default=20_000, help="events per run")
    parser.add_argument(
        "--concurrency", default="1,16,128", help="comma-separated numbers of posting tasks"
    )
    parser.add_argument("--endpoint", default="none", help="ignored: no endpoint is used")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    concurrency = [int(x) for x in args.concurrency.split(",") if x]
    rows = anyio.run(suite, args.records, concurrency)
    print(
        markdown_table(
            ["store", "posting tasks", "posts/s", "CPU µs/post"],
            [
                [
                    r["store"],
                    str(r["concurrency"]),
                    fmt_int(r["posts_per_second"]),
                    fmt_float(r["cpu_us_per_post"]),
                ]
                for r in rows
            ],
        )
    )
    write_results("collector", {"records": args.records, "runs": rows}, directory=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
