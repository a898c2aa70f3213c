"""shardflow's Consumer: read-and-deliver throughput, and put-to-delivery latency.

    python -m benchmarks.consumer [--records N] [--endpoint fake|moto|both] [--out DIR]
                                  [--shards 4] [--latency-records 200] [--poll 1.0]

Throughput: the stream is filled first (not timed), then one Consumer reads it from
TRIM_HORIZON and the application takes every record (``async for``, and ``batches()``);
the figures are user records per second and this process's CPU microseconds per record
(GetRecords answers parsed by botocore, Record objects built, delivery). A third run reads
KPL aggregates of 100 user records each (deaggregation included).

Latency: 8 shards, mostly idle; a writer puts one record every ``--latency-interval``
seconds (spread over the shards) while a Consumer at LATEST with the default
``poll_interval`` (1.0 s) delivers them; the figure is put-to-delivery time, p50/p99/max.
Every shard polls on its own, so it stays near ``poll_interval``.

Prints Markdown tables and writes ``benchmarks/results/consumer.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import boto3
import orjson
from botocore.config import Config

from shardflow import Consumer, _aws
from shardflow.aggregation import aggregate
from shardflow.shardmap import hash_key

from benchmarks.common import (
    Timer,
    add_common_arguments,
    bench_env,
    fmt_float,
    fmt_int,
    make_events,
    markdown_table,
    write_results,
)
from benchmarks.compare import moto_endpoint
from benchmarks.fake_kinesis import fake_kinesis

MOTO_MAX_RECORDS = 20_000
"""moto stores about 4,000 records/s: the throughput run on moto is capped at this."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    url: str


@contextlib.contextmanager
def endpoint(name: str, shards: int) -> Iterator[Endpoint]:
    if name == "fake":
        with fake_kinesis(shards=shards, store=True) as fake:
            yield Endpoint("fake", fake.url)
    else:
        with moto_endpoint() as moto:
            yield Endpoint("moto", moto.url)


def client(url: str) -> Any:
    return boto3.client(
        "kinesis", endpoint_url=url, region_name="us-east-1",
        config=Config(retries={"max_attempts": 10, "mode": "standard"}),
    )


def create_stream(url: str, shards: int) -> str:
    name = f"bench-consumer-{uuid.uuid4().hex[:8]}"
    kinesis = client(url)
    kinesis.create_stream(StreamName=name, ShardCount=shards)
    for _ in range(600):
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return name
        time.sleep(0.05)
    raise RuntimeError(f"stream {name} not ACTIVE")


def fill(url: str, name: str, entries: Sequence[tuple[str, bytes]], per_request: int) -> None:
    """PutRecords every (partition key, data), retrying failed entries (not timed)."""
    kinesis = client(url)
    for start in range(0, len(entries), per_request):
        pending = [{"PartitionKey": k, "Data": d} for k, d in entries[start:start + per_request]]
        while pending:
            answer = kinesis.put_records(StreamName=name, Records=pending)
            pending = [e for e, r in zip(pending, answer["Records"], strict=True)
                       if "ErrorCode" in r]


# --- throughput -------------------------------------------------------------------------


async def read_all(url: str, name: str, expected: int, mode: str) -> dict[str, Any]:
    consumer = Consumer(name, endpoint_url=url, poll_interval=0.2)
    seen = 0
    size = 0
    async with consumer:
        async with Timer() as timer:
            with anyio.fail_after(600):
                if mode == "batches":
                    async for batch in consumer.batches():
                        seen += len(batch)
                        size += sum(len(r.data) for r in batch)
                        if seen >= expected:
                            break
                else:
                    async for record in consumer:
                        seen += 1
                        size += len(record.data)
                        if seen >= expected:
                            break
        stats = consumer.stats()
    m = timer.result
    assert m is not None
    return {
        "mode": mode,
        "records": seen,
        "bytes": size,
        "seconds": m.seconds,
        "records_per_s": m.per_second(seen),
        "cpu_us_per_record": m.cpu_us_per(seen),
        "peak_rss_bytes": m.peak_rss_bytes,
        "get_records_calls": stats.get_records_calls,
    }


Entries = list[tuple[str, bytes]]


def by_shard(url: str, name: str, entries: Entries) -> list[Entries]:
    """``entries`` grouped by the open shard whose hash-key range holds their key."""
    shards = client(url).list_shards(StreamName=name)["Shards"]
    ranges = sorted(
        (int(s["HashKeyRange"]["StartingHashKey"]), int(s["HashKeyRange"]["EndingHashKey"]))
        for s in shards
    )
    groups: list[Entries] = [[] for _ in ranges]
    for key, data in entries:
        value = hash_key(key)
        index = next(i for i, (low, high) in enumerate(ranges) if low <= value <= high)
        groups[index].append((key, data))
    return groups


