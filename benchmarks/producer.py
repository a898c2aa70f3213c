"""shardflow's Producer: records/s and client CPU µs per record, and memory when stalled.

    python -m benchmarks.producer [--records N] [--endpoint fake|moto|both] [--out DIR]

Throughput: ~200-byte JSON events with 1,000 user ids as partition keys
(:func:`benchmarks.common.make_events`), into a 4-shard stream of the fast fake Kinesis
(its own process) and of moto, each run in its own process through
:func:`benchmarks.compare.run_contender`. Seven runs per endpoint, in the same
invocation: ``shardflow`` (put every event, flush, check every delivery),
``shardflow_results`` (the same, then read every record's PutResult),
``shardflow_paced`` (``shardflow`` with per-shard pacing on, under limits that never
bind: what shard prediction and token buckets cost), ``shardflow_aggregated`` (KPL
aggregation; the fake counts the user records inside aggregates, and sub-records outside
their aggregate's shard, which must be none), ``shardflow_gc_tuned`` and
``shardflow_aggregated_gc_tuned`` (the same in a process that froze its start-up objects
and raised the garbage collector's first threshold: what the collector's scans of the
live delivery futures cost) and, for comparison, ``aiobotocore_naive``
(a put_records loop, 500 per call). Client CPU is getrusage user+system of the client
process over its timed region, divided by the records.

Stalled: a producer whose endpoint never answers (``shardflow proxy --latency 3600`` in
front of the fake) is fed with ``put_nowait`` until its queue is full; the table shows
what it holds against ``max_queue_bytes`` and how much its RSS grew.

Prints Markdown tables and writes ``<out>/producer.json`` and ``<out>/producer.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from .common import (
    add_common_arguments,
    bench_env,
    dumps_line,
    fmt_bytes,
    fmt_float,
    fmt_int,
    machine_info,
    make_events,
    markdown_table,
    rss_bytes,
    write_results,
)
from .compare import (
    MOTO_DEFAULT_RECORDS,
    create_stream,
    fake_endpoint,
    moto_endpoint,
    render_table,
    run_contender,
)

ROOT = Path(__file__).resolve().parent.parent
CONTENDERS = ("shardflow", "shardflow_results", "shardflow_paced", "shardflow_aggregated",
              "shardflow_gc_tuned", "shardflow_aggregated_gc_tuned", "aiobotocore_naive")
SHARDS = 4
STALLED_QUEUE_BYTES = 64 * 1024 * 1024


# --- stalled endpoint: runs in a child process ------------------------------------------


async def _stalled(url: str, stream: str, max_queue_bytes: int) -> dict[str, Any]:
    from shardflow import Producer, errors

    events = make_events(100_000)
    async with Producer(
        stream,
        endpoint_url=url,
        max_queue_bytes=max_queue_bytes,
        max_queue_records=10_000_000,
        record_ttl=3600,
        linger=0,
        rate_limit=None,
    ) as producer:
        gc.collect()
        rss_start = rss_bytes()
        accepted = 0
        while True:
            key, event = events[accepted % len(events)]
            try:
                producer.put_nowait(event, partition_key=key)
            except errors.QueueFull:
                break
            accepted += 1
            if accepted % 2000 == 0:
                await asyncio.sleep(0)  # let the sender start its (stalled) requests
        refused = 0
        for key, event in events[:1000]:  # the bound holds: more is refused, not queued
            try:
                producer.put_nowait(event, partition_key=key)
            except errors.QueueFull:
                refused += 1
        await asyncio.sleep(1.0)
        gc.collect()
        rss_full = rss_bytes()
        stats = producer.stats()
        await producer.aclose(grace=0)
    growth = None if rss_start is None or rss_full is None else rss_full - rss_start
    return {
        "accepted": accepted,
        "refused_after_full": refused,
        "queued": stats.queued,
        "queued_bytes": stats.queued_bytes,
        "in_flight": stats.in_flight,
        "max_queue_bytes": max_queue_bytes,
        "rss_growth_bytes": growth,
        "rss_over_queued_bytes": None if growth is None else growth - stats.queued_bytes,
    }


def run_stalled(fake_url: str, logs: Path) -> dict[str, Any]:
    """A producer against ``shardflow proxy --latency 3600`` in front of the fake."""
    stream = f"bench-stalled-{uuid.uuid4().hex[:8]}"
    create_stream(fake_url, stream, SHARDS)
    proxy = subprocess.Popen(
        [sys.executable, "-m", "shardflow", "proxy", "--upstream", fake_url,
         "--latency", "3600", "--quiet"],
        cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    assert proxy.stdout is not None
    try:
        url = proxy.stdout.readline().decode().strip()
        if not url.startswith("http://127.0.0.1:"):
            return {"status": "failed", "reason": f"proxy did not start (printed {url!r})"}
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "producer-stalled.log", "wb") as log:
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.producer", "--stalled-child", url, stream,
                 str(STALLED_QUEUE_BYTES)],
                cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE, stderr=log,
                timeout=300, check=False,
            )
        lines = [ln for ln in child.stdout.decode().splitlines() if ln.startswith("{")]
        if not lines:
            return {"status": "failed", "reason": f"exit status {child.returncode}"}
        result: dict[str, Any] = orjson.loads(lines[-1])
        result["status"] = "ok"
        return result
    finally:
        proxy.terminate()
        try:
            proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
        proxy.stdout.close()


def render_stalled(result: dict[str, Any]) -> str:
    if result.get("status") != "ok":
        return f"stalled run {result.get('status')}: {result.get('reason', '')}"
    headers = ["max_queue_bytes", "records accepted", "queued bytes", "RSS growth",
               "RSS growth - queued bytes", "refused once full"]
    row = [
        fmt_bytes(result["max_queue_bytes"]),
        fmt_int(result["accepted"]),
        fmt_bytes(result["queued_bytes"]),
        fmt_bytes(result["rss_growth_bytes"]),
        fmt_bytes(result["rss_over_queued_bytes"]),
        f"{result['refused_after_full']:,} of 1,000",
    ]
    return markdown_table(headers, [row])


# --- main -----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--stalled-child"]:
        url, stream, max_bytes = args_list[1:4]
        print(dumps_line(asyncio.run(_stalled(url, stream, int(max_bytes)))), flush=True)
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.producer",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_common_arguments(parser)
    parser.add_argument("--moto-records", type=int, default=None,
                        help=f"events per run on moto (default: --records, at most "
                             f"{MOTO_DEFAULT_RECORDS:,})")
    parser.add_argument("--no-stalled", action="store_true", help="skip the stalled run")
    args = parser.parse_args(args_list)
    endpoints = ["fake", "moto"] if args.endpoint == "both" else [args.endpoint]
    moto_records = args.moto_records or min(args.records, MOTO_DEFAULT_RECORDS)
    out: Path = args.out
    logs = out / "logs"

    tables: dict[str, list[dict[str, Any]]] = {}
    counts: dict[str, int] = {}
    stalled: dict[str, Any] | None = None
    for ep in endpoints:
        records = args.records if ep == "fake" else moto_records
        counts[ep] = records
        opener = fake_endpoint(SHARDS) if ep == "fake" else moto_endpoint()
        with opener as endpoint:
            results = []
            for name in CONTENDERS:
                print(f"[{ep}] {name}: {records:,} records ...", file=sys.stderr, flush=True)
                result = run_contender(endpoint, name, records=records, shards=SHARDS,
                                       timeout=900, logs=logs)
                print(f"[{ep}] {name}: {result.get('status')} "
                      f"{fmt_int(result.get('records_per_s'))} records/s, "
                      f"{fmt_float(result.get('cpu_us_per_record'))} µs/record",
                      file=sys.stderr, flush=True)
                results.append(result)
            tables[ep] = results
            if ep == "fake" and not args.no_stalled:
                print("[fake] stalled endpoint ...", file=sys.stderr, flush=True)
                stalled = run_stalled(endpoint.url, logs)

    machine = machine_info()
    lines = [f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), Python "
             f"{machine['python']}; " + ", ".join(f"{k} {v}" for k, v in
                                                   machine["packages"].items()), ""]
    for ep, results in tables.items():
        where = ("fast fake Kinesis (its own process)" if ep == "fake"
                 else "moto server (single-threaded, its own process)")
        lines += [f"### Producer: {counts[ep]:,} events of ~200 bytes, 1,000 partition keys, "
                  f"{SHARDS} shards, {where}", "", render_table(results), ""]
    if stalled is not None:
        lines += ["### Producer against an endpoint that never answers", "",
                  render_stalled(stalled), ""]
    command = "python -m benchmarks.producer " + " ".join(args_list)
    lines.append(f"Command: `{command.strip()}`")
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "producer.md").write_text(text + "\n", encoding="utf-8")
    path = write_results("producer", {"command": command.strip(), "shards": SHARDS,
                                      "records": counts, "results": tables,
                                      "stalled": stalled}, directory=out)
    print(f"\nJSON: {path}", file=sys.stderr)
    failed = [r["name"] for rs in tables.values() for r in rs
              if r.get("status") != "ok" or r.get("verdict", "ok") != "ok"]
    if stalled is not None and stalled.get("status") != "ok":
        failed.append("stalled")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
