"""What shardflow's OpenTelemetry metrics cost on the producer's and consumer's hot paths.

    python -m benchmarks.metrics [--records N] [--repeat R] [--out DIR]

Each run is its own process against the fast fake Kinesis (4 shards, its own process):
the producer puts ``--records`` ~200-byte JSON events (1,000 partition keys) and flushes;
the consumer reads as many from a stream filled beforehand (not timed). Three modes:

- ``off``: OpenTelemetry cannot be imported (as without the ``otel`` extra): no meter.
- ``api``: the API is installed but no SDK is set up: the global provider's no-op
  instruments (what a library user who never configures metrics pays).
- ``sdk``: the SDK's MeterProvider with an in-memory reader, collected every 0.5 s
  during the run (callbacks included).

Runs alternate between modes (``--repeat`` rounds); the table shows the median client
CPU µs per record (getrusage of the process over the timed region) and records/s, and the
CPU added per record against ``off``. Writes ``<out>/metrics.json`` and ``metrics.md``.
Timings are never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
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
    fmt_float,
    fmt_int,
    machine_info,
    make_events,
    markdown_table,
    write_results,
)
from .compare import _client, create_stream
from .fake_kinesis import fake_kinesis

SHARDS = 4
MODES = ("off", "api", "sdk")
ROLES = ("producer", "consumer")


class _NoOpenTelemetry:
    """A meta-path finder refusing opentelemetry, as if the extra were not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


def _provider(mode: str) -> tuple[Any, Any]:
    """(meter_provider to pass, reader to collect) for ``mode``."""
    if mode != "sdk":
        return None, None
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


async def _collecting(reader: Any) -> None:
    while True:
        await asyncio.sleep(0.5)
        reader.get_metrics_data()


async def _produce(url: str, stream: str, records: int, mode: str) -> dict[str, Any]:
    from shardflow import Producer

    from .common import Timer

    provider, reader = _provider(mode)
    events = make_events(records)
    async with Producer(stream, endpoint_url=url, rate_limit=None,
                        meter_provider=provider) as producer:
        await producer.put_and_wait(b"warm-up", partition_key="w")
        collector = asyncio.ensure_future(_collecting(reader)) if reader else None
        async with Timer(sample_rss=False) as timer:
            put = producer.put
            for key, event in events:
                await put(event, partition_key=key)
            await producer.flush()
        if collector is not None:
            collector.cancel()
        stats = producer.stats()
    if reader is not None:
        reader.get_metrics_data()
    assert timer.result is not None
    return {"delivered": stats.delivered - 1, "failed": stats.failed,
            "seconds": timer.result.seconds, "cpu_seconds": timer.result.cpu_seconds}


async def _consume(url: str, stream: str, records: int, mode: str) -> dict[str, Any]:
    from shardflow import Consumer

    from .common import Timer

    provider, reader = _provider(mode)
    got = 0
    async with Consumer(stream, endpoint_url=url, poll_interval=0.2,
                        meter_provider=provider) as consumer:
        collector = asyncio.ensure_future(_collecting(reader)) if reader else None
        async with Timer(sample_rss=False) as timer:
            async for batch in consumer.batches():
                got += len(batch)
                if got >= records:
                    break
        if collector is not None:
            collector.cancel()
    assert timer.result is not None
    return {"delivered": got, "failed": records - got,
            "seconds": timer.result.seconds, "cpu_seconds": timer.result.cpu_seconds}


def _child(role: str, mode: str, url: str, stream: str, records: int) -> dict[str, Any]:
    if mode == "off":
        sys.meta_path.insert(0, _NoOpenTelemetry())
    run = _produce if role == "producer" else _consume
    result = asyncio.run(run(url, stream, records, mode))
    loaded = any(m.startswith("opentelemetry") for m in sys.modules)
    return {**result, "role": role, "mode": mode, "opentelemetry_loaded": loaded}


