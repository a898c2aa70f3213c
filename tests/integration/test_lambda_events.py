"""lambda_records on events built from real records: written to moto and kinesalite (plain,
KPL aggregates made by aws-kinesis-agg, and aggregates made by shardflow's producer),
read back with GetRecords and shaped as Lambda shapes them (AWS Lambda Developer Guide:
one shard per batch, ``kinesis.data`` base64, ``approximateArrivalTimestamp`` in epoch
seconds, ``eventID`` "<shard id>:<sequence number>"; aggregates are NOT unpacked).

aws-kinesis-agg's ``deaggregate_records`` (AWS's library for deaggregating inside Lambda)
is the reference reading of each event.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import orjson
from aws_kinesis_agg import deaggregator
from aws_kinesis_agg.aggregator import RecordAggregator

from shardflow import Producer, PutResult, Record, Shard, lambda_records
from shardflow.shardmap import hash_key

from support import ROOT, create_stream, kinesis, list_shards, read_stream

REGION = "us-east-1"


def lambda_events(name: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events Lambda would pass: one per shard, its records in shard order."""
    arn = f"arn:aws:kinesis:{REGION}:123456789012:stream/{name}"
    by_shard: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for raw in records:
        by_shard[raw["ShardId"]].append(
            {
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": raw["PartitionKey"],
                    "sequenceNumber": raw["SequenceNumber"],
                    "data": base64.b64encode(raw["Data"]).decode(),
                    "approximateArrivalTimestamp": raw["ApproximateArrivalTimestamp"].timestamp(),
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": f"{raw['ShardId']}:{raw['SequenceNumber']}",
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
                "awsRegion": REGION,
                "eventSourceARN": arn,
            }
        )
    return [{"Records": items} for items in by_shard.values()]


Seen = tuple[str, str, "int | None", str, bytes]
"""(shard id, sequence number, sub-sequence number, partition key, data)."""


def theirs(event: dict[str, Any]) -> list[Seen]:
    """aws-kinesis-agg's reading of a Lambda event."""
    out: list[Seen] = []
    for item in deaggregator.deaggregate_records(event["Records"]):
        k = item["kinesis"]
        sub = k.get("subSequenceNumber") if k.get("aggregated") else None
        shard = item["eventID"].partition(":")[0]
        out.append(
            (shard, k["sequenceNumber"], sub, k["partitionKey"], base64.b64decode(k["data"]))
        )
    return out


def ours(records: list[Record]) -> list[Seen]:
    return [
        (r.shard_id, r.sequence_number, r.sub_sequence_number, r.partition_key, r.data)
        for r in records
    ]


def kpl(subs: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """(partition key, blob) of an aggregate built by aws-kinesis-agg; it is put under the
    first sub-record's key, as aws-kinesis-agg hands it out."""
    aggregator = RecordAggregator()
    for key, data in subs:
        assert aggregator.add_user_record(key, data) is None
    pk, _, blob = aggregator.clear_and_get().get_contents()
    return pk, blob


async def read_back(url: str, name: str) -> list[dict[str, Any]]:
    return await anyio.to_thread.run_sync(read_stream, url, name)


async def test_plain_and_kpl_records_read_as_aws_kinesis_agg_reads_them(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    client = kinesis(kinesis_url)
    shards = [Shard.from_api(s) for s in list_shards(kinesis_url, name)]
    keys = [f"user-{i}" for i in range(40)]
    by_shard = [[k for k in keys if s.contains(hash_key(k))][:5] for s in shards]
    fitting: set[tuple[str, bytes]] = set()
    for n in range(4):  # aggregates whose keys all hash into the shard they land on
        subs = [(by_shard[n % 2][i % 5], f"agg{n}-{i}".encode()) for i in range(25)]
        pk, blob = kpl(subs)
        client.put_record(StreamName=name, PartitionKey=pk, Data=blob)
        client.put_record(StreamName=name, PartitionKey=f"p{n}", Data=b"plain-%d" % n)
        fitting |= set(subs) | {(f"p{n}", b"plain-%d" % n)}
    # One aggregate of keys from both shards: it lands on its first key's shard only.
    straddling = [(by_shard[i % 2][0], b"both-%d" % i) for i in range(6)]
    pk, blob = kpl(straddling)
    client.put_record(StreamName=name, PartitionKey=pk, Data=blob)

    events = lambda_events(name, await read_back(kinesis_url, name))
    assert len(events) == 2
    read: list[Record] = []
    for event in events:
        got = lambda_records(event)
        assert ours(got) == theirs(event)  # every sub-record, as Lambda code would see them
        read += got
    assert {(r.partition_key, r.data) for r in read} == fitting | set(straddling)
    assert len(read) == len(fitting) + len(straddling)
    # With the shards, the straddling aggregate is dropped whole (KCL AggregatorUtil):
    # a KPL-class producer sends all of it again to the right shards.
    kept = [r for e in events for r in lambda_records(e, shards=shards)]
    assert {(r.partition_key, r.data) for r in kept} == fitting
    assert len(kept) == len(fitting)


async def test_the_aggregating_producer_read_through_lambda(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    events = [(f"k{i % 30}", b'{"n":%d}' % i) for i in range(600)]
    async with Producer(name, endpoint_url=kinesis_url, aggregate=True, linger=0.05) as producer:
        futures = [await producer.put(data, partition_key=key) for key, data in events]
        results: list[PutResult] = await asyncio.gather(*futures)
    announced = {
        (r.shard_id, r.sequence_number, r.sub_sequence_number): event
        for r, event in zip(results, events, strict=True)
    }
    assert any(sub is not None for _, _, sub in announced)
    records = await read_back(kinesis_url, name)
    assert len(records) < len(events) / 10  # aggregated
    shards = [Shard.from_api(s) for s in list_shards(kinesis_url, name)]
    seen: dict[tuple[str, str, int | None], tuple[str, bytes]] = {}
    for event in lambda_events(name, records):
        got = lambda_records(event, shards=shards)
        assert ours(got) == theirs(event)
        seen |= {
            (r.shard_id, r.sequence_number, r.sub_sequence_number): (r.partition_key, r.data)
            for r in got
        }
    assert seen == announced  # every record where its PutResult said, once


def test_the_lambda_handler_example() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "lambda_handler.py")],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"2 Lambda batches held \d+ Kinesis records", proc.stdout), proc.stdout
    assert "handler processed 300 orders, 300 distinct" in proc.stdout


def test_the_benchmark_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.lambda_events", "--records", "3000", "--repeat",
         "1", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = orjson.loads((tmp_path / "lambda_events.json").read_bytes())["results"]
    assert {(r["contender"], r["phase"]) for r in rows} >= {
        ("shardflow", "plain"), ("shardflow", "KPL aggregates"),
        ("aws-kinesis-agg", "plain"), ("aws-kinesis-agg", "KPL aggregates"),
    }
    assert all(r["records"] == 3000 for r in rows)
