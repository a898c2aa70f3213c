"""boto3, the synchronous default: put_records of 500 events at a time, one call after
another, failed entries sent again."""

from __future__ import annotations

import importlib.util
import time

import orjson

from . import RunContext

NAME = "boto3_sequential"
DESCRIPTION = "boto3 put_records, 500 per call, sequential"
AGGREGATES = False


def unavailable() -> str | None:
    if importlib.util.find_spec("boto3") is None:
        return "boto3 is not installed (pip install -e '.[bench]')"
    return None


def run(ctx: RunContext) -> None:
    import boto3  # type: ignore[import-untyped]

    client = boto3.client("kinesis", endpoint_url=ctx.url, region_name=ctx.region)
    client.describe_stream_summary(StreamName=ctx.stream)  # warm-up
    events = ctx.events
    with ctx.timer:
        for i in range(0, len(events), 500):
            entries = [{"Data": orjson.dumps(event), "PartitionKey": key}
                       for key, event in events[i:i + 500]]
            for _ in range(20):
                answer = client.put_records(StreamName=ctx.stream, Records=entries)
                if not answer["FailedRecordCount"]:
                    break
                entries = [e for e, r in zip(entries, answer["Records"], strict=True)
                           if "ErrorCode" in r]
                time.sleep(0.1)
            else:
                raise RuntimeError(f"{len(entries)} records still failing after 20 tries")