def _fill(url: str, stream: str, records: int) -> None:
    client = _client(url)
    events = make_events(records)
    for start in range(0, records, 500):
        chunk = events[start:start + 500]
        entries = [{"Data": orjson.dumps(e), "PartitionKey": key} for key, e in chunk]
        while entries:
            answer = client.put_records(StreamName=stream, Records=entries)
            entries = [e for e, r in zip(entries, answer["Records"], strict=True)
                       if "ErrorCode" in r]


def _run(url: str, role: str, mode: str, records: int) -> dict[str, Any]:
    stream = f"bench-metrics-{uuid.uuid4().hex[:8]}"
    create_stream(url, stream, SHARDS)
    if role == "consumer":
        _fill(url, stream, records)
    cmd = [sys.executable, "-m", "benchmarks.metrics", "--child", role, mode, url, stream,
           str(records)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=bench_env(), timeout=900,
                          check=False)
    if proc.returncode != 0:
        return {"role": role, "mode": mode, "status": f"failed: {proc.stderr[-500:]}"}
    result: dict[str, Any] = orjson.loads(proc.stdout.strip().splitlines()[-1])
    result["status"] = "ok" if result["delivered"] == records else "incomplete"
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--child"]:
        role, mode, url, stream, records = args_list[1:6]
        print(dumps_line(_child(role, mode, url, stream, int(records))), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m benchmarks.metrics",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_common_arguments(parser, records=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every mode")
    args = parser.parse_args(args_list)
    runs: list[dict[str, Any]] = []
    # the producer's fake keeps nothing; the consumer's keeps records for GetRecords
    with fake_kinesis(shards=SHARDS) as sink, fake_kinesis(shards=SHARDS, store=True) as source:
        for round_ in range(args.repeat):
            for role in ROLES:
                for mode in MODES:
                    (sink if role == "producer" else source).reset()  # frees the last run
                    url = sink.url if role == "producer" else source.url
                    result = _run(url, role, mode, args.records)
                    runs.append(result)
                    cpu = result.get("cpu_seconds")
                    print(f"[{round_ + 1}/{args.repeat}] {role} {mode}: {result['status']}"
                          + (f", {cpu * 1e6 / args.records:.2f} CPU µs/record" if cpu else ""),
                          file=sys.stderr, flush=True)
    rows = []
    for role in ROLES:
        base = None
        for mode in MODES:
            ok = [r for r in runs if r["role"] == role and r["mode"] == mode
                  and r["status"] == "ok"]
            if not ok:
                rows.append([role, mode, "-", "-", "-", "failed"])
                continue
            cpu_us = statistics.median(r["cpu_seconds"] for r in ok) * 1e6 / args.records
            rate = statistics.median(args.records / r["seconds"] for r in ok)
            if mode == "off":
                base = cpu_us
            added = "-" if base is None or mode == "off" else f"{cpu_us - base:+.2f}"
            loaded = "yes" if any(r["opentelemetry_loaded"] for r in ok) else "no"
            rows.append([role, mode, fmt_float(cpu_us, 2), added, fmt_int(rate), loaded])
    machine = machine_info()
    command = "python -m benchmarks.metrics " + " ".join(args_list)
    text = "\n".join([
        f"### Metrics cost: {args.records:,} records per run, median of {args.repeat}, "
        f"fake Kinesis ({SHARDS} shards)",
        "",
        markdown_table(["path", "metrics", "CPU µs/record", "added µs/record", "records/s",
                        "opentelemetry imported"], rows),
        "",
        f"Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), Python "
        f"{machine['python']}. Command: `{command.strip()}`",
    ])
    print(text)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.md").write_text(text + "\n", encoding="utf-8")
    path = write_results("metrics", {"command": command.strip(), "records": args.records,
                                     "runs": runs}, directory=out)
    print(f"\nJSON: {path}", file=sys.stderr)
    return 0 if all(r["status"] == "ok" for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
