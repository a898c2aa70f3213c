"""``shardflow put`` and ``shardflow tail``: records in and out of a stream from a shell.

Both run in an event loop started by :mod:`shardflow.cli`; terminal and file I/O go
through worker threads. Expected failures raise :class:`CommandFailed` (exit 1) or
:class:`shardflow.errors.ShardflowError` subclasses, which the CLI turns into messages.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import stat
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO, Any

import anyio
import anyio.to_thread
import orjson

from .. import errors
from .._core import aws as _aws
from .._core import resources as _resources
from ..consumer import Consumer
from ..models import PutResult, Record
from ..producer import Producer

__all__ = [
    "CommandFailed",
    "PutOptions",
    "TailOptions",
    "format_record",
    "parse_start",
    "put_lines",
    "tail_stream",
]

_CHUNK = 1 << 20
_SHOWN_ERRORS = 10


class CommandFailed(Exception):
    """An expected failure: the message is for the shell user; exit status 1."""


# --- put -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PutOptions:
    stream: str
    path: str | None
    """None: standard input."""
    partition_key: str | None
    """A JSON field (dotted path) whose value is the partition key."""
    key: str | None
    """A fixed partition key."""
    aggregate: bool
    create_shards: int | None
    """Create the stream with this many shards if it does not exist."""
    endpoint_url: str | None
    region_name: str | None
    quiet: bool


def _key_function(options: PutOptions) -> Callable[[bytes], str]:
    if options.key is not None:
        fixed = options.key
        return lambda _line: fixed
    if options.partition_key is None:
        return lambda _line: uuid.uuid4().hex
    path = options.partition_key.split(".")

    def from_field(line: bytes) -> str:
        try:
            value: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise ValueError(f"not JSON, so it has no field {options.partition_key!r}") from None
        for part in path:
            if not isinstance(value, dict) or value.get(part) is None:
                raise ValueError(f"no field {options.partition_key!r}")
            value = value[part]
        if isinstance(value, dict | list):
            raise ValueError(f"field {options.partition_key!r} is not a string or a number")
        return value if isinstance(value, str) else orjson.dumps(value).decode()

    return from_field


async def _readable(fd: int) -> bool:
    """Wait until a pipe or terminal has input (False where the loop cannot watch ``fd``)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    try:
        loop.add_reader(fd, wake)
    except (NotImplementedError, PermissionError, ValueError, OSError):
        return False  # a regular file, or an event loop without add_reader
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    return True


async def _read(fd: int) -> bytes:
    """What is available on ``fd``, up to a chunk. A pipe or terminal is waited for in the
    loop, so that Ctrl-C ends the command at once (a worker thread blocked reading the
    terminal would hold the process until the next line); a file is read in a thread."""
    if not stat.S_ISREG(os.fstat(fd).st_mode) and await _readable(fd):
        return os.read(fd, _CHUNK)
    return await anyio.to_thread.run_sync(os.read, fd, _CHUNK, abandon_on_cancel=True)


async def _lines(fd: int) -> AsyncIterator[tuple[int, bytes]]:
    """(line number, line without its end of line) read from ``fd``.

    A raw read returns what is available, so lines typed or piped in slowly go out at once.
    """
    rest = b""
    number = 0
    while True:
        chunk = await _read(fd)
        if not chunk:
            break
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for line in parts:
            number += 1
            yield number, line.removesuffix(b"\r")
    if rest:
        yield number + 1, rest.removesuffix(b"\r")


@dataclass(slots=True)
class _PutCounts:
    lines: int = 0
    skipped: int = 0
    accepted: int = 0
    delivered: int = 0
    failed: int = 0
    in_aggregates: int = 0


async def put_lines(options: PutOptions, report: Callable[[str], None]) -> int:
    """Put each non-empty line as one record; return 0 if every one was delivered, else 1.

    ``report`` receives the messages for standard error (failed lines, the totals).
    Raises errors.StreamNotFound (unless ``create_shards``), other errors.AWSError
    subclasses, OSError for an unreadable file.
    """
    key_of = _key_function(options)
    counts = _PutCounts()
    errors_shown: list[str] = []

    def fail(number: int, message: str) -> None:
        counts.failed += 1
        if len(errors_shown) < _SHOWN_ERRORS:
            errors_shown.append(f"line {number}: {message}")
            report(errors_shown[-1])

    def resolved(number: int, delivery: Any) -> None:
        exc = delivery.exception()
        if exc is None:
            counts.delivered += 1
            result: PutResult = delivery.result()
            if result.sub_sequence_number is not None:
                counts.in_aggregates += 1
        else:
            fail(number, f"{type(exc).__name__}: {exc}")

    await _ensure_stream(options)
    started = time.monotonic()
    file: IO[bytes] | None = None
    if options.path is not None:
        file = await anyio.to_thread.run_sync(open, options.path, "rb")
    try:
        await _put_all(options, file, counts, key_of, fail, resolved)
    except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C
        unknown = counts.accepted - counts.delivered - counts.failed
        report(
            f"interrupted after {counts.lines:,} lines: {counts.delivered:,} records "
            f"delivered to {options.stream}, {counts.failed:,} failed, {unknown:,} not "
            "confirmed (they may or may not be in the stream)"
        )
        raise
    finally:
        if file is not None:
            await anyio.to_thread.run_sync(file.close)
    if counts.failed > len(errors_shown):
        report(f"... and {counts.failed - len(errors_shown)} more failed lines")
    if not options.quiet:
        seconds = time.monotonic() - started
        packed = f" ({counts.in_aggregates:,} in KPL aggregates)" if options.aggregate else ""
        skipped = f", {counts.skipped:,} empty lines skipped" if counts.skipped else ""
        report(
            f"put {counts.delivered:,} of {counts.lines - counts.skipped:,} records into "
            f"{options.stream}{packed}: {counts.failed:,} failed{skipped} "
            f"({seconds:.2f} s)"
        )
    return 0 if counts.failed == 0 else 1


