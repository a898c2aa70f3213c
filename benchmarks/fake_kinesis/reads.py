"""GetShardIterator and GetRecords: iterators are opaque tokens naming a shard position."""

from __future__ import annotations

import binascii
import bisect
import re
import time
from typing import Any

import orjson

from .streams import ACCOUNT, Shard, Stream
from .validation import KinesisError, constraint, validation_error

__all__ = ["decode_token", "encode_token", "find_shard", "get_records", "get_shard_iterator"]

MAX_GET_RECORDS = 10_000
MAX_GET_BYTES = 10 * 1024 * 1024
ITERATOR_TTL = 300.0
"""Seconds an iterator stays valid, as on AWS."""

_SEQ = re.compile(r"^\d{56}$")
_TYPES = "[AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER, TRIM_HORIZON, LATEST, AT_TIMESTAMP]"


def encode_token(parts: list[Any]) -> str:
    return binascii.b2a_base64(orjson.dumps(parts), newline=False).decode()


def decode_token(token: Any, what: str) -> list[Any]:
    try:
        parts = orjson.loads(binascii.a2b_base64(token))
        if not isinstance(parts, list):
            raise ValueError(what)
        return parts
    except (ValueError, TypeError, binascii.Error):
        raise KinesisError("InvalidArgumentException", f"Invalid {what}.", "bad_token") from None


def _iterator(stream: Stream, shard: Shard, position: int) -> str:
    """Position p: the next record to read is the shard's (p+1)-th."""
    return encode_token([stream.name, stream.created, shard.index, position, time.time()])


def find_shard(stream: Stream, shard_id: Any) -> Shard:
    """The shard named ``shard_id`` (ResourceNotFoundException when there is none)."""
    for shard in stream.shards:
        if shard.shard_id == shard_id:
            return shard
    raise KinesisError(
        "ResourceNotFoundException",
        f"Shard {shard_id} in stream {stream.name} under account {ACCOUNT} does not exist",
        "shard_not_found",
    )


def _counter(shard: Shard, seq: Any) -> int:
    if not isinstance(seq, str) or not _SEQ.match(seq):
        raise KinesisError(
            "InvalidArgumentException",
            f"StartingSequenceNumber {seq} used in GetShardIterator on shard {shard.shard_id} "
            "is not a valid sequence number.", "bad_sequence_number",
        )
    if not seq.startswith(shard.prefix):
        raise KinesisError(
            "InvalidArgumentException",
            "Invalid StartingSequenceNumber. It encodes a different shard or stream than "
            f"{shard.shard_id}.", "bad_sequence_number",
        )
    return int(seq[len(shard.prefix):])


def get_shard_iterator(stream: Stream, req: dict[str, Any]) -> dict[str, Any]:
    shard = find_shard(stream, req.get("ShardId"))
    count = stream.counts[shard.index]
    kind = req.get("ShardIteratorType")
    if kind == "TRIM_HORIZON":
        position = 0
    elif kind == "LATEST":
        position = count
    elif kind in ("AT_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"):
        counter = _counter(shard, req.get("StartingSequenceNumber"))
        position = max(0, counter - 1 if kind == "AT_SEQUENCE_NUMBER" else counter)
    elif kind == "AT_TIMESTAMP":
        stamp = req.get("Timestamp")
        if not isinstance(stamp, (int, float)):
            raise KinesisError(
                "InvalidArgumentException",
                "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP.",
                "bad_request",
            )
        if stream.stored is None:
            position = count if stamp > time.time() else 0
        else:
            position = bisect.bisect_left(stream.stored[shard.index], stamp, key=lambda r: r[0])
    else:
        raise validation_error([constraint(
            kind, "shardIteratorType", f"Member must satisfy enum value set: {_TYPES}")],
            "bad_request")
    return {"ShardIterator": _iterator(stream, shard, position)}


def get_records(streams: dict[str, Stream], req: dict[str, Any]) -> dict[str, Any]:
    limit = req.get("Limit", MAX_GET_RECORDS)
    if not isinstance(limit, int) or not 1 <= limit <= MAX_GET_RECORDS:
        raise validation_error([constraint(
            limit, "limit", f"Member must have value between 1 and {MAX_GET_RECORDS}")],
            "bad_request")
    token = req.get("ShardIterator")
    if not isinstance(token, str):
        raise validation_error([constraint("null", "shardIterator", "Member must not be null")],
                               "bad_request")
    parts = decode_token(token, "ShardIterator")
    try:
        name, created, index, position, issued = parts
        stream = streams[name]
        if stream.created != created:
            raise KeyError(name)
        shard = stream.shards[index]
    except (ValueError, KeyError, IndexError, TypeError):
        raise KinesisError("ResourceNotFoundException",
                           "The stream or shard of this ShardIterator does not exist.",
                           "shard_not_found") from None
    now = time.time()
    if now - issued > ITERATOR_TTL:
        raise KinesisError(
            "ExpiredIteratorException",
            f"Iterator expired. The iterator was created at time {issued * 1000:.0f} while "
            f"right now it is {now * 1000:.0f} which is further in the future than the "
            f"tolerated delay of {ITERATOR_TTL * 1000:.0f} milliseconds.",
            "expired_iterator",
        )
    out: list[dict[str, Any]] = []
    behind = 0
    closed = shard.closed_at
    if stream.stored is None:  # nothing kept: always at the tip
        position = max(position, stream.counts[index])
    else:
        stored = stream.stored[index]
        size = 0
        end = min(len(stored), position + limit)
        while position < end:
            arrival, data, pk = stored[position]
            size += len(data) * 3 // 4 + len(pk)
            if out and size > MAX_GET_BYTES:
                break
            position += 1
            out.append({
                "SequenceNumber": shard.sequence(position),
                "ApproximateArrivalTimestamp": arrival,
                "Data": data,
                "PartitionKey": pk,
            })
        if position < len(stored):
            behind = max(0, int((now - stored[position][0]) * 1000))
    if closed is not None and position >= closed:  # a closed shard read to its end
        return {"Records": out, "MillisBehindLatest": 0, "ChildShards": shard.child_shards()}
    return {
        "Records": out,
        "NextShardIterator": _iterator(stream, shard, position),
        "MillisBehindLatest": behind,
    }
