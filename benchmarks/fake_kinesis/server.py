"""A small, fast HTTP/1.1 server for the fake: asyncio protocol, keep-alive, Content-Length.

One request at a time per connection, answered in order; ``latency`` delays every answer
(without blocking other connections). ``GET /_stats`` and ``POST /_reset`` reach the
fake's counters; ``POST /`` with ``X-Amz-Target: Kinesis_20131202.<Op>`` runs an operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
from collections import deque
from collections.abc import Callable

import orjson

from .backend import KinesisFake
from .fan_out import INITIAL_RESPONSE, Subscription
from .validation import KinesisError

__all__ = ["HOST", "serve"]

HOST = "127.0.0.1"
TARGET_PREFIX = "Kinesis_20131202."
SUBSCRIBE = TARGET_PREFIX + "SubscribeToShard"
HEARTBEAT = 1.0
"""Seconds between events on an idle subscription."""
LIFETIME = 300.0
"""Seconds a subscription lasts, as on AWS."""
MAX_BODY = 32 * 1024 * 1024
MAX_HEAD = 64 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 411: "Length Required",
            413: "Payload Too Large", 431: "Request Header Fields Too Large",
            500: "Internal Server Error"}


def _response(status: int, body: bytes, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/x-amz-json-1.1\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"x-amzn-RequestId: {os.urandom(16).hex()}\r\n{extra}\r\n"
    )
    return head.encode("latin-1") + body


class Server:
    """Routes HTTP requests to the fake; handles /_stats and /_reset."""

    def __init__(self, fake: KinesisFake, latency: float = 0.0,
                 subscription_seconds: float = 300.0) -> None:
        self.fake = fake
        self.latency = latency
        self.subscription_seconds = subscription_seconds

    def respond(self, method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
        if method == "POST" and path == "/":
            target = headers.get("x-amz-target", "")
            if not target.startswith(TARGET_PREFIX):
                return self._error(KinesisError(
                    "UnknownOperationException", f"Unknown X-Amz-Target {target!r}",
                    "unknown_operation"))
            try:
                return _response(200, self.fake.call(target[len(TARGET_PREFIX):], body))
            except KinesisError as exc:
                return self._error(exc)
            except Exception as exc:  # a bug in the fake: answer like AWS, report it
                print(f"fake_kinesis: internal error: {exc!r}", file=sys.stderr, flush=True)
                rejected = self.fake.stats["rejected"]
                rejected["internal"] = rejected.get("internal", 0) + 1
                return self._error(KinesisError("InternalFailure", repr(exc), "internal", 500))
        if method == "GET" and path == "/_stats":
            return _response(200, orjson.dumps(self.fake.snapshot()))
        if method == "POST" and path == "/_reset":
            self.fake.reset()
            return _response(200, b"{}")
        return _response(404, b'{"message":"not found"}')

    @staticmethod
    def _error(exc: KinesisError) -> bytes:
        body = orjson.dumps({"__type": exc.code, "message": exc.message})
        return _response(exc.status, body, f"x-amzn-ErrorType: {exc.code}\r\n")


class HTTPConnection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies; one request at a time, in order."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: tuple[str, str, dict[str, str], bool] | None = None
        self.body_start = 0
        self.need = 0
        self.pending: deque[tuple[float, bytes, bool]] = deque()
        self.closing = False
        self.loop = asyncio.get_running_loop()
        self.stream: EventStream | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.closing = True
        self.pending.clear()
        if self.stream is not None:
            self.stream.stop()
            self.stream = None

    def _subscribe(self, body: bytes) -> None:
        """SubscribeToShard: an error answer, or this connection becomes an event stream."""
        fake = self.server.fake
        stats = fake.stats
        stats["requests"] += 1
        ops = stats["operations"]
        ops["SubscribeToShard"] = ops.get("SubscribeToShard", 0) + 1
        try:
            request = orjson.loads(body)
            if not isinstance(request, dict):
                raise KinesisError("SerializationException", "Request body must be a JSON "
                                   "object", "bad_json")
            sub = fake.fan_out.subscribe(request)
        except orjson.JSONDecodeError:
            self._send(Server._error(KinesisError(
                "SerializationException", "Malformed JSON request body", "bad_json")),
                close=False)
            return
        except KinesisError as exc:
            self._send(Server._error(exc), close=False)
            return
        assert self.transport is not None
        self.stream = EventStream(self, sub)
        self.stream.start()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while not self.closing:
            if self.head is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        self._fail(431)
                    return
                if not self._parse_head(bytes(buf[:end]).decode("latin-1"), end):
                    return
            if len(buf) < self.need:
                return
            assert self.head is not None
            method, path, headers, keep_alive = self.head
            body = bytes(buf[self.body_start:self.need])
            del buf[:self.need]
            self.head = None
            if headers.get("x-amz-target") == SUBSCRIBE and method == "POST" and path == "/":
                self._subscribe(body)
                return  # the connection is the subscription's until it ends
            self._send(self.server.respond(method, path, headers, body), close=not keep_alive)

    def _parse_head(self, text: str, end: int) -> bool:
        lines = text.split("\r\n")
        try:
            method, path, version = lines[0].split(" ", 2)
        except ValueError:
            self._fail(400)
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            self._fail(411)
            return False
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._fail(413)
            return False
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        self.head = (method, path.split("?", 1)[0], headers, keep_alive)
        self.body_start = end + 4
        self.need = end + 4 + length
        if headers.get("expect", "").lower() == "100-continue" and len(self.buf) < self.need:
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return True

    def _fail(self, status: int) -> None:
        self.buf.clear()
        self._send(_response(status, b"{}"), close=True)

    def _send(self, response: bytes, *, close: bool) -> None:
        if close:
            self.closing = True
        latency = self.server.latency
        if latency <= 0 and not self.pending:
            self._write(response, close)
            return
        due = self.loop.time() + latency
        self.pending.append((due, response, close))
        if len(self.pending) == 1:
            self.loop.call_at(due, self._flush)

    def _flush(self) -> None:
        now = self.loop.time()
        while self.pending and self.pending[0][0] <= now + 0.0005:
            _, response, close = self.pending.popleft()
            self._write(response, close)
        if self.pending:
            self.loop.call_at(self.pending[0][0], self._flush)

    def _write(self, response: bytes, close: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(response)
        if close:
            self.transport.close()
            self.transport = None
            self.pending.clear()


class EventStream:
    """A SubscribeToShard answer on one connection: chunked event-stream messages, an
    event at once, one after every put to the shard, a heartbeat event every
    ``HEARTBEAT`` seconds, and the end of the stream after the server's
    ``subscription_seconds`` (``LIFETIME``, 5 minutes, by default)."""

    def __init__(self, conn: HTTPConnection, sub: Subscription) -> None:
        self.conn = conn
        self.sub = sub
        self.loop = conn.loop
        self.unwatch: Callable[[], None] | None = None
        self.scheduled = False
        self.last_sent = 0.0
        self.timers: list[asyncio.TimerHandle] = []

    def start(self) -> None:
        head = ("HTTP/1.1 200 OK\r\nContent-Type: application/vnd.amazon.eventstream\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n"
                f"x-amzn-RequestId: {os.urandom(16).hex()}\r\n\r\n")
        self._write(head.encode("latin-1"))
        self._chunk(INITIAL_RESPONSE)
        self.unwatch = self.conn.server.fake.fan_out.watch(self.sub, self.wake)
        self.push()
        self.timers.append(self.loop.call_later(HEARTBEAT, self.heartbeat))
        lifetime = self.conn.server.subscription_seconds
        self.timers.append(self.loop.call_later(lifetime, self.end))

    def wake(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self.push)

    def push(self) -> None:
        self.scheduled = False
        if self.unwatch is None:
            return  # ended
        self._chunk(self.sub.event())
        while self.sub.pending:
            self._chunk(self.sub.event())
        if self.sub.ended:
            self.end()

    def heartbeat(self) -> None:
        if self.loop.time() - self.last_sent >= HEARTBEAT * 0.9:
            self.push()
        self.timers.append(self.loop.call_later(HEARTBEAT, self.heartbeat))

    def end(self) -> None:
        self._write(b"0\r\n\r\n")
        self.stop()
        transport = self.conn.transport
        if transport is not None:
            transport.close()

    def stop(self) -> None:
        if self.unwatch is not None:
            self.unwatch()
            self.unwatch = None
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()

    def _chunk(self, message: bytes) -> None:
        self.last_sent = self.loop.time()
        self._write(f"{len(message):x}\r\n".encode() + message + b"\r\n")

    def _write(self, data: bytes) -> None:
        transport = self.conn.transport
        if transport is not None:
            transport.write(data)


async def serve(
    fake: KinesisFake, *, port: int = 0, latency: float = 0.0,
    announce: Callable[[str], None] = print, subscription_seconds: float = LIFETIME,
) -> None:
    """Serve ``fake`` on 127.0.0.1:``port`` until cancelled or SIGTERM/SIGINT.

    ``announce`` receives the URL once the socket listens.
    """
    loop = asyncio.get_running_loop()
    server = Server(fake, latency, subscription_seconds)
    listener = await loop.create_server(
        lambda: HTTPConnection(server), HOST, port, reuse_address=True, backlog=256
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    bound = listener.sockets[0].getsockname()[1]
    announce(f"http://{HOST}:{bound}")
    # Start-up garbage is never collected again; young objects die young (no cycles in
    # the hot path), so collections stay rare and cheap.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        await stop.wait()
    finally:
        listener.close()