def throughput(ep: Endpoint, records: int, shards: int) -> list[dict[str, Any]]:
    events = make_events(records)
    plain = [(key, orjson.dumps(event)) for key, event in events]
    rows = []
    for mode in ("records", "batches"):
        name = create_stream(ep.url, shards)
        fill(ep.url, name, plain, 500)
        print(f"[{ep.name}] reading {records:,} records ({mode}) ...", file=sys.stderr)
        row = anyio.run(read_all, ep.url, name, records, mode)
        rows.append({"endpoint": ep.name, "input": "plain", **row})
    # KPL aggregates of 100 user records each, packed per shard as a KPL does (the
    # consumer drops sub-records whose key hashes outside the shard, like the KCL).
    name = create_stream(ep.url, shards)
    blobs = []
    for group in by_shard(ep.url, name, plain):
        for start in range(0, len(group), 100):
            chunk = group[start:start + 100]
            blobs.append((chunk[0][0], aggregate([(k, None, d) for k, d in chunk])))
    fill(ep.url, name, blobs, 100)
    print(f"[{ep.name}] reading {records:,} aggregated records ...", file=sys.stderr)
    row = anyio.run(read_all, ep.url, name, records, "records")
    rows.append({"endpoint": ep.name, "input": "KPL aggregates of 100", **row})
    return rows


# --- latency ------------------------------------------------------------------------------


async def measure_latency(
    url: str, name: str, count: int, interval: float, poll: float
) -> dict[str, Any]:
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    async with Consumer(name, endpoint_url=url, start_at="LATEST", poll_interval=poll) as c:
        # Every shard has its LATEST iterator (and is idle) before the first put.
        with anyio.fail_after(30):
            while c.stats().get_records_calls < 8:  # noqa: ASYNC110 - polling counters
                await anyio.sleep(0.01)
        async with contextlib.AsyncExitStack() as stack:
            kinesis = await _aws.open_client(stack, "kinesis", endpoint_url=url)

            async def write() -> None:
                for i in range(count):
                    data = f"latency-{i}".encode()
                    sent[data] = time.perf_counter()
                    await _aws.call(kinesis, "put_record", StreamName=name, Data=data,
                                    PartitionKey=f"key-{i}")
                    await anyio.sleep(interval)

            async with anyio.create_task_group() as tg:
                tg.start_soon(write)
                with anyio.fail_after(count * interval + 30):
                    async for record in c:
                        latencies.append(time.perf_counter() - sent[record.data])
                        if len(latencies) >= count:
                            break
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "records": len(latencies),
        "shards": 8,
        "poll_interval": poll,
        "put_interval": interval,
        "p50_s": q[49],
        "p90_s": q[89],
        "p99_s": q[98],
        "max_s": latencies[-1],
        "mean_s": statistics.fmean(latencies),
    }


def latency(ep: Endpoint, count: int, interval: float, poll: float) -> dict[str, Any]:
    name = create_stream(ep.url, 8)
    print(f"[{ep.name}] latency: {count} records, one every {interval}s over 8 shards ...",
          file=sys.stderr)
    return {"endpoint": ep.name, **anyio.run(measure_latency, ep.url, name, count, interval,
                                             poll)}


# --- main ---------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.consumer",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_common_arguments(parser, records=200_000)
    parser.add_argument("--shards", type=int, default=4, help="shards for throughput")
    parser.add_argument("--latency-records", type=int, default=200)
    parser.add_argument("--latency-interval", type=float, default=0.05,
                        help="seconds between puts in the latency run (default 0.05)")
    parser.add_argument("--poll", type=float, default=1.0,
                        help="poll_interval of the latency run (default 1.0)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args(argv)
    os.environ.update(bench_env())

    names = ["fake", "moto"] if args.endpoint == "both" else [args.endpoint]
    rows: list[dict[str, Any]] = []
    lat: list[dict[str, Any]] = []
    for ep_name in names:
        with endpoint(ep_name, args.shards) as ep:
            if not args.skip_throughput:
                records = args.records if ep_name == "fake" else min(args.records,
                                                                      MOTO_MAX_RECORDS)
                rows += throughput(ep, records, args.shards)
            if not args.skip_latency:
                lat.append(latency(ep, args.latency_records, args.latency_interval, args.poll))

    if rows:
        print("\nRead and deliver (one Consumer, TRIM_HORIZON, ~200-byte JSON records)\n")
        print(markdown_table(
            ["endpoint", "input", "delivery", "records", "records/s", "CPU µs/record",
             "GetRecords calls"],
            [[r["endpoint"], r["input"], r["mode"], fmt_int(r["records"]),
              fmt_int(r["records_per_s"]), fmt_float(r["cpu_us_per_record"], 2),
              fmt_int(r["get_records_calls"])] for r in rows],
            align="lllrrrr",
        ))
    if lat:
        print("\nPut-to-delivery latency, 8 mostly idle shards, LATEST\n")
        print(markdown_table(
            ["endpoint", "records", "poll_interval s", "p50 s", "p90 s", "p99 s", "max s"],
            [[r["endpoint"], fmt_int(r["records"]), fmt_float(r["poll_interval"], 1),
              fmt_float(r["p50_s"], 3), fmt_float(r["p90_s"], 3), fmt_float(r["p99_s"], 3),
              fmt_float(r["max_s"], 3)] for r in lat],
        ))
    path = write_results("consumer", {"throughput": rows, "latency": lat,
                                      "command": " ".join(["python -m benchmarks.consumer",
                                                           *(argv or sys.argv[1:])])},
                         directory=args.out)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
