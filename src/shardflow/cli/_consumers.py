"""``shardflow consumers STREAM``: the stream's registered enhanced fan-out consumers, and
``--deregister NAME`` to remove one (registered consumers are billed per shard-hour)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from contextlib import AsyncExitStack
from datetime import datetime
from typing import Any

from .._core import aws as _aws
from ..consumer._fan_out import StreamConsumer, check_consumer_name, deregister, stream_arn

__all__ = ["add_consumers", "consumer_name", "list_consumers"]

TAIL_CONSUMER = "shardflow-tail"
"""The stream consumer `shardflow tail --fan-out` reads as when not given a name."""


def consumer_name(text: str) -> str:
    """argparse type: a stream consumer name AWS accepts."""
    try:
        return check_consumer_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(" (fan_out=")[0]) from None


async def list_consumers(
    stream: str, *, endpoint_url: str | None = None, region_name: str | None = None,
    remove: str | None = None,
) -> list[dict[str, Any]]:
    """The stream consumers of ``stream`` (after deregistering ``remove``, if given):
    name, status, creation time and ARN of each."""
    async with AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "kinesis", endpoint_url=endpoint_url,
                                        region_name=region_name)
        arn = await stream_arn(client, stream)
        if remove is not None:
            await deregister(client, StreamConsumer(remove, "", arn))
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"StreamARN": arn}
        while True:
            page = await _aws.call(client, "list_stream_consumers", **params)
            found.extend(page.get("Consumers") or ())
            token = page.get("NextToken")
            if not token:
                return found
            params = {"StreamARN": arn, "NextToken": token}


def _created(value: object) -> str:
    return value.isoformat(timespec="seconds") if isinstance(value, datetime) else str(value)


def _cmd_consumers(args: argparse.Namespace) -> int:
    remove = args.deregister
    found = asyncio.run(list_consumers(args.stream, endpoint_url=args.endpoint_url,
                                       region_name=args.region, remove=remove))
    if remove is not None:
        print(f"shardflow consumers: deregistered {remove!r} (DELETING until AWS is done)",
              file=sys.stderr)
    if args.json:
        for c in found:
            print(json.dumps({"name": c["ConsumerName"], "status": c["ConsumerStatus"],
                              "created": _created(c.get("ConsumerCreationTimestamp")),
                              "arn": c["ConsumerARN"]}))
        return 0
    if not found:
        print(f"no stream consumers registered for {args.stream}", file=sys.stderr)
        return 0
    width = max(len(c["ConsumerName"]) for c in found)
    for c in found:
        print(f"{c['ConsumerName']:<{width}}  {c['ConsumerStatus']:<8}  "
              f"{_created(c.get('ConsumerCreationTimestamp'))}  {c['ConsumerARN']}")
    return 0


def add_consumers(sub: Any, common: argparse.ArgumentParser, stream: Any) -> None:
    p = sub.add_parser(
        "consumers",
        parents=[common],
        help="list (or deregister) a stream's enhanced fan-out consumers",
        description="List the stream consumers registered for enhanced fan-out on STREAM "
        "(Consumer(fan_out=...) and `shardflow tail --fan-out` register them; each is billed "
        "per shard-hour while registered). --deregister NAME removes one first.",
        epilog="examples:\n"
        "  shardflow consumers logs\n"
        "  shardflow consumers logs --deregister shardflow-tail",
    )
    p.add_argument("stream", metavar="STREAM", type=stream, help="stream name or ARN")
    p.add_argument("--deregister", metavar="NAME", type=consumer_name,
                   help="deregister this consumer first")
    p.add_argument("--json", action="store_true", help="one JSON object per consumer")
    p.set_defaults(handler=_cmd_consumers)
