"""Building blocks of :class:`shardflow.testing.FaultProxy` (private).

AWS-shaped error responses, connection resets, entry sizes, token buckets, the cached
per-stream shard maps and the iterator-to-shard table. Nothing here does I/O except
:class:`ShardMaps`, which calls a fetch coroutine it is given.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from ..shardmap import ShardMap

log = logging.getLogger("shardflow.testing")

AMZ_JSON = "application/x-amz-json-1.1"
ACCOUNT = "123456789012"
"""Account id written into error messages (moto's default account)."""

THROTTLED = "ProvisionedThroughputExceededException"
INTERNAL_FAILURE = "InternalFailure"
SERVICE_UNAVAILABLE = "ServiceUnavailable"
EXPIRED_ITERATOR = "ExpiredIteratorException"

HOP_BY_HOP = frozenset(
    {
        "host",
        "content-length",
        "content-encoding",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "date",
        "server",
    }
)
"""Headers the proxy never copies between the two connections (aiohttp sets its own)."""

SIGNING_HEADERS = ("Authorization", "X-Amz-Date", "X-Amz-Security-Token", "User-Agent")
"""Headers copied from a client request onto the proxy's own ListShards calls, so that the
upstream sees the same account and region (local upstreams do not check signatures)."""


# --- responses --------------------------------------------------------------------------


_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazonaws.kinesis.v20131202/"


def error_response(status: int, code: str, message: str) -> web.Response:
    """An AWS JSON 1.1 protocol error, as Kinesis writes it."""
    body = f'{{"__type":"{code}","message":{_json_str(message)}}}'.encode()
    return web.Response(
        status=status,
        body=body,
        headers={
            "Content-Type": AMZ_JSON,
            "x-amzn-RequestId": str(uuid.uuid4()),
            "x-amzn-ErrorType": f"{code}:{_ERROR_NAMESPACE}",
        },
    )


def json_response(body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    """A 200 response with ``body``, keeping the upstream's own headers when given."""
    out = dict(headers) if headers else {"x-amzn-RequestId": str(uuid.uuid4())}
    out["Content-Type"] = AMZ_JSON
    return web.Response(status=200, body=body, headers=out)


def _json_str(text: str) -> str:
    return orjson.dumps(text).decode()


def throttle_message(stream: str, shard_id: str | None) -> str:
    if shard_id:
        return f"Rate exceeded for shard {shard_id} in stream {stream} under account {ACCOUNT}."
    return f"Rate exceeded for stream {stream} under account {ACCOUNT}."


INTERNAL_FAILURE_MESSAGE = "Internal service failure."
SERVICE_UNAVAILABLE_MESSAGE = "Service is unavailable. Please retry the request."


def expired_message() -> str:
    now = int(time.time() * 1000)
    return (
        f"Iterator expired. The iterator was created at time {now - 301_000} while right now "
        f"it is {now} which is further in the future than the tolerated delay of 300000 "
        "milliseconds."
    )


def reset_connection(request: web.BaseRequest) -> None:
    """Drop the client's connection without an answer: a TCP reset where possible."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            # Linger 0: close() sends RST instead of FIN, as a dying load balancer does.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:  # pragma: no cover - platform dependent
            pass
    transport.abort()


def dropped() -> web.Response:
    """What a handler returns after :func:`reset_connection`: aiohttp cannot write it."""
    return web.Response(status=500)


def copy_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` without hop-by-hop and framing headers."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


# --- records ----------------------------------------------------------------------------


def b64_size(data: object) -> int:
    """Decoded length of a base64 string, without decoding it."""
    if not isinstance(data, str):
        return 0
    n = len(data)
    pad = 2 if data.endswith("==") else 1 if data.endswith("=") else 0
    return n * 3 // 4 - pad


def entry_size(entry: Mapping[str, Any]) -> int:
    """Bytes an entry counts against a shard's write limit: data plus partition key."""
    key = entry.get("PartitionKey")
    key_bytes = len(key.encode()) if isinstance(key, str) else 0
    return b64_size(entry.get("Data")) + key_bytes


def valid_entries(records: object) -> bool:
    """True when ``records`` looks like a PutRecords ``Records`` list the proxy can split."""
    return (
        isinstance(records, list)
        and bool(records)
        and all(isinstance(r, dict) and isinstance(r.get("PartitionKey"), str) for r in records)
    )


# --- token buckets ----------------------------------------------------------------------


class TokenBucket:
    """A bucket of ``rate`` tokens per second holding at most one second's worth.

    Starts full. :meth:`spend` may take it below zero (a debt repaid by refill), which is
    how AWS paces reads after a large GetRecords answer.
    """

    __slots__ = ("_last", "rate", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.rate = float(rate)
        self.tokens = self.rate
        self._last = now

    def refill(self, now: float) -> float:
        if now > self._last:
            self.tokens = min(self.rate, self.tokens + (now - self._last) * self.rate)
            self._last = now
        return self.tokens

    def spend(self, amount: float) -> None:
        self.tokens -= amount


class WriteBudget:
    """A shard's write budget: records and bytes per second."""

    __slots__ = ("bytes", "records")

    def __init__(self, records_per_s: int, bytes_per_s: int, now: float) -> None:
        self.records = TokenBucket(records_per_s, now)
        self.bytes = TokenBucket(bytes_per_s, now)

    def take(self, size: int, now: float) -> bool:
        """Spend one record of ``size`` bytes if both buckets hold enough; else False."""
        if self.records.refill(now) < 1 or self.bytes.refill(now) < size:
            return False
        self.records.spend(1)
        self.bytes.spend(size)
        return True


class ReadBudget:
    """A shard's read budget: GetRecords calls per second, and bytes per second."""

    __slots__ = ("bytes", "calls")

    def __init__(self, calls_per_s: int, bytes_per_s: int, now: float) -> None:
        self.calls = TokenBucket(calls_per_s, now)
        self.bytes = TokenBucket(bytes_per_s, now)

    def admit(self, now: float) -> bool:
        """Spend one call if a call token is left and no byte debt is outstanding."""
        if self.calls.refill(now) < 1 or self.bytes.refill(now) <= 0:
            return False
        self.calls.spend(1)
        return True


# --- shard maps -------------------------------------------------------------------------


@dataclass(slots=True)
class _MapEntry:
    ranges: ShardMap
    quiet_until: float = 0.0
    stale: bool = False


Fetch = Callable[[dict[str, str], Mapping[str, str]], Awaitable["ShardMap | None"]]


class ShardMaps:
    """Cached shard maps per stream, fetched again after :meth:`mark_stale`.

    ``fetch(stream_params, client_headers)`` returns fresh ranges, or None when the
    upstream could not tell. When a refresh finds the same shards as before (an upstream
    writing to shards other than ListShards says, as moto does after a split), staleness
    is ignored for ``quiet`` seconds so that ListShards is not called on every request.
    """

    def __init__(self, fetch: Fetch, quiet: float = 1.0) -> None:
        self._fetch = fetch
        self._quiet = quiet
        self._maps: dict[str, _MapEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.refreshes = 0

    def cached(self, stream: str) -> ShardMap | None:
        entry = self._maps.get(stream)
        return entry.ranges if entry else None

    def mark_stale(self, stream: str) -> None:
        entry = self._maps.get(stream)
        if entry is not None and not entry.stale and time.monotonic() >= entry.quiet_until:
            log.debug("shard map of %s is stale", stream)
            entry.stale = True

    def _fresh(self, stream: str) -> ShardMap | None:
        entry = self._maps.get(stream)
        return entry.ranges if entry is not None and not entry.stale else None

    async def get(
        self, stream: str, params: dict[str, str], headers: Mapping[str, str]
    ) -> ShardMap | None:
        """The stream's shard map, fetched when missing or stale; None if unavailable.

        Cancellation propagates (the cached map is left as it was).
        """
        ranges = self._fresh(stream)
        if ranges is not None:
            return ranges
        lock = self._locks.setdefault(stream, asyncio.Lock())
        async with lock:
            ranges = self._fresh(stream)
            if ranges is not None:
                return ranges
            fetched = await self._fetch(params, headers)
            self.refreshes += 1
            old = self._maps.get(stream)
            if fetched is None:
                return old.ranges if old else None
            entry = _MapEntry(fetched)
            if old is not None and old.ranges.shards == fetched.shards:
                entry.quiet_until = time.monotonic() + self._quiet
            self._maps[stream] = entry
            return fetched

    def clear(self) -> None:
        self._maps.clear()


class IteratorShards:
    """Which (stream, shard) each shard iterator reads, for the newest ``capacity`` ones."""

    __slots__ = ("_capacity", "_map")

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._map: dict[str, tuple[str, str]] = {}

    def add(self, iterator: object, where: tuple[str, str]) -> None:
        if not isinstance(iterator, str) or not iterator:
            return
        self._map[iterator] = where
        if len(self._map) > self._capacity:
            del self._map[next(iter(self._map))]

    def get(self, iterator: object) -> tuple[str, str] | None:
        return self._map.get(iterator) if isinstance(iterator, str) else None

    def discard(self, iterator: object) -> None:
        if isinstance(iterator, str):
            self._map.pop(iterator, None)
