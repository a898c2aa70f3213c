"""The consumer's side of the wire: GetRecords and SubscribeToShard as signed HTTP requests.

As the producer does for PutRecords, reads skip botocore's client pipeline: the body is
built with orjson, signed and POSTed by :mod:`shardflow._core.signed` (the edge's signed
requests, shared with the producer), and answered JSON is read with orjson. Records stay
in the service's JSON shape (``Data`` base64, ``ApproximateArrivalTimestamp`` epoch
seconds) until ``record_conversion`` turns them into user records.

SubscribeToShard answers with AWS's binary event stream (``application/vnd.amazon.
eventstream``): length-prefixed messages with CRC32 checks, typed headers and a JSON
payload. :class:`EventStreamDecoder` reads it. AWS's JSON protocol starts the stream
with an ``initial-response`` event; kinesis-mock sends none, which is why botocore's
parser ("First event was not of type initial-response") cannot read it: here that event
is optional.

Every failure is translated by :mod:`shardflow._core.aws`'s one error map: an error answer
through :func:`_signed.response_error`, a transport failure through
:func:`_aws.translate_error`. Cancellation propagates.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from zlib import crc32

import aiohttp
import orjson

from .. import errors
from .._core import aws as _aws
from .._core.signed import SERVICE, SignedClient, response_error

__all__ = ["EventStreamDecoder", "ReadTransport"]

_dumps = orjson.dumps
_loads = orjson.loads
_PRELUDE = struct.Struct(">III")

Events = AsyncGenerator[dict[str, Any], None]


class ReadTransport:
    """Sends the consumer's read requests (GetRecords, SubscribeToShard) through a
    started :class:`SignedClient` (its owner closes it)."""

    def __init__(self, http: SignedClient, *, read_timeout: float = 30.0) -> None:
        self._http = http
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=http.connect_timeout, sock_read=read_timeout
        )

    def __repr__(self) -> str:
        return f"ReadTransport({self._http.url!r}, region={self._http.region!r})"

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        """One JSON request (GetRecords, ...): its answer as parsed by orjson.

        Raises the translated :class:`errors.AWSError` for an error answer,
        :class:`errors.RequestTimeout` when no answer came within the read timeout,
        :class:`errors.EndpointUnreachable` for connection failures.
        """
        raw = await self._http.post(operation, _dumps(params), self._timeout)
        try:
            answer = _loads(raw)
            if not isinstance(answer, dict):
                raise TypeError("not an object")
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise _aws.error_for_code(
                "InvalidResponse", f"unreadable {operation} answer: {exc}", operation,
                SERVICE, 502,
            ) from exc
        return answer

    @asynccontextmanager
    async def subscribe(self, params: dict[str, Any]) -> AsyncIterator[Events]:
        """Open a SubscribeToShard stream; yields an iterator of its events' payloads
        (``SubscribeToShardEvent`` objects: Records, ContinuationSequenceNumber,
        MillisBehindLatest, ChildShards).

        Opening raises the translated error of an error answer (ResourceInUse,
        LimitExceeded, ResourceNotFound, ...). Iterating raises the translated error of an
        exception event (e.g. InternalFailure), :class:`errors.RequestTimeout` when no
        event came within the read timeout, :class:`errors.EndpointUnreachable` when the
        stream breaks (a bad frame included); it ends when the service ends the stream.
        Leaving the block closes the connection.
        """
        operation = "SubscribeToShard"
        response = await self._http.open(operation, _dumps(params), self._timeout)
        try:
            if response.status != 200:
                try:
                    raw = await response.read()
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    raise _aws.translate_error(OSError(str(exc)), operation) from exc
                raise response_error(
                    operation, response.status, raw, response.headers.get("x-amzn-ErrorType")
                )
            events = _events(response, operation)
            try:
                yield events
            finally:
                await events.aclose()
        finally:
            response.close()


async def _events(response: aiohttp.ClientResponse, operation: str) -> Events:
    decoder = EventStreamDecoder()
    content = response.content
    first = True
    while True:
        try:
            chunk = await content.readany()
        except asyncio.TimeoutError as exc:
            raise _aws.translate_error(TimeoutError(str(exc)), operation) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _aws.translate_error(exc, operation) from exc
        if not chunk:
            if decoder.pending:
                raise errors.EndpointUnreachable(
                    "EventStreamCut", "the event stream ended inside a message", operation
                )
            return
        try:
            messages = decoder.feed(chunk)
        except ValueError as exc:
            raise errors.EndpointUnreachable("BadEventStream", str(exc), operation) from exc
        for headers, payload in messages:
            kind = headers.get(":message-type", "event")
            if kind == "event":
                event_type = headers.get(":event-type")
                if event_type == "initial-response" and first:
                    first = False
                    continue  # AWS sends it ({}); kinesis-mock does not
                first = False
                if event_type != "SubscribeToShardEvent":
                    continue  # an event type this reader does not know
                try:
                    event = _loads(payload)
                except orjson.JSONDecodeError as exc:
                    raise errors.EndpointUnreachable(
                        "BadEventStream", f"unreadable event: {exc}", operation
                    ) from exc
                yield event
            elif kind == "exception":
                code = headers.get(":exception-type") or "UnknownException"
                message = ""
                try:
                    doc = _loads(payload) if payload else None
                    if isinstance(doc, dict):
                        message = str(doc.get("message") or doc.get("Message") or "")
                except orjson.JSONDecodeError:
                    message = payload[:200].decode("utf-8", "replace")
                raise _aws.error_for_code(code, message, operation, SERVICE)
            else:  # "error": a service-side error that is not modelled
                code = headers.get(":error-code") or "InternalFailure"
                raise _aws.error_for_code(
                    code, headers.get(":error-message") or "", operation, SERVICE, 500
                )


class EventStreamDecoder:
    """AWS event-stream framing: ``total length, headers length, prelude CRC`` (three
    big-endian uint32), headers, payload, message CRC. :meth:`feed` returns the messages
    completed by a chunk as ``(headers, payload)``; a bad length or CRC is a ValueError."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> bool:
        """True while part of a message is buffered."""
        return bool(self._buf)

    def feed(self, chunk: bytes) -> list[tuple[dict[str, str], bytes]]:
        buf = self._buf
        buf += chunk
        out: list[tuple[dict[str, str], bytes]] = []
        start = 0
        size = len(buf)
        while size - start >= 12:
            total, headers_len, prelude_crc = _PRELUDE.unpack_from(buf, start)
            if crc32(buf[start : start + 8]) != prelude_crc:
                raise ValueError("event stream prelude CRC mismatch")
            if total < 16 or headers_len > total - 16 or total > 24 * 1024 * 1024:
                raise ValueError(f"bad event stream message length {total}")
            if size - start < total:
                break
            end = start + total
            (message_crc,) = struct.unpack_from(">I", buf, end - 4)
            if crc32(buf[start : end - 4]) != message_crc:
                raise ValueError("event stream message CRC mismatch")
            head_end = start + 12 + headers_len
            headers = _headers(bytes(buf[start + 12 : head_end]))
            out.append((headers, bytes(buf[head_end : end - 4])))
            start = end
        if start:
            del buf[:start]
        return out


_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _headers(raw: bytes) -> dict[str, str]:
    """String headers by name (other value types are skipped over)."""
    out: dict[str, str] = {}
    i, n = 0, len(raw)
    while i < n:
        name_len = raw[i]
        name = raw[i + 1 : i + 1 + name_len].decode("utf-8", "replace")
        i += 1 + name_len
        kind = raw[i]
        i += 1
        if kind in (6, 7):
            (length,) = struct.unpack_from(">H", raw, i)
            value = raw[i + 2 : i + 2 + length]
            i += 2 + length
            if kind == 7:
                out[name] = value.decode("utf-8", "replace")
        elif kind in _FIXED:
            i += _FIXED[kind]
        else:
            raise ValueError(f"unknown event stream header type {kind}")
    if i != n:
        raise ValueError("event stream headers overrun")
    return out


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers (for test endpoints and the fake)."""
    head = b"".join(
        bytes([len(k)]) + k.encode() + b"\x07" + struct.pack(">H", len(v)) + v.encode()
        for k, v in ((k, v) for k, v in headers.items())
    )
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack(">II", total, len(head))
    prelude += struct.pack(">I", crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack(">I", crc32(message))
