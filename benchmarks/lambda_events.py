"""Reading a Lambda Kinesis event: CPU µs per user record with ``lambda_records``.

    python -m benchmarks.lambda_events [--records N] [--repeat N] [--out DIR]

The workload is ``--records`` JSON click events of ~200 bytes with 1,000 user ids
(:func:`benchmarks.common.make_events`), shaped as Lambda hands them to a function
(base64 data, one event of at most 10,000 Kinesis records per batch) in two ways: one
Kinesis record per event (plain), and KPL aggregates of at most 50 KiB (the KPL's
default, packed with shardflow's ``AggregateBuilder``). The events are built before the
clock starts. Contenders, each turning every event into user records with their data as
bytes:

- shardflow: ``lambda_records(event)``, and ``lambda_records(event, shards=...)`` (the
  KCL's whole-aggregate range check, one shard covering every key);
- aws-kinesis-agg (the AWS library for deaggregating in Lambda): ``deaggregate_records``
  plus ``base64.b64decode`` of each record's data (it hands data back base64-encoded).

Each runs ``--repeat`` times; the fastest run is reported. Both must return every user
record, or the run fails. No endpoint is involved: ``--endpoint`` is accepted and ignored.

Prints a Markdown table and writes ``benchmarks/results/lambda_events.json``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from shardflow import Shard, lambda_records
from shardflow.aggregation import AggregateBuilder
from shardflow.shardmap import MAX_HASH_KEY

from benchmarks.aggregation import best_of, row
from benchmarks.common import (
    RESULTS_DIR,
    add_common_arguments,
    fmt_float,
    fmt_int,
    make_events,
    markdown_table,
    write_results,
)

SHARD = "shardId-000000000000"
ARN = "arn:aws:kinesis:us-east-1:123456789012:stream/clicks"
BATCH = 10_000
"""Lambda's largest batch size for a Kinesis event source mapping."""


def lambda_events(blobs: Sequence[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """(partition key, data) Kinesis records as Lambda events of at most BATCH records."""
    items = []
    for n, (key, data) in enumerate(blobs):
        seq = str(49_650_000_000_000_000_000_000_000_000_000_000_000_000_000_000 + n)
        items.append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": key,
                    "sequenceNumber": seq,
                    "data": base64.b64encode(data).decode(),
                    "approximateArrivalTimestamp": 1714564800.0 + n / 1000,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{SHARD}:{seq}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
                "awsRegion": "us-east-1",
                "eventSourceARN": ARN,
            }
        )
    return [{"Records": items[i : i + BATCH]} for i in range(0, len(items), BATCH)]


def aggregated(records: Sequence[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    builder = AggregateBuilder(max_bytes=51_200)
    first = ""
    for key, data in records:
        if not builder:
            first = key
        if builder.try_add(key, None, data) < 0:
            out.append((first, builder.build()))
            builder.clear()
            first = key
            builder.try_add(key, None, data)
    if builder:
        out.append((first, builder.build()))
    return out


def shardflow_read(events: Sequence[dict[str, Any]], shards: list[Shard] | None) -> list[bytes]:
    return [r.data for event in events for r in lambda_records(event, shards=shards)]


def aws_read(events: Sequence[dict[str, Any]]) -> list[bytes]:
    from aws_kinesis_agg.deaggregator import deaggregate_records

    return [
        base64.b64decode(item["kinesis"]["data"])
        for event in events
        for item in deaggregate_records(event["Records"])
    ]


def run(count: int, repeat: int) -> list[dict[str, Any]]:
    records = [(pk, orjson.dumps(ev)) for pk, ev in make_events(count)]
    expected = [data for _, data in records]
    whole = [Shard(SHARD, 0, MAX_HASH_KEY)]
    contenders: list[tuple[str, Callable[[Sequence[dict[str, Any]]], list[bytes]]]] = [
        ("shardflow", lambda events: shardflow_read(events, None)),
        ("shardflow, shards=", lambda events: shardflow_read(events, whole)),
    ]
    try:
        import aws_kinesis_agg  # noqa: F401

        contenders.append(("aws-kinesis-agg", aws_read))
    except ImportError:
        print("aws-kinesis-agg is not installed: shardflow alone", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    for shape, kinesis_records in (("plain", records), ("KPL aggregates", aggregated(records))):
        events = lambda_events(kinesis_records)
        for name, read in contenders:
            m, got = best_of(repeat, lambda read=read, events=events: read(events))
            if got != expected:
                raise SystemExit(f"{name} lost or changed records of the {shape} events")
            rows.append(row(name, shape, m, count, kinesis_records=len(kinesis_records)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.lambda_events",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    add_common_arguments(parser, records=100_000)
    parser.add_argument("--repeat", type=int, default=5, help="runs per contender, best kept")
    args = parser.parse_args(argv)
    if args.records < 1 or args.repeat < 1:
        parser.error("--records and --repeat must be at least 1")
    rows = run(args.records, args.repeat)
    table = markdown_table(
        ["contender", "events", "Kinesis records", "µs/record", "CPU µs/record", "records/s"],
        [
            [
                r["contender"],
                r["phase"],
                fmt_int(r["kinesis_records"]),
                fmt_float(r["us_per_record"], 2),
                fmt_float(r["cpu_us_per_record"], 2),
                fmt_int(r["records_per_s"]),
            ]
            for r in rows
        ],
        align="llrrrr",
    )
    print(table)
    path = write_results(
        "lambda_events",
        {"records": args.records, "repeat": args.repeat, "results": rows, "table": table},
        directory=args.out or RESULTS_DIR,
    )
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