async def _put_all(
    options: PutOptions,
    file: IO[bytes] | None,
    counts: _PutCounts,
    key_of: Callable[[bytes], str],
    fail: Callable[[int, str], None],
    resolved: Callable[[int, Any], None],
) -> None:
    """Read lines and put them until the end of the input, then flush."""
    fd = file.fileno() if file is not None else sys.stdin.fileno()
    async with Producer(
        options.stream,
        endpoint_url=options.endpoint_url,
        region_name=options.region_name,
        aggregate=options.aggregate,
    ) as producer:
        async for number, line in _lines(fd):
            counts.lines += 1
            if not line.strip():
                counts.skipped += 1
                continue
            try:
                delivery = await producer.put(line, partition_key=key_of(line))
            except (ValueError, TypeError) as exc:  # bad key, record too large
                fail(number, str(exc).replace("partition_key ", "the partition key ", 1))
                continue
            counts.accepted += 1
            delivery.add_done_callback(functools.partial(resolved, number))
        await producer.flush()


async def _ensure_stream(options: PutOptions) -> None:
    """Check that the stream exists before reading any input (raises errors.StreamNotFound
    naming the stream, region and endpoint), or create it with ``create_shards`` shards;
    wait until it is ACTIVE."""
    async with AsyncExitStack() as stack:
        kinesis = await _aws.open_client(
            stack, "kinesis", endpoint_url=options.endpoint_url, region_name=options.region_name
        )
        if options.create_shards is None:
            await _resources.wait_stream_active(kinesis, options.stream)
            return
        if await _resources.stream_exists(kinesis, options.stream):
            await _resources.wait_stream_active(kinesis, options.stream)
            return
        try:
            await _resources.create_stream(kinesis, options.stream, options.create_shards)
        except errors.ResourceInUse:  # created meanwhile by someone else
            await _resources.wait_stream_active(kinesis, options.stream)


# --- tail ----------------------------------------------------------------------------------


def parse_start(text: str) -> str | datetime:
    """``trim`` / ``latest`` (any case) or an ISO 8601 time (UTC unless it has an offset).

    Raises ValueError with a message for the shell user.
    """
    word = text.strip().lower()
    if word in ("trim", "trim_horizon", "trim-horizon", "oldest"):
        return "TRIM_HORIZON"
    if word in ("latest", "now", "new"):
        return "LATEST"
    iso = text.strip()
    if iso.endswith(("Z", "z")):
        iso = iso[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"--from takes trim, latest or an ISO 8601 time such as 2024-05-01T12:00:00Z; "
            f"got {text!r}"
        ) from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


@dataclass(frozen=True, slots=True)
class TailOptions:
    stream: str
    start_at: str | datetime
    limit: int | None
    json: str | None
    """None: the data as text; "compact" or "pretty": JSON objects with metadata."""
    idle_timeout: float | None
    endpoint_url: str | None
    region_name: str | None
    fan_out: str | None = None
    """Read through enhanced fan-out as this stream consumer (None: polling)."""


def format_record(record: Record, style: str | None) -> bytes:
    """One record for standard output, ending in a newline."""
    if style is None:
        return record.data if record.data.endswith(b"\n") else record.data + b"\n"
    out: dict[str, Any] = {
        "shard_id": record.shard_id,
        "sequence_number": record.sequence_number,
        "sub_sequence_number": record.sub_sequence_number,
        "partition_key": record.partition_key,
        "arrival_time": record.arrival_time,
    }
    try:
        out["data"] = orjson.loads(record.data)
    except orjson.JSONDecodeError:
        try:
            out["data_text"] = record.data.decode()
        except UnicodeDecodeError:
            out["data_base64"] = base64.b64encode(record.data).decode("ascii")
    option = orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE
    if style == "pretty":
        option |= orjson.OPT_INDENT_2
    return orjson.dumps(out, option=option)


def _write(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


async def tail_stream(
    options: TailOptions, report: Callable[[str], None] = lambda _line: None
) -> int:
    """Print records as they arrive until ``limit`` records, ``idle_timeout`` seconds
    without one, or cancellation (Ctrl-C). Returns 0. ``report`` receives the notice for
    standard error that only new records will be shown (when starting at LATEST).

    Raises errors.StreamNotFound and other errors.AWSError subclasses, BrokenPipeError
    when standard output is closed (e.g. ``| head``).
    """
    printed = 0
    async with Consumer(
        options.stream,
        start_at=options.start_at,
        endpoint_url=options.endpoint_url,
        region_name=options.region_name,
        poll_interval=0.5,
        fan_out=options.fan_out or False,
    ) as consumer:
        if options.start_at == "LATEST":
            report(
                f"waiting for new records in {options.stream} (Ctrl-C stops; --from trim "
                "shows the records already in the stream)"
            )
        batches = consumer.batches()
        while options.limit is None or printed < options.limit:
            batch: list[Record] | None = None
            with anyio.move_on_after(options.idle_timeout):
                try:
                    batch = await batches.__anext__()
                except StopAsyncIteration:  # the consumer closed
                    break
            if batch is None:  # nothing for idle_timeout seconds
                break
            if options.limit is not None:
                batch = batch[: options.limit - printed]
            data = b"".join(format_record(record, options.json) for record in batch)
            await anyio.to_thread.run_sync(_write, data)
            printed += len(batch)
    return 0
