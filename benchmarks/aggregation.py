"""The KPL aggregation codec: CPU µs per user record to aggregate and to deaggregate.

    python -m benchmarks.aggregation [--records N] [--repeat N] [--max-bytes N] [--out DIR]

The workload is ``--records`` JSON click events of ~200 bytes with 1,000 user ids as
partition keys (:func:`benchmarks.common.make_events`), serialised before the clock
starts. Each contender packs them, in order, into aggregates of at most ``--max-bytes``
(50 KiB, the KPL default), then unpacks every aggregate again:

- shardflow: ``AggregateBuilder.try_add`` + ``build``, then ``deaggregate``;
- aws-kinesis-agg (the AWS library, protobuf runtime): ``RecordAggregator.add_user_record``
  + ``get_contents``, then ``iter_deaggregate_records`` (boto3 format; it hands data back
  base64-encoded, as Lambda does, which is part of its cost).

Each phase runs ``--repeat`` times; the fastest run is reported (wall and CPU µs per
record of this process). shardflow's ``deaggregate`` uses protobuf's C parser when it is
installed (the ``protobuf`` extra): two more rows time the protobuf parse alone, in C
(``parse_upb``) and in Python (``parse_in_python``, what runs without the extra). The
shard-lookup rows time ``hash_key`` and a 4-shard ``ShardMap.shard_for_key`` (which
caches keys) for the producer's per-record budget.
Both codecs must round-trip every record, and each must read the other's aggregates,
or the run fails. No endpoint is involved: ``--endpoint`` is accepted and ignored.

Prints a Markdown table and writes ``benchmarks/results/aggregation.json``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from shardflow._core.aggregate_parser import parse_in_python, parse_upb
from shardflow.aggregation import AggregateBuilder, deaggregate
from shardflow.models import Shard
from shardflow.shardmap import MAX_HASH_KEY, ShardMap, hash_key

from benchmarks.common import (
    RESULTS_DIR,
    Measurement,
    Timer,
    add_common_arguments,
    fmt_float,
    fmt_int,
    make_events,
    markdown_table,
    write_results,
)

UserRecord = tuple[str, None, bytes]


# --- contenders ---------------------------------------------------------------------------


def shardflow_encode(records: Sequence[UserRecord], max_bytes: int) -> list[bytes]:
    out: list[bytes] = []
    builder = AggregateBuilder(max_bytes=max_bytes)
    try_add = builder.try_add
    for pk, ehk, data in records:
        if try_add(pk, ehk, data) < 0:
            out.append(builder.build())
            builder.clear()
            try_add(pk, ehk, data)
    if builder:
        out.append(builder.build())
    return out


def shardflow_decode(blobs: Sequence[bytes]) -> list[tuple[str, str | None, bytes]]:
    out: list[tuple[str, str | None, bytes]] = []
    for blob in blobs:
        records = deaggregate(blob)
        if records is None:
            raise AssertionError("shardflow could not read an aggregate")
        out.extend(records)
    return out


def aws_encode(records: Sequence[UserRecord], max_bytes: int) -> list[bytes]:
    from aws_kinesis_agg.aggregator import RecordAggregator

    out: list[bytes] = []
    aggregator = RecordAggregator(max_size=max_bytes)
    add = aggregator.add_user_record
    for pk, ehk, data in records:
        full = add(pk, data, ehk)
        if full is not None:
            out.append(full.get_contents()[2])
    last = aggregator.clear_and_get()
    if last is not None:
        out.append(last.get_contents()[2])
    return out


def aws_decode(blobs: Sequence[bytes]) -> list[tuple[str, str | None, bytes]]:
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    wrapped = [
        {"Data": b, "PartitionKey": "p", "SequenceNumber": "1", "ApproximateArrivalTimestamp": 0}
        for b in blobs
    ]
    out: list[tuple[str, str | None, bytes]] = []
    for item in iter_deaggregate_records(wrapped, data_format="Boto3"):
        k = item["kinesis"]
        out.append((k["partitionKey"], k["explicitHashKey"], base64.b64decode(k["data"])))
    return out


# --- measuring ---------------------------------------------------------------------------


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[Measurement, Any]:
    """Run ``fn`` ``repeat`` times; the fastest wall-clock run and its result."""
    best: Measurement | None = None
    result: Any = None
    for _ in range(repeat):
        with Timer() as timer:
            result = fn()
        assert timer.result is not None
        if best is None or timer.result.seconds < best.seconds:
            best = timer.result
    assert best is not None
    return best, result


def row(name: str, phase: str, m: Measurement, count: int, **extra: Any) -> dict[str, Any]:
    return {
        "contender": name,
        "phase": phase,
        "records": count,
        "us_per_record": m.seconds * 1e6 / count,
        "cpu_us_per_record": m.cpu_us_per(count),
        "records_per_s": m.per_second(count),
        **extra,
        "measurement": m.as_dict(),
    }


def run(count: int, repeat: int, max_bytes: int) -> list[dict[str, Any]]:
    records: list[UserRecord] = [(pk, None, orjson.dumps(ev)) for pk, ev in make_events(count)]
    expected = [(pk, None, data) for pk, _, data in records]
    mean_size = sum(len(d) for _, _, d in records) / len(records)
    print(f"{count:,} records of {mean_size:.0f} bytes on average", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    contenders: list[tuple[str, Callable[..., list[bytes]], Callable[..., list[Any]]]] = [
        ("shardflow", shardflow_encode, shardflow_decode)
    ]
    try:
        import aws_kinesis_agg  # noqa: F401

        contenders.append(("aws-kinesis-agg", aws_encode, aws_decode))
    except ImportError:
        print("aws-kinesis-agg is not installed: shardflow alone", file=sys.stderr)
    blobs_by: dict[str, list[bytes]] = {}
    for name, encode, decode in contenders:
        m, blobs = best_of(repeat, lambda encode=encode: encode(records, max_bytes))
        blobs_by[name] = blobs
        sizes = [len(b) for b in blobs]
        rows.append(
            row(name, "aggregate", m, count, aggregates=len(blobs),
                mean_aggregate_bytes=sum(sizes) / len(sizes), max_aggregate_bytes=max(sizes))
        )
        m, decoded = best_of(repeat, lambda decode=decode, blobs=blobs: decode(blobs))
        if decoded != expected:
            raise SystemExit(f"{name}: decoding its own aggregates lost or changed records")
        rows.append(row(name, "deaggregate", m, count))
    ours = blobs_by["shardflow"]
    for phase, parse in (("parse, upb", parse_upb), ("parse, in Python", parse_in_python)):
        m, parsed = best_of(repeat, lambda parse=parse: [parse(b, 4, len(b) - 16) for b in ours])
        if parsed and parsed[0] is None:
            print(f"{phase}: protobuf's C parser is not installed", file=sys.stderr)
            continue
        if [r for records in parsed for r in records] != expected:
            raise SystemExit(f"shardflow {phase}: lost or changed records")
        rows.append(row("shardflow", phase, m, count))
    if len(blobs_by) == 2:  # each reads the other's aggregates
        if shardflow_decode(blobs_by["aws-kinesis-agg"]) != expected:
            raise SystemExit("shardflow misread aws-kinesis-agg's aggregates")
        if aws_decode(blobs_by["shardflow"]) != expected:
            raise SystemExit("aws-kinesis-agg misread shardflow's aggregates")
    keys = [pk for pk, _, _ in records]
    m, _ = best_of(repeat, lambda: [hash_key(k) for k in keys])
    rows.append(row("shardflow", "hash_key (MD5)", m, count))
    step = (MAX_HASH_KEY + 1) // 4
    shard_map = ShardMap(
        Shard(f"shardId-{i:012d}", i * step, MAX_HASH_KEY if i == 3 else (i + 1) * step - 1)
        for i in range(4)
    )
    lookup = shard_map.shard_for_key
    m, _ = best_of(repeat, lambda: [lookup(k) for k in keys])
    rows.append(row("shardflow", "shard_for_key (4 shards)", m, count))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.aggregation",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_common_arguments(parser, records=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per phase, best kept")
    parser.add_argument("--max-bytes", type=int, default=51_200,
                        help="aggregate size limit (default 51200, the KPL's)")
    args = parser.parse_args(argv)
    if args.records < 1 or args.repeat < 1:
        parser.error("--records and --repeat must be at least 1")
    rows = run(args.records, args.repeat, args.max_bytes)
    table = markdown_table(
        ["contender", "phase", "µs/record", "CPU µs/record", "records/s", "aggregates"],
        [
            [r["contender"], r["phase"], fmt_float(r["us_per_record"], 2),
             fmt_float(r["cpu_us_per_record"], 2), fmt_int(r["records_per_s"]),
             fmt_int(r.get("aggregates"))]
            for r in rows
        ],
        align="llrrrr",
    )
    print(table)
    path = write_results(
        "aggregation",
        {"records": args.records, "repeat": args.repeat, "max_bytes": args.max_bytes,
         "results": rows, "table": table},
        directory=args.out or RESULTS_DIR,
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
