"""The in-memory Kinesis behind the fake endpoint: streams, shards, writes, reads, counters.

:meth:`KinesisFake.call` takes an operation name and a JSON body and returns the JSON
answer or raises :class:`KinesisError`. PutRecords has a fast path for the common case
(well-formed entries, no ExplicitHashKey, sizes clearly within limits) that does the
least work per entry; anything else goes through the full AWS validation.
"""

from __future__ import annotations

import binascii
import re
import resource
import time
from collections.abc import Callable
from typing import Any

import orjson

from . import reads
from .aggregates import count_user_records
from .fan_out import FanOut
from .reads import decode_token, encode_token
from .streams import ACCOUNT, Stream
from .validation import (
    MAX_BATCH_BYTES,
    MAX_BATCH_RECORDS,
    MAX_KEY_CHARS,
    MAX_RECORD_BYTES,
    KinesisError,
    constraint,
    validate_put,
    validation_error,
)

__all__ = ["KinesisFake"]

AGG_B64_PREFIX = "84maw"  # base64 of the magic's first 30 bits: a cheap pre-check

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_STREAM_NAME = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_STREAM_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:kinesis:[a-z0-9-]+:\d{12}:stream/([a-zA-Z0-9_.-]+)$")

class _NotFast(Exception):
    """The fast path declines; the full validation decides."""


# (answer entries, new per-shard counts, shard index per entry, data bytes,
#  (base64 data, shard index) of each entry that may be a KPL aggregate)
Placement = tuple[list[str], list[int], list[int], int, list[tuple[str, int]]]


def _new_stats() -> dict[str, Any]:
    return {
        "requests": 0,
        "operations": {},
        "kinesis_records": 0,
        "user_records": 0,
        "bytes": 0,
        "rejected": {},
        "misrouted_user_records": 0,
        "read_records": 0,
        "first_put_at": None,
        "last_put_at": None,
    }


