"""``shardflow status STREAM``: every shard, who holds it, where it is, how far behind.

In the spirit of ``kafka-consumer-groups --describe``. Shards come from ListShards (open
and closed, hash-key range, parents). Positions come from a lease table (``--table``:
DynamoDBLeases or a KCL application's table; owner, counter, checkpoint) or an SQLite
checkpoint file (``--checkpoints``, with ``--app``). The lag of a shard is how far its
stored position is behind the tip: GetRecords with an iterator AFTER_SEQUENCE_NUMBER the
checkpoint (TRIM_HORIZON for a lease still at TRIM_HORIZON), ``Limit=1``, answers
``MillisBehindLatest`` (0: nothing left to read) and the arrival time of the next record
to process. That costs one GetShardIterator and one GetRecords per shard per refresh
(well within the 5 reads per second per shard AWS allows). A shard at SHARD_END has no
lag; one without a position (or at LATEST or AT_TIMESTAMP) shows "-".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import errors
from .._core import aws as _aws
from .._core.aws import list_shards
from ..consumer.lease_table import (
    SCOPE,
    SHARD_END_MARK,
    TRIM_HORIZON,
    KeyScheme,
    LeaseTable,
)
from ..models import Shard

__all__ = ["ShardStatus", "StatusOptions", "add_status", "collect_status", "render"]

_KEY_SPACE = 2**128


class StatusError(errors.ShardflowError):
    """A lease table or checkpoint file that does not hold what was asked for."""


@dataclass(frozen=True, slots=True)
class StatusOptions:
    stream: str
    app: str | None = None
    table: str | None = None
    checkpoints: str | None = None
    endpoint_url: str | None = None
    region_name: str | None = None


@dataclass(frozen=True, slots=True)
class Position:
    checkpoint: str  # a sequence number, or a sentinel (TRIM_HORIZON, LATEST, SHARD_END ...)
    sub_sequence_number: int | None = None
    owner: str | None = None
    counter: int | None = None


@dataclass(frozen=True, slots=True)
class ShardStatus:
    shard_id: str
    state: str  # "open" or "closed"
    parents: tuple[str, ...]
    starting_hash_key: str
    ending_hash_key: str
    owner: str | None
    lease_counter: int | None
    checkpoint: str | None
    sub_sequence_number: int | None
    millis_behind_latest: int | None
    next_record_arrival: str | None  # ISO 8601, UTC: the oldest record not yet processed


# --- positions -----------------------------------------------------------------------------


async def _lease_positions(
    stack: AsyncExitStack, options: StatusOptions, stream: str, shard_ids: set[str]
) -> dict[str, Position]:
    assert options.table is not None
    client = await _aws.open_client(
        stack, "dynamodb", endpoint_url=options.endpoint_url, region_name=options.region_name
    )
    items: list[Mapping[str, Any]] = []
    params: dict[str, Any] = {"TableName": options.table, "ConsistentRead": True}
    while True:
        try:
            page = await _aws.call(client, "scan", service="dynamodb", **params)
        except errors.ResourceNotFound as exc:  # one line: the table, region, endpoint
            raise StatusError(exc.message or str(exc)) from exc
        items.extend(page.get("Items", ()))
        if not page.get("LastEvaluatedKey"):
            break
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    # A shared table keys leases "app:stream:shardId"; a dedicated one by shard id.
    schemes = [KeyScheme("")]
    if options.app is not None:
        schemes.insert(0, KeyScheme.for_scope(options.app, stream, shared=True))
    for scheme in schemes:
        table = LeaseTable(client, options.table, scheme, scope="", owner="")
        leases = [lease for item in items if (lease := table.parse(item)) is not None]
        leases = [lease for lease in leases if lease.shard_id in shard_ids]
        if not leases:
            continue
        if options.app is not None and not scheme.shared:
            scopes = {item[SCOPE]["S"] for item in items if "S" in item.get(SCOPE, {})}
            if scopes and f"{options.app}:{stream}" not in scopes:
                raise StatusError(
                    f"table {options.table!r} holds the leases of {', '.join(sorted(scopes))}, "
                    f"not of application {options.app!r} on stream {stream!r}"
                )
        return {
            lease.shard_id: Position(
                lease.checkpoint, lease.sub_sequence_number or None, lease.owner, lease.counter
            )
            for lease in leases
        }
    whose = f"application {options.app!r} on " if options.app else ""
    raise StatusError(
        f"table {options.table!r} holds no leases of {whose}stream {stream!r} "
        f"({len(items)} items scanned)"
    )


def _checkpoint_positions(options: StatusOptions, stream: str) -> dict[str, Position]:
    """The positions SQLiteCheckpointer stored (read-only; its table shardflow_checkpoints)."""
    assert options.checkpoints is not None
    path = Path(options.checkpoints)
    if not path.is_file():
        raise StatusError(f"checkpoint file {str(path)!r} not found")
    if options.app is None:
        raise StatusError("--checkpoints needs --app (positions are kept per application)")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute(
                "SELECT shard_id, sequence_number, sub_sequence_number "
                "FROM shardflow_checkpoints WHERE app_name = ? AND stream = ?",
                (options.app, stream),
            ).fetchall()
            apps = [
                app for (app,) in conn.execute(
                    "SELECT DISTINCT app_name FROM shardflow_checkpoints WHERE stream = ?",
                    (stream,),
                )
            ]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StatusError(f"{str(path)!r} is not a shardflow checkpoint file ({exc})") from None
    if not rows:
        known = f" (applications there: {', '.join(sorted(apps))})" if apps else ""
        raise StatusError(
            f"no checkpoints of application {options.app!r} on stream {stream!r} in "
            f"{str(path)!r}{known}"
        )
    return {shard: Position(seq, sub) for shard, seq, sub in rows}


# --- lag -----------------------------------------------------------------------------------


async def _lag(
    client: Any, stream_params: dict[str, str], shard_id: str, position: Position
) -> tuple[int | None, str | None]:
    """(MillisBehindLatest, arrival of the next record) from the stored position."""
    checkpoint = position.checkpoint
    params: dict[str, Any] = dict(stream_params, ShardId=shard_id)
    if checkpoint.isdigit():
        params.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=checkpoint)
    elif checkpoint == TRIM_HORIZON:
        params["ShardIteratorType"] = TRIM_HORIZON
    else:  # SHARD_END (done), LATEST, AT_TIMESTAMP: no position to measure from
        return None, None
    iterator = (await _aws.call(client, "get_shard_iterator", **params))["ShardIterator"]
    response = await _aws.call(client, "get_records", ShardIterator=iterator, Limit=1)
    records = response.get("Records") or ()
    arrival = None
    if records:
        at = records[0].get("ApproximateArrivalTimestamp")
        if isinstance(at, datetime):
            arrival = at.astimezone(timezone.utc).isoformat(timespec="milliseconds")
    behind = response.get("MillisBehindLatest")
    return (int(behind) if behind is not None else None), arrival


# --- the whole picture ---------------------------------------------------------------------


async def collect_status(options: StatusOptions) -> list[ShardStatus]:
    """Every shard of the stream with its lease or checkpoint and its lag.

    Raises errors.StreamNotFound, errors.ResourceNotFound (a missing table),
    StatusError (a table or file without what was asked for) and other errors.AWSError.
    """
    stream = _aws.stream_name(options.stream)
    async with AsyncExitStack() as stack:
        kinesis = await _aws.open_client(
            stack, "kinesis", endpoint_url=options.endpoint_url, region_name=options.region_name
        )
        shards = await list_shards(kinesis, options.stream)
        positions: dict[str, Position] = {}
        if options.table is not None:
            positions = await _lease_positions(
                stack, options, stream, {s.shard_id for s in shards}
            )
        elif options.checkpoints is not None:
            positions = _checkpoint_positions(options, stream)
        params = _aws.stream_params(options.stream)

        async def one(shard: Shard) -> ShardStatus:
            position = positions.get(shard.shard_id)
            behind, arrival = (None, None)
            if position is not None:
                behind, arrival = await _lag(kinesis, params, shard.shard_id, position)
            return ShardStatus(
                shard_id=shard.shard_id,
                state="open" if shard.is_open else "closed",
                parents=shard.parent_ids,
                starting_hash_key=str(shard.starting_hash_key),
                ending_hash_key=str(shard.ending_hash_key),
                owner=position.owner if position else None,
                lease_counter=position.counter if position else None,
                checkpoint=position.checkpoint if position else None,
                sub_sequence_number=position.sub_sequence_number if position else None,
                millis_behind_latest=behind,
                next_record_arrival=arrival,
            )

        return list(await asyncio.gather(*(one(s) for s in shards)))


def _lag_text(status: ShardStatus) -> str:
    if status.checkpoint == SHARD_END_MARK:
        return "done"
    ms = status.millis_behind_latest
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds else "0s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _range_text(status: ShardStatus) -> str:
    low = int(status.starting_hash_key) * 100 / _KEY_SPACE
    high = (int(status.ending_hash_key) + 1) * 100 / _KEY_SPACE
    return f"{low:.1f}-{high:.1f}%"


def render(statuses: Sequence[ShardStatus], options: StatusOptions) -> str:
    """The table ``shardflow status`` prints."""
    source = (
        f"lease table {options.table}" if options.table
        else f"checkpoints {options.checkpoints}" if options.checkpoints
        else "no positions (pass --table or --checkpoints with --app)"
    )
    app = f", application {options.app}" if options.app else ""
    head = ["SHARD", "STATE", "PARENTS", "HASH RANGE", "OWNER", "CHECKPOINT", "LAG"]
    rows = [head]
    for s in statuses:
        checkpoint = s.checkpoint or "-"
        if s.sub_sequence_number is not None and checkpoint.isdigit():
            checkpoint += f"/{s.sub_sequence_number}"
        rows.append([
            s.shard_id, s.state, ",".join(s.parents) or "-", _range_text(s),
            s.owner or "-", checkpoint, _lag_text(s),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"stream {_aws.stream_name(options.stream)}{app}: {len(statuses)} shards "
             f"({sum(s.state == 'open' for s in statuses)} open), {source}"]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    return "\n".join(lines)


async def run_status(options: StatusOptions, *, as_json: bool, watch: float | None) -> int:
    tty = sys.stdout.isatty()
    while True:
        statuses = await collect_status(options)
        if as_json:
            print(json.dumps({
                "stream": _aws.stream_name(options.stream),
                "app": options.app,
                "time": time.time(),
                "shards": [asdict(s) for s in statuses],
            }), flush=True)
        else:
            text = render(statuses, options)
            if watch is not None:
                stamp = datetime.now(timezone.utc).strftime("%H:%M:%S UTC")
                text = f"{text}\n(every {watch:g}s, {stamp}; Ctrl-C stops)"
                if tty:
                    text = "\x1b[H\x1b[2J" + text  # refresh in place
                else:
                    text += "\n"
            print(text, flush=True)
        if watch is None:
            return 0
        await asyncio.sleep(watch)


# --- the command ---------------------------------------------------------------------------


def _cmd_status(args: argparse.Namespace) -> int:
    options = StatusOptions(
        stream=args.stream,
        app=args.app,
        table=args.table,
        checkpoints=args.checkpoints,
        endpoint_url=args.endpoint_url,
        region_name=args.region,
    )
    watch = args.interval if args.watch else None
    return asyncio.run(run_status(options, as_json=args.json, watch=watch))


def add_status(sub: Any, common: argparse.ArgumentParser, stream: Any, seconds: Any) -> None:
    p = sub.add_parser(
        "status",
        parents=[common],
        help="every shard of a stream: state, lease owner, checkpoint and lag",
        description="List every shard of STREAM (open or closed, hash-key range as a share "
        "of the key space, parents) with, when a lease table (--table) or an SQLite "
        "checkpoint file (--checkpoints, with --app) is given, its owner and checkpoint, "
        "and its lag: how far the stored position is behind the tip (GetRecords' "
        "MillisBehindLatest read from just after the checkpoint; 0s when nothing is left "
        "to read, 'done' at SHARD_END, '-' without a position).",
        epilog="examples:\n"
        "  shardflow status logs --table billing-leases\n"
        "  shardflow status logs --app billing --checkpoints cp.db --watch\n"
        "  shardflow status logs --table leases --json",
    )
    p.add_argument("stream", metavar="STREAM", type=stream, help="stream name or ARN")
    p.add_argument("--app", metavar="APP",
                   help="application name (its leases in a shared table, its checkpoints)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--table", metavar="TABLE",
                       help="DynamoDB lease table (DynamoDBLeases, or a KCL application's)")
    where.add_argument("--checkpoints", metavar="PATH", help="SQLiteCheckpointer file")
    p.add_argument("--watch", "-w", action="store_true",
                   help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=seconds, default=2.0, metavar="S",
                   help="seconds between refreshes with --watch (default: 2)")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per refresh (full hash keys, arrival of the next "
                   "record to process)")
    p.set_defaults(handler=_cmd_status)
