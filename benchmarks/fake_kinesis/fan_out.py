"""Enhanced fan-out in the fake: stream consumers and SubscribeToShard subscriptions.

RegisterStreamConsumer (ACTIVE at once), DescribeStreamConsumer, ListStreamConsumers,
DeregisterStreamConsumer. A :class:`Subscription` resolves its StartingPosition like
GetShardIterator and turns the shard's stored records into event-stream messages in AWS's
binary framing (prelude with lengths and CRC32, string headers, JSON payload, message
CRC32): an ``initial-response`` event first, then ``SubscribeToShardEvent`` events.
The HTTP side (chunked streaming, pushing on every put, heartbeats, the 5-minute end) is
the server's. Written from the AWS documentation, independently of shardflow's reader.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any
from zlib import crc32

import orjson

from . import reads
from .streams import Shard, Stream
from .validation import KinesisError

__all__ = ["FanOut", "Subscription", "event_message"]

MAX_EVENT_RECORDS = 10_000
MAX_EVENT_BYTES = 1024 * 1024
"""AWS pushes at most about 1 MiB per event (2 MiB/s per consumer and shard)."""


def event_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers (type 7)."""
    head = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value))
        + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    message = prelude + struct.pack(">I", crc32(prelude)) + head + payload
    return message + struct.pack(">I", crc32(message))


INITIAL_RESPONSE = event_message(
    {":message-type": "event", ":event-type": "initial-response",
     ":content-type": "application/json"}, b"{}")
_EVENT_HEADERS = {":message-type": "event", ":event-type": "SubscribeToShardEvent",
                  ":content-type": "application/json"}


class Subscription:
    """One subscription: its shard and the position of the next record to push."""

    __slots__ = ("consumer_arn", "position", "shard", "stream")

    def __init__(self, stream: Stream, shard: Shard, position: int, consumer_arn: str) -> None:
        self.stream = stream
        self.shard = shard
        self.position = position
        self.consumer_arn = consumer_arn

    @property
    def pending(self) -> bool:
        stored = self.stream.stored
        return stored is not None and self.position < len(stored[self.shard.index])

    def event(self) -> bytes:
        """The next SubscribeToShardEvent: records from the position on (up to ~1 MiB),
        the continuation sequence number, MillisBehindLatest."""
        stored = self.stream.stored
        records: list[dict[str, Any]] = []
        behind = 0
        position = self.position
        if stored is not None:
            kept = stored[self.shard.index]
            size = 0
            end = min(len(kept), position + MAX_EVENT_RECORDS)
            while position < end:
                arrival, data, pk = kept[position]
                size += len(data) * 3 // 4 + len(pk)
                if records and size > MAX_EVENT_BYTES:
                    break
                position += 1
                records.append({"SequenceNumber": self.shard.sequence(position),
                                "ApproximateArrivalTimestamp": arrival, "Data": data,
                                "PartitionKey": pk})
            if position < len(kept):
                behind = max(0, int((time.time() - kept[position][0]) * 1000))
        self.position = position
        closed = self.shard.closed_at
        if closed is not None and position >= closed:  # the last event: where to go next
            payload = orjson.dumps({"Records": records, "ContinuationSequenceNumber": None,
                                    "MillisBehindLatest": 0,
                                    "ChildShards": self.shard.child_shards()})
        else:
            payload = orjson.dumps({"Records": records,
                                    "ContinuationSequenceNumber": self.shard.sequence(position),
                                    "MillisBehindLatest": behind})
        return event_message(_EVENT_HEADERS, payload)

    @property
    def ended(self) -> bool:
        """True once the last event of a closed shard was made."""
        closed = self.shard.closed_at
        return closed is not None and self.position >= closed