class KinesisFake:
    """The in-memory Kinesis (usable in-process, without the HTTP server)."""

    def __init__(
        self, *, shards: int = 4, store: bool = False, max_record_bytes: int = MAX_RECORD_BYTES
    ) -> None:
        if shards < 1:
            raise ValueError(f"shards must be >= 1, got {shards}")
        self.default_shards = shards
        self.store = store
        self.max_record_bytes = max_record_bytes
        self._max_fast_chars = (max_record_bytes // 3) * 4  # base64 chars surely within limit
        self.streams: dict[str, Stream] = {}
        self.stats = _new_stats()
        self._serial = 0
        self._ops: dict[str, Callable[[dict[str, Any]], dict[str, Any] | bytes]] = {
            "PutRecords": self.put_records,
            "PutRecord": self.put_record,
            "ListShards": self.list_shards,
            "DescribeStreamSummary": self.describe_stream_summary,
            "DescribeStream": self.describe_stream,
            "ListStreams": self.list_streams,
            "CreateStream": self.create_stream,
            "DeleteStream": self.delete_stream,
            "GetShardIterator": self.get_shard_iterator,
            "GetRecords": self.get_records,
        }
        self._ops["SplitShard"] = self.split_shard
        self.fan_out = FanOut(self.streams, lambda req: self._stream(req, create=False))
        self._ops.update(self.fan_out.ops())

    # -- plumbing ------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every stream and zero the counters."""
        self.streams.clear()
        self.fan_out.consumers.clear()
        self.stats = _new_stats()

    def snapshot(self) -> dict[str, Any]:
        """The counters, this process's CPU seconds, and per-stream record counts."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        out = dict(self.stats)
        out["operations"] = dict(self.stats["operations"])
        out["rejected"] = dict(self.stats["rejected"])
        out["cpu_seconds"] = usage.ru_utime + usage.ru_stime
        out["streams"] = {
            s.name: {"shards": len(s.shards), "kinesis_records": s.kinesis_records,
                     "user_records": s.user_records}
            for s in self.streams.values()
        }
        return out

    def call(self, operation: str, body: bytes) -> bytes:
        """Run one operation on a JSON request body: the JSON answer, or KinesisError."""
        stats = self.stats
        stats["requests"] += 1
        handler = self._ops.get(operation)
        ops = stats["operations"]
        counted = operation if handler is not None else "(unknown)"
        ops[counted] = ops.get(counted, 0) + 1
        try:
            if handler is None:
                raise KinesisError("UnknownOperationException",
                                   f"Operation {operation} is not supported.",
                                   "unknown_operation")
            try:
                request = orjson.loads(body) if body else {}
            except orjson.JSONDecodeError:
                raise KinesisError("SerializationException", "Malformed JSON request body",
                                   "bad_json") from None
            if not isinstance(request, dict):
                raise KinesisError("SerializationException", "Request body must be a JSON "
                                   "object", "bad_json")
            result = handler(request)
            return result if isinstance(result, bytes) else orjson.dumps(result)
        except KinesisError as exc:
            rejected = stats["rejected"]
            rejected[exc.reason] = rejected.get(exc.reason, 0) + 1
            raise

    def _stream(self, req: dict[str, Any], *, create: bool = True) -> Stream:
        name = req.get("StreamName")
        arn = req.get("StreamARN")
        if arn is not None:
            match = _STREAM_ARN.match(arn) if isinstance(arn, str) else None
            if match is None:
                raise validation_error([constraint(
                    arn, "streamARN", "Member must satisfy regular expression pattern: "
                    "arn:aws.*:kinesis:.*:\\d{12}:stream/\\S+")], "bad_stream")
            if name is not None and name != match.group(1):
                raise KinesisError("InvalidArgumentException",
                                   "StreamARN and StreamName do not match.", "bad_stream")
            name = match.group(1)
        if name is None:
            raise KinesisError("InvalidArgumentException",
                               "Either StreamName or StreamARN should be provided.", "bad_stream")
        stream = self.streams.get(name)
        if stream is not None:
            return stream
        if not isinstance(name, str) or not _STREAM_NAME.match(name):
            raise validation_error([constraint(
                name, "streamName", "Member must satisfy regular expression pattern: "
                "[a-zA-Z0-9_.-]+ and have length between 1 and 128")], "bad_stream")
        if not create:
            raise KinesisError("ResourceNotFoundException",
                               f"Stream {name} under account {ACCOUNT} not found.",
                               "stream_not_found")
        return self._create(name, self.default_shards)

    def _create(self, name: str, shards: int) -> Stream:
        self._serial += 1
        stream = Stream(name, shards, self.store, self._serial)
        self.streams[name] = stream
        return stream

    # -- writes --------------------------------------------------------------------------

    def put_records(self, req: dict[str, Any]) -> bytes:
        stream = self._stream(req)
        records: Any = req.get("Records")
        try:
            placement = self._place_fast(stream, records)
        except _NotFast:
            validate_put(records, batch=True, max_record_bytes=self.max_record_bytes)
            placement = self._place(stream, records)
        pieces = self._commit(stream, records, placement)
        return b'{"FailedRecordCount":0,"Records":[' + ",".join(pieces).encode() + b"]}"

    def put_record(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(req)
        members = ("Data", "PartitionKey", "ExplicitHashKey")
        entry: dict[str, Any] = {k: req[k] for k in members if k in req}
        validate_put([entry], batch=False, max_record_bytes=self.max_record_bytes)
        placement = self._place(stream, [entry])
        self._commit(stream, [entry], placement)
        index = placement[2][0]
        return {"ShardId": stream.shards[index].shard_id,
                "SequenceNumber": stream.shards[index].sequence(stream.counts[index])}

    def _place_fast(self, stream: Stream, records: Any) -> Placement:
        """Route and number well-formed entries with the least work; _NotFast otherwise.

        Per entry: lengths, trailing padding, a cached route, one formatted answer entry.
        Per request: the base64 alphabet of all data at once, the 5 MiB bound (keys at
        4 bytes per character, so a request near the limit goes the exact way).
        """
        if type(records) is not list or not 0 < len(records) <= MAX_BATCH_RECORDS:
            raise _NotFast
        heads = stream.heads
        tails = stream.tails
        counts = stream.counts[:]
        route = stream.route
        max_chars = self._max_fast_chars
        pieces: list[str] = []
        add = pieces.append
        shard_of: list[int] = []
        put = shard_of.append
        aggregates: list[tuple[str, int]] = []
        pads = 0
        key_chars = 0
        try:
            for e in records:
                d = e["Data"]
                pk = e["PartitionKey"]
                n = len(d)
                k = len(pk)
                if n & 3 or not 0 < n <= max_chars or not 0 < k <= MAX_KEY_CHARS or len(e) != 2:
                    raise _NotFast
                pads += (d[-1] == "=") + (d[-2] == "=")
                key_chars += k
                index = route.get(pk)
                if index is None:
                    index = stream.shard_for_key(pk)
                c = counts[index] + 1
                counts[index] = c
                add(f"{heads[index]}{c:020d}{tails[index]}")
                put(index)
                if d[0] == "8" and d.startswith(AGG_B64_PREFIX):
                    aggregates.append((d, index))
            joined = "".join([e["Data"] for e in records]).encode("ascii")
        except (KeyError, TypeError, AttributeError, UnicodeError):
            raise _NotFast from None
        rest = joined.translate(None, _B64_ALPHABET)
        if len(rest) != pads or rest.count(b"=") != pads:
            raise _NotFast
        data_bytes = (len(joined) >> 2) * 3 - pads
        if data_bytes + 4 * key_chars > MAX_BATCH_BYTES:
            raise _NotFast
        return pieces, counts, shard_of, data_bytes, aggregates

    def _place(self, stream: Stream, records: list[dict[str, Any]]) -> Placement:
        """Route and number validated entries (ExplicitHashKey, empty data, any size)."""
        counts = stream.counts[:]
        pieces: list[str] = []
        shard_of: list[int] = []
        aggregates: list[tuple[str, int]] = []
        data_bytes = 0
        for e in records:
            d = e["Data"]
            ehk = e.get("ExplicitHashKey")
            index = (stream.shard_for_hash(int(ehk)) if ehk is not None
                     else stream.shard_for_key(e["PartitionKey"]))
            counts[index] += 1
            pieces.append(f"{stream.heads[index]}{counts[index]:020d}{stream.tails[index]}")
            shard_of.append(index)
            data_bytes += (len(d) >> 2) * 3 - (2 if d.endswith("==") else d.endswith("="))
            if d.startswith(AGG_B64_PREFIX):
                aggregates.append((d, index))
        return pieces, counts, shard_of, data_bytes, aggregates

    def _commit(self, stream: Stream, records: list[dict[str, Any]], placement: Placement,
                ) -> list[str]:
        pieces, counts, shard_of, data_bytes, aggregates = placement
        stream.counts = counts
        if stream.stored is not None:
            now = time.time()
            stored = stream.stored
            for e, index in zip(records, shard_of, strict=True):
                stored[index].append((now, e["Data"], e["PartitionKey"]))
            if self.fan_out.watchers:
                self.fan_out.notify(stream, set(shard_of))
        users = len(records)
        for data, index in aggregates:
            users += self._sub_records(stream, data, index) - 1
        stats = self.stats
        stats["kinesis_records"] += len(records)
        stats["user_records"] += users
        stats["bytes"] += data_bytes
        now = time.time()
        if stats["first_put_at"] is None:
            stats["first_put_at"] = now
        stats["last_put_at"] = now
        stream.kinesis_records += len(records)
        stream.user_records += users
        return pieces

    def _sub_records(self, stream: Stream, data: str, index: int) -> int:
        """User records in one Kinesis record (its sub-records if it is a KPL aggregate);
        counts sub-records whose hash key lies outside the shard (the KCL drops those)."""
        users, misrouted = count_user_records(binascii.a2b_base64(data), index,
                                              stream.shard_of)
        self.stats["misrouted_user_records"] += misrouted
        return users

    # -- metadata ------------------------------------------------------------------------

    def create_stream(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req.get("StreamName")
        if not isinstance(name, str) or not _STREAM_NAME.match(name):
            raise validation_error([constraint(
                name, "streamName", "Member must satisfy regular expression pattern: "
                "[a-zA-Z0-9_.-]+")], "bad_stream")
        count = req.get("ShardCount")
        mode = (req.get("StreamModeDetails") or {}).get("StreamMode", "PROVISIONED")
        if count is None:
            if mode != "ON_DEMAND":
                raise KinesisError("InvalidArgumentException",
                                   "ShardCount is required in PROVISIONED mode.", "bad_request")
            count = self.default_shards
        if not isinstance(count, int) or not 1 <= count <= 10_000:
            raise validation_error([constraint(
                count, "shardCount", "Member must have value between 1 and 10000")], "bad_request")
        if name in self.streams:
            raise KinesisError("ResourceInUseException",
                               f"Stream {name} under account {ACCOUNT} already exists.",
                               "stream_exists")
        self._create(name, count)
        return {}

    def delete_stream(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(req, create=False)
        del self.streams[stream.name]
        return {}

    def list_streams(self, req: dict[str, Any]) -> dict[str, Any]:
        streams = sorted(self.streams.values(), key=lambda s: s.name)
        return {
            "StreamNames": [s.name for s in streams],
            "HasMoreStreams": False,
            "StreamSummaries": [
                {"StreamName": s.name, "StreamARN": s.arn, "StreamStatus": "ACTIVE",
                 "StreamModeDetails": {"StreamMode": "PROVISIONED"},
                 "StreamCreationTimestamp": s.created}
                for s in streams
            ],
        }

    def _summary(self, stream: Stream) -> dict[str, Any]:
        summary: dict[str, Any] = {
            "StreamName": stream.name,
            "StreamARN": stream.arn,
            "StreamStatus": "ACTIVE",
            "StreamModeDetails": {"StreamMode": "PROVISIONED"},
            "RetentionPeriodHours": 24,
            "StreamCreationTimestamp": stream.created,
            "EnhancedMonitoring": [{"ShardLevelMetrics": []}],
            "EncryptionType": "NONE",
        }
        if self.max_record_bytes != MAX_RECORD_BYTES:  # a raised limit is reported
            summary["MaxRecordSizeInKiB"] = self.max_record_bytes // 1024
        return summary

    def describe_stream_summary(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(req)
        summary = self._summary(stream)
        summary["OpenShardCount"] = len(stream.open)
        summary["ConsumerCount"] = 0
        return {"StreamDescriptionSummary": summary}

    def describe_stream(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream(req)
        limit = _bounded(req, "Limit", 100, 10_000)
        shards = stream.after(req.get("ExclusiveStartShardId"))
        desc = self._summary(stream)
        desc["Shards"] = [s.as_api() for s in shards[:limit]]
        desc["HasMoreShards"] = len(shards) > limit
        return {"StreamDescription": desc}

    def list_shards(self, req: dict[str, Any]) -> dict[str, Any]:
        token = req.get("NextToken")
        max_results = _bounded(req, "MaxResults", 1000, 10_000)
        if token is not None:
            if "StreamName" in req or "StreamARN" in req:
                raise KinesisError("InvalidArgumentException",
                                   "NextToken and StreamName cannot be provided together.",
                                   "bad_request")
            name, created, offset = decode_token(token, "NextToken")
            stream = self.streams.get(name)
            if stream is None or stream.created != created:
                raise KinesisError("ExpiredNextTokenException", "The NextToken has expired.",
                                   "expired_token")
            shards = stream.shards[offset:]
        else:
            stream = self._stream(req)
            shards = stream.after(req.get("ExclusiveStartShardId"))
            shard_filter = req.get("ShardFilter") or {}
            if shard_filter.get("Type") == "AFTER_SHARD_ID":
                shards = stream.after(shard_filter.get("ShardId"))
            offset = len(stream.shards) - len(shards)
        out: dict[str, Any] = {"Shards": [s.as_api() for s in shards[:max_results]]}
        if len(shards) > max_results:
            out["NextToken"] = encode_token([stream.name, stream.created, offset + max_results])
        return out

    def split_shard(self, req: dict[str, Any]) -> dict[str, Any]:
        """SplitShard, done at once: the shard closes, two children take its range."""
        stream = self._stream(req, create=False)
        shard = reads.find_shard(stream, req.get("ShardToSplit"))
        try:
            new_start = int(req["NewStartingHashKey"])
        except (KeyError, TypeError, ValueError):
            new_start = -1
        if not shard.start < new_start <= shard.end:
            raise KinesisError("InvalidArgumentException", "NewStartingHashKey must be "
                               "inside the shard's hash-key range.", "bad_request")
        if shard.closed_at is not None:
            raise KinesisError("ResourceInUseException", f"Shard {shard.shard_id} is closed.",
                               "shard_closed")
        stream.split(shard, new_start)
        if self.fan_out.watchers:  # subscribers of the parent get their last event
            self.fan_out.notify(stream, {shard.index})
        return {}

    # -- reads ---------------------------------------------------------------------------

    def get_shard_iterator(self, req: dict[str, Any]) -> dict[str, Any]:
        return reads.get_shard_iterator(self._stream(req), req)

    def get_records(self, req: dict[str, Any]) -> dict[str, Any]:
        answer = reads.get_records(self.streams, req)
        self.stats["read_records"] += len(answer["Records"])
        return answer


def _bounded(req: dict[str, Any], member: str, default: int, high: int) -> int:
    value = req.get(member, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
        raise validation_error([constraint(
            value, member[0].lower() + member[1:], f"Member must have value between 1 and {high}"
        )], "bad_request")
    return value
