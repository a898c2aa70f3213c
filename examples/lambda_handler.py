"""A Lambda function reading a stream written with KPL aggregation: ``lambda_records``.

    python examples/lambda_handler.py

Lambda hands the function the raw Kinesis records of one shard's batch: data in base64,
and a KPL aggregate (what ``Producer(aggregate=True)`` and the KPL write) as ONE record.
``handler`` below is a complete Lambda handler: ``lambda_records`` decodes and unpacks the
batch into the same Records the Consumer delivers (sub-sequence numbers included), and
the stream's shards, listed once per container, let it drop an aggregate that landed on
the wrong shard, as the KCL does (its records are sent again by the producer).

Run as a script, it plays Lambda on the embedded local endpoint: it writes 300 orders
with an aggregating producer, reads each shard with GetRecords, shapes each batch as
Lambda does and calls ``handler``. Deploy the module with shardflow in the package and
the event source mapping's ReportBatchItemFailures on; the handler needs
kinesis:ListShards besides what the mapping needs.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

from _resources import client, create_stream
from shardflow import Producer, Record, Shard, lambda_records, local_endpoint

STREAM = "orders"
ORDERS = 300

_shards: dict[str, Shard] = {}
"""The stream's shards, listed at the first invocation of a container (cold start) and
again when a batch comes from a shard born since (after a reshard)."""


def stream_shards(event: dict[str, Any]) -> list[Shard]:
    first = event["Records"][0] if event["Records"] else None
    if first is not None and first["eventID"].partition(":")[0] not in _shards:
        import boto3  # provided by the Lambda Python runtime

        arn: str = first["eventSourceARN"]
        kinesis = boto3.client(
            "kinesis",
            region_name=arn.split(":")[3],
            endpoint_url=os.environ.get("KINESIS_ENDPOINT_URL"),  # unset on AWS
        )
        for page in kinesis.get_paginator("list_shards").paginate(StreamName=arn.split("/")[-1]):
            _shards.update((s["ShardId"], Shard.from_api(s)) for s in page["Shards"])
    return list(_shards.values())


PROCESSED: list[int] = []


def process(record: Record) -> None:
    order = record.json()
    if order["total"] < 0:
        raise ValueError(f"order {order['order']} has a negative total")
    PROCESSED.append(order["order"])


def handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """The Lambda entry point (a Kinesis event source mapping)."""
    for record in lambda_records(event, shards=stream_shards(event)):
        try:
            process(record)
        except Exception:
            # Lambda checkpoints Kinesis records, not user records: retrying from this
            # sequence number redelivers the whole aggregate it came in, so processing
            # must be idempotent (key it by sequence and sub-sequence number).
            return {"batchItemFailures": [{"itemIdentifier": record.sequence_number}]}
    return {"batchItemFailures": []}


# --- playing Lambda locally -------------------------------------------------------------


async def lambda_batches(endpoint_url: str) -> list[dict[str, Any]]:
    """One event per shard, shaped as Lambda shapes them (AWS Lambda Developer Guide)."""
    events = []
    async with client("kinesis", endpoint_url) as kinesis:
        summary = await kinesis.describe_stream_summary(StreamName=STREAM)
        arn = summary["StreamDescriptionSummary"]["StreamARN"]
        for shard in (await kinesis.list_shards(StreamName=STREAM))["Shards"]:
            iterator = (
                await kinesis.get_shard_iterator(
                    StreamName=STREAM, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )
            )["ShardIterator"]
            page = await kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            records = [
                {
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": raw["PartitionKey"],
                        "sequenceNumber": raw["SequenceNumber"],
                        "data": base64.b64encode(raw["Data"]).decode(),
                        "approximateArrivalTimestamp": raw[
                            "ApproximateArrivalTimestamp"
                        ].timestamp(),
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": f"{shard['ShardId']}:{raw['SequenceNumber']}",
                    "eventName": "aws:kinesis:record",
                    "awsRegion": "us-east-1",
                    "eventSourceARN": arn,
                }
                for raw in page["Records"]
            ]
            events.append({"Records": records})
    return events


async def main(endpoint_url: str) -> None:
    await create_stream(endpoint_url, STREAM, shards=2)
    async with Producer(STREAM, endpoint_url=endpoint_url, aggregate=True, linger=0.05) as p:
        for n in range(ORDERS):
            await p.put({"order": n, "total": n % 50}, partition_key=f"customer-{n % 11}")
        await p.flush()
    events = await lambda_batches(endpoint_url)
    raw = sum(len(event["Records"]) for event in events)
    os.environ["KINESIS_ENDPOINT_URL"] = endpoint_url  # where stream_shards lists shards
    for event in events:
        answer = await asyncio.to_thread(handler, event, None)
        assert answer == {"batchItemFailures": []}, answer
    print(f"{len(events)} Lambda batches held {raw} Kinesis records (KPL aggregates)")
    print(f"handler processed {len(PROCESSED)} orders, {len(set(PROCESSED))} distinct")


if __name__ == "__main__":
    # The local endpoint accepts any credentials; boto3 (in stream_shards) wants some.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    with local_endpoint() as url:
        asyncio.run(main(url))
