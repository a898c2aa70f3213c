"""shardflow's Consumer beside other readers: throughput, and put-to-delivery latency.

    python -m benchmarks.consumer [--records N] [--endpoint fake|moto|both] [--out DIR]
                                  [--shards 4] [--only READER] [--baseline SRC]
                                  [--latency-records 200] [--poll 1.0]

Throughput: for each reader of :mod:`benchmarks.contenders.readers` (a raw aiohttp
ceiling, a naive aiobotocore loop, boto3, async-kinesis's Consumer, shardflow's Consumer
with ``async for`` and with ``batches()``), a fresh stream is filled (not timed), then
the reader, in its own process, reads it from TRIM_HORIZON until the application holds
every user record; the figures are records per second and that process's CPU
microseconds per record, for that first read (a fresh process) and for a second read of
the whole stream in the same process (its memory already touched: what a long-running
reader pays). Twice: plain records, then KPL aggregates of 100 (unpacked by
each reader: aws-kinesis-agg for the loops, the library's own otherwise). ``--baseline
SRC`` adds shardflow's reader run from another source tree (before/after in one run).

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
import resource
import statistics
import subprocess
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

from shardflow import Consumer
from shardflow._core import aws as _aws
from shardflow.aggregation import aggregate
from shardflow.shardmap import hash_key

from benchmarks.common import (
    add_common_arguments,
    bench_env,
    fmt_float,
    fmt_int,
    make_events,
    markdown_table,
    write_results,
)
from benchmarks.compare import ROOT, moto_endpoint
from benchmarks.contenders.readers import CONTENDERS
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


# --- throughput ---------------------------------------------------------------------------


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


def filled_stream(url: str, records: int, shards: int, aggregated: bool) -> str:
    """A new stream holding ``records`` ~200-byte JSON records, plain or as KPL aggregates
    of 100 packed per shard as a KPL does (the consumer drops an aggregate holding a
    sub-record whose key hashes outside the shard, like the KCL)."""
    plain = [(key, orjson.dumps(event)) for key, event in make_events(records)]
    name = create_stream(url, shards)
    if not aggregated:
        fill(url, name, plain, 500)
        return name
    blobs = []
    for group in by_shard(url, name, plain):
        for start in range(0, len(group), 100):
            chunk = group[start:start + 100]
            blobs.append((chunk[0][0], aggregate([(k, None, d) for k, d in chunk])))
    fill(url, name, blobs, 100)
    return name


def run_reader(name: str, url: str, stream: str, records: int, aggregated: bool,
               pythonpath: str | None = None, rounds: int = 2) -> dict[str, Any]:
    """One reader contender in its own process (its figures, or why it did not run)."""
    env = dict(os.environ)
    root = str(ROOT)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (pythonpath, os.environ.get("PYTHONPATH"), root) if p)
    command = [sys.executable, "-m", "benchmarks.contenders.readers", name, "--url", url,
               "--stream", stream, "--records", str(records), "--rounds", str(rounds)]
    if aggregated:
        command.append("--aggregated")
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, timeout=900,
                          check=False)
    lines = proc.stdout.decode().strip().splitlines()
    if not lines:
        return {"name": name, "status": "failed", "reason": proc.stderr.decode()[-500:]}
    result: dict[str, Any] = orjson.loads(lines[-1])
    if result.get("status") == "failed":
        print(proc.stderr.decode()[-2000:], file=sys.stderr)
    return result


def throughput(ep: Endpoint, records: int, shards: int, only: Sequence[str],
               baseline: str | None) -> list[dict[str, Any]]:
    rows = []
    names = [n for n in CONTENDERS if not only or n in only]
    for aggregated in (False, True):
        label = "KPL aggregates of 100" if aggregated else "plain"
        runs: list[tuple[str, str, str | None]] = [(n, n, None) for n in names]
        if baseline:
            runs.append(("shardflow", "shardflow (baseline)", baseline))
        for contender, shown_as, path in runs:
            # a fresh stream each: no reader gets the endpoint's cache warmed by another
            stream = filled_stream(ep.url, records, shards, aggregated)
            print(f"[{ep.name}] {shown_as}: {records:,} {label} records ...", file=sys.stderr)
            result = run_reader(contender, ep.url, stream, records, aggregated, path)
            rows.append({"endpoint": ep.name, "input": label, "contender": shown_as,
                         **result})
    return rows


# --- latency ------------------------------------------------------------------------------


async def measure_latency(
    url: str, name: str, count: int, interval: float, poll: float, fan_out: bool
) -> dict[str, Any]:
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    cpu0 = _cpu()
    async with Consumer(name, endpoint_url=url, start_at="LATEST", poll_interval=poll,
                        fan_out="bench-latency" if fan_out else False) as c:
        # Every shard has its LATEST iterator or subscription (and is idle) before the
        # first put.
        with anyio.fail_after(30):
            while (c.stats().subscriptions if fan_out  # noqa: ASYNC110 - polling counters
                   else c.stats().get_records_calls) < 8:
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
    cpu = _cpu() - cpu0
    latencies.sort()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "reader": "fan-out (SubscribeToShard)" if fan_out else "polling (GetRecords)",
        "cpu_s": cpu,
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


def latency(ep: Endpoint, count: int, interval: float, poll: float) -> list[dict[str, Any]]:
    rows = []
    for fan_out in (False, True):
        name = create_stream(ep.url, 8)
        print(f"[{ep.name}] latency ({'fan-out' if fan_out else 'polling'}): {count} records, "
              f"one every {interval}s over 8 shards ...", file=sys.stderr)
        rows.append({"endpoint": ep.name, **anyio.run(measure_latency, ep.url, name, count,
                                                      interval, poll, fan_out)})
    return rows


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    parser.add_argument("--only", action="append", default=[], metavar="CONTENDER",
                        help=f"throughput: only this reader ({', '.join(CONTENDERS)})")
    parser.add_argument("--baseline", metavar="SRC",
                        help="throughput: also run the shardflow reader with this src folder "
                             "first on PYTHONPATH (before/after in one run)")
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
                rows += throughput(ep, records, args.shards, args.only, args.baseline)
            if not args.skip_latency:
                lat += latency(ep, args.latency_records, args.latency_interval, args.poll)

    if rows:
        print("\nRead and deliver: each reader in its own process, TRIM_HORIZON, "
              "~200-byte JSON records. CPU µs/record: the first read, in a fresh process; "
              "2nd read: the whole stream again in the same process (a long-running "
              "reader's cost)\n")
        print(markdown_table(
            ["endpoint", "input", "reader", "records/s", "CPU µs/record", "2nd read"],
            [[r["endpoint"], r["input"], r["contender"],
              fmt_int(r["records_per_s"]) if r.get("status") == "ok" else r.get("status", "?"),
              fmt_float(r["cpu_us_per_record"], 2) if r.get("status") == "ok"
              else str(r.get("reason", ""))[:60],
              fmt_float(r.get("steady_cpu_us_per_record"), 2)]
             for r in rows],
            align="lllrrr",
        ))
    if lat:
        print("\nPut-to-delivery latency, 8 mostly idle shards, LATEST (client CPU: the "
              "whole run, writer included)\n")
        print(markdown_table(
            ["endpoint", "reader", "records", "poll_interval s", "p50 s", "p90 s", "p99 s",
             "max s", "client CPU s"],
            [[r["endpoint"], r["reader"], fmt_int(r["records"]), fmt_float(r["poll_interval"], 1),
              fmt_float(r["p50_s"], 3), fmt_float(r["p90_s"], 3), fmt_float(r["p99_s"], 3),
              fmt_float(r["max_s"], 3), fmt_float(r["cpu_s"], 2)] for r in lat],
            align="llrrrrrrr",
        ))
    path = write_results("consumer", {"throughput": rows, "latency": lat,
                                      "command": " ".join(["python -m benchmarks.consumer",
                                                           *(argv or sys.argv[1:])])},
                         directory=args.out)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
