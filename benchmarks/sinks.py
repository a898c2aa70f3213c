"""Sinks: S3Sink's encoding, compression and upload, and TumblingWindows, per record.

    python -m benchmarks.sinks [--records N] [--repeat N] [--shards N] [--out DIR]

The workload is ``--records`` JSON click events of ~250 bytes
(:func:`benchmarks.common.make_events`) turned into consumer Records spread round-robin
over ``--shards`` shards, 1 ms of arrival time apart, built before the clock starts.

Rows:

- ``encode lines``: :func:`shardflow.sinks.encode_record` for every record (the JSON check
  and the NDJSON line), no I/O;
- ``gzip``: compressing those lines in 5 MiB objects as S3Sink does (level 6, no mtime);
- ``S3Sink -> moto (gzip|none)``: ``write`` in batches of 500 then ``aclose``, against a
  single-threaded moto server in its own process (upload time included; moto's own CPU
  is not, it runs in another process);
- ``windows count/type/min``: ``TumblingWindows(60, key=tag+path)`` over the event dicts
  in time order; ``... out of order`` shuffles events within 5 s with 10 s of lateness.

Each row is the fastest of ``--repeat`` runs: wall µs and this process's CPU µs per record
(threads included), and records/s. ``--endpoint`` is accepted; only moto serves S3.
Prints a Markdown table and writes ``benchmarks/results/sinks.json``.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import sys
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import boto3
import orjson

from shardflow import Record
from shardflow.sinks import S3Sink, TumblingWindows, encode_record

from benchmarks.common import (
    RESULTS_DIR,
    Measurement,
    Timer,
    add_common_arguments,
    bench_env,
    fmt_bytes,
    fmt_float,
    fmt_int,
    make_events,
    markdown_table,
    write_results,
)
from benchmarks.compare import moto_endpoint

T0 = datetime(2024, 3, 5, 7, 0, tzinfo=timezone.utc)
BATCH = 500
OBJECT_BYTES = 5 * 1024 * 1024


def make_records(count: int, shards: int) -> tuple[list[Record], list[dict[str, Any]]]:
    events = [event for _, event in make_events(count)]
    records = [
        Record(
            data=orjson.dumps(event),
            partition_key=str(event["user_id"]),
            sequence_number=str(49_600_000_000_000_000_000 + i),
            sub_sequence_number=None,
            shard_id=f"shardId-{i % shards:012d}",
            arrival_time=T0 + timedelta(milliseconds=i),
        )
        for i, event in enumerate(events)
    ]
    return records, events


def best(runs: int, fn: Callable[[], Measurement]) -> Measurement:
    return min((fn() for _ in range(runs)), key=lambda m: m.seconds)


def row(name: str, m: Measurement, count: int, **extra: Any) -> dict[str, Any]:
    return {
        "row": name,
        "records": count,
        "us_per_record": m.seconds * 1e6 / count,
        "cpu_us_per_record": m.cpu_us_per(count),
        "records_per_s": m.per_second(count),
        "measurement": m.as_dict(),
        **extra,
    }


# --- S3Sink ---------------------------------------------------------------------------------


def bench_encode(records: Sequence[Record]) -> tuple[Measurement, list[bytes]]:
    with Timer(sample_rss=False) as t:
        lines = [encode_record(r) for r in records]
    assert t.result is not None
    return t.result, lines


def bench_gzip(lines: Sequence[bytes]) -> tuple[Measurement, int, int]:
    chunks: list[bytes] = []
    current: list[bytes] = []
    size = 0
    for line in lines:
        current.append(line)
        size += len(line)
        if size >= OBJECT_BYTES:
            chunks.append(b"".join(current))
            current, size = [], 0
    if current:
        chunks.append(b"".join(current))
    with Timer(sample_rss=False) as t:
        out = sum(len(gzip.compress(c, compresslevel=6, mtime=0)) for c in chunks)
    assert t.result is not None
    return t.result, sum(len(c) for c in chunks), out


def bench_s3sink(url: str, records: Sequence[Record], compression: str | None) -> dict[str, Any]:
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
    stats: dict[str, Any] = {}

    async def run() -> Measurement:
        sink = S3Sink(bucket, stream="bench", endpoint_url=url, compression=compression)
        async with sink, Timer() as t:
            for i in range(0, len(records), BATCH):
                await sink.write(records[i : i + BATCH])
            await sink.aclose()
        s = sink.stats()
        stats.update(objects=s.objects, bytes_in=s.bytes_in, bytes_out=s.bytes_out)
        if s.records != len(records):
            raise AssertionError(f"S3Sink stored {s.records} of {len(records)} records")
        assert t.result is not None
        return t.result

    m = anyio.run(run)
    return {"measurement": m, **stats}


# --- windows --------------------------------------------------------------------------------


def bench_windows(events: Sequence[dict[str, Any]], lateness: float) -> tuple[Measurement, int]:
    emitted = 0

    def on_window(_window: object) -> None:
        nonlocal emitted
        emitted += 1

    async def run() -> Measurement:
        windows: TumblingWindows[dict[str, Any], str, int] = TumblingWindows(
            60,
            key=lambda e: f"{e['tag']} {e['path'].split('/')[1]}",
            allowed_lateness=lateness,
            on_window=on_window,
        )
        async with Timer(sample_rss=False) as t, windows:
            await windows.add_many(events)
        if windows.late_events:
            raise AssertionError(f"{windows.late_events} events were late")
        assert t.result is not None
        return t.result

    return anyio.run(run), emitted


def shuffled(events: Sequence[dict[str, Any]], spread: float) -> list[dict[str, Any]]:
    rng = random.Random(5)
    keyed = sorted(events, key=lambda e: e["time"] + rng.uniform(0, spread))
    return keyed


# --- main -----------------------------------------------------------------------------------


def run(count: int, repeat: int, shards: int) -> list[dict[str, Any]]:
    records, events = make_records(count, shards)
    # the events span count ms: stretch them so windows of a minute close along the way
    events = [{**e, "time": e["time"] * 1.0 + i * 0.05} for i, e in enumerate(events)]
    rows: list[dict[str, Any]] = []

    m, lines = bench_encode(records)
    for _ in range(repeat - 1):
        m = min(m, bench_encode(records)[0], key=lambda x: x.seconds)
    rows.append(row("encode lines", m, count, bytes_in=sum(map(len, lines))))
    gz = [bench_gzip(lines) for _ in range(repeat)]
    m_gz, raw, packed = min(gz, key=lambda x: x[0].seconds)
    rows.append(row("gzip (level 6, 5 MiB objects)", m_gz, count, bytes_in=raw, bytes_out=packed))

    env = bench_env()
    for name in [k for k in os.environ if k.startswith("AWS_") and k not in env]:
        del os.environ[name]
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    with moto_endpoint() as moto:
        for compression in ("gzip", None):
            results = [bench_s3sink(moto.url, records, compression) for _ in range(repeat)]
            fastest = min(results, key=lambda r: r["measurement"].seconds)
            m = fastest.pop("measurement")
            rows.append(row(f"S3Sink -> moto ({compression or 'none'})", m, count, **fastest))

    m, emitted = bench_windows(events, 0.0)
    for _ in range(repeat - 1):
        m = min(m, bench_windows(events, 0.0)[0], key=lambda x: x.seconds)
    rows.append(row("windows count/type/min", m, count, windows=emitted))
    late = shuffled(events, 5.0)
    m, emitted = bench_windows(late, 10.0)
    for _ in range(repeat - 1):
        m = min(m, bench_windows(late, 10.0)[0], key=lambda x: x.seconds)
    rows.append(row("windows ... out of order, lateness 10 s", m, count, windows=emitted))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sinks",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_common_arguments(parser, records=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs per row, fastest kept")
    parser.add_argument("--shards", type=int, default=4, help="shards the records come from")
    args = parser.parse_args(argv)
    if args.records < 1 or args.repeat < 1 or args.shards < 1:
        parser.error("--records, --repeat and --shards must be at least 1")
    rows = run(args.records, args.repeat, args.shards)
    table = markdown_table(
        ["row", "µs/record", "CPU µs/record", "records/s", "objects/windows", "in", "out"],
        [
            [
                r["row"],
                fmt_float(r["us_per_record"], 2),
                fmt_float(r["cpu_us_per_record"], 2),
                fmt_int(r["records_per_s"]),
                fmt_int(r.get("objects", r.get("windows"))),
                fmt_bytes(r.get("bytes_in")),
                fmt_bytes(r.get("bytes_out")),
            ]
            for r in rows
        ],
        align="lrrrrrr",
    )
    print(table)
    path = write_results(
        "sinks",
        {
            "records": args.records,
            "repeat": args.repeat,
            "shards": args.shards,
            "results": rows,
            "table": table,
        },
        directory=args.out or RESULTS_DIR,
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