class FanOut:
    """The fake's stream consumers and the watchers of its shards."""

    def __init__(self, streams: dict[str, Stream], stream_of: Callable[[dict[str, Any]], Stream]
                 ) -> None:
        self._streams = streams
        self._stream_of = stream_of
        self.consumers: dict[str, dict[str, Any]] = {}  # consumer ARN -> description
        self.watchers: dict[tuple[str, int], set[Callable[[], None]]] = {}

    def ops(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "RegisterStreamConsumer": self.register,
            "DescribeStreamConsumer": self.describe,
            "ListStreamConsumers": self.list_consumers,
            "DeregisterStreamConsumer": self.deregister,
        }

    def _find(self, req: dict[str, Any]) -> dict[str, Any]:
        arn = req.get("ConsumerARN")
        if arn is None:
            stream = self._stream_of(req)
            name = req.get("ConsumerName")
            arn = next((a for a, c in self.consumers.items()
                        if c["StreamARN"] == stream.arn and c["ConsumerName"] == name), None)
        found = self.consumers.get(arn) if isinstance(arn, str) else None
        if found is None:
            raise KinesisError("ResourceNotFoundException", "Consumer not found.",
                               "consumer_not_found")
        return found

    def register(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream_of(req)
        name = req.get("ConsumerName")
        if not isinstance(name, str) or not name:
            raise KinesisError("InvalidArgumentException", "ConsumerName is required.",
                               "bad_request")
        if any(c["StreamARN"] == stream.arn and c["ConsumerName"] == name
               for c in self.consumers.values()):
            raise KinesisError("ResourceInUseException", f"Consumer {name} exists.",
                               "consumer_exists")
        created = time.time()
        arn = f"{stream.arn}/consumer/{name}:{int(created)}"
        self.consumers[arn] = {"ConsumerName": name, "ConsumerARN": arn,
                               "ConsumerStatus": "ACTIVE", "ConsumerCreationTimestamp": created,
                               "StreamARN": stream.arn}
        return {"Consumer": {k: v for k, v in self.consumers[arn].items() if k != "StreamARN"}}

    def describe(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"ConsumerDescription": dict(self._find(req))}

    def list_consumers(self, req: dict[str, Any]) -> dict[str, Any]:
        stream = self._stream_of(req)
        return {"Consumers": [{k: v for k, v in c.items() if k != "StreamARN"}
                              for c in self.consumers.values() if c["StreamARN"] == stream.arn]}

    def deregister(self, req: dict[str, Any]) -> dict[str, Any]:
        del self.consumers[self._find(req)["ConsumerARN"]]
        return {}

    def subscribe(self, req: dict[str, Any]) -> Subscription:
        """A subscription at the request's StartingPosition (errors as AWS answers them)."""
        consumer = self._find(req)
        name = consumer["StreamARN"].rsplit("/", 1)[1]
        stream = self._streams.get(name)
        if stream is None:
            raise KinesisError("ResourceNotFoundException", f"Stream {name} not found.",
                               "stream_not_found")
        start = req.get("StartingPosition")
        if not isinstance(start, dict):
            raise KinesisError("InvalidArgumentException", "StartingPosition is required.",
                               "bad_request")
        iterator_req = {"ShardId": req.get("ShardId"), "ShardIteratorType": start.get("Type"),
                        "StartingSequenceNumber": start.get("SequenceNumber"),
                        "Timestamp": start.get("Timestamp")}
        token = reads.get_shard_iterator(stream, iterator_req)["ShardIterator"]
        _, _, index, position, _ = reads.decode_token(token, "ShardIterator")
        return Subscription(stream, stream.shards[index], position, consumer["ConsumerARN"])

    def watch(self, sub: Subscription, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` after each put to ``sub``'s shard; returns the unwatch function."""
        key = (sub.stream.name, sub.shard.index)
        self.watchers.setdefault(key, set()).add(wake)

        def unwatch() -> None:
            watchers = self.watchers.get(key)
            if watchers is not None:
                watchers.discard(wake)
                if not watchers:
                    del self.watchers[key]

        return unwatch

    def notify(self, stream: Stream, shard_indexes: set[int]) -> None:
        for index in shard_indexes:
            for wake in list(self.watchers.get((stream.name, index), ())):
                wake()
