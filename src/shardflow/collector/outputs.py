"""Outputs: where collected events go, and the protocol for writing your own.

An output is any object with::

    async def send(self, events: Sequence[dict[str, Any]]) -> Sequence[BaseException | None]

``send`` gets a batch of events (JSON objects, already filtered) and returns one entry per
event, in order: ``None`` when that event is delivered, or the exception that stopped it.
Raising from ``send`` means the whole batch failed. A :class:`BufferedOutput` retries only
the events that failed; an event whose error is a ``ValueError`` or ``TypeError`` (bad
input, such as an invalid partition key) is rejected instead, since retrying cannot help.

An output may also define ``async def start(self) -> None`` (setup, e.g. opening a file or
fetching credentials) and ``async def aclose(self) -> None``; the collector or the
buffered output in front of it calls them, if present, once each. A BufferedOutput keeps
events in its buffer until ``start`` has succeeded, so none is lost while an output is
getting ready.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import IO, Any, Protocol, cast, runtime_checkable

import anyio
import anyio.to_thread
import orjson

from .. import errors
from .._core.logs import get_logger
from .._core.validate import check_bool, shown
from ..models import PutResult

__all__ = [
    "Event",
    "FileOutput",
    "KinesisOutput",
    "Output",
    "StdoutOutput",
]

log = get_logger("shardflow.collector")

Event = dict[str, Any]
"""An event as outputs see it: a JSON object."""


@runtime_checkable
class Output(Protocol):
    """A destination for events; see the module docstring for the full contract."""

    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        """Deliver ``events``; one ``None`` or exception per event, in order."""
        ...


async def start_output(output: object) -> None:
    """Call ``output.start()`` if the output has one."""
    start: Callable[[], Awaitable[None]] | None = getattr(output, "start", None)
    if start is not None:
        await start()


async def close_output(output: object) -> None:
    """Call ``output.aclose()`` if the output has one."""
    aclose: Callable[[], Awaitable[None]] | None = getattr(output, "aclose", None)
    if aclose is not None:
        await aclose()


def _lines(events: Sequence[Event]) -> bytes:
    return b"".join(orjson.dumps(e, option=orjson.OPT_APPEND_NEWLINE) for e in events)


class StdoutOutput:
    """Writes each event as one JSON line to standard output (or ``stream``).

    Writes happen in a worker thread; a failed write fails the whole batch.
    """

    def __init__(self, *, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def __repr__(self) -> str:
        if self._stream is None:
            return "StdoutOutput()"
        return f"StdoutOutput(stream={self._stream!r})"

    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        """Write ``events`` and flush. Raises OSError if the stream fails."""
        text = _lines(events).decode()
        stream = self._stream if self._stream is not None else sys.stdout

        def write() -> None:
            stream.write(text)
            stream.flush()

        await anyio.to_thread.run_sync(write)
        return [None] * len(events)


class FileOutput:
    """Appends each event as one JSON line (NDJSON) to ``path``.

    The file is created with mode 0600 if missing (events may hold personal data) and
    opened on :meth:`start` (or the first send). ``fsync=True`` syncs after every batch,
    so a confirmed event survives a power loss. A failed write fails the whole batch,
    which a BufferedOutput then retries: a line may then appear twice, never zero times.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {shown(path)}")
        if not os.fspath(path):
            raise ValueError("path must not be empty")
        check_bool("fsync", fsync)
        self.path = Path(path)
        self.fsync = fsync
        self._file: IO[bytes] | None = None
        self._lock = anyio.Lock()

    def __repr__(self) -> str:
        return f"FileOutput({str(self.path)!r})"

    def _open(self) -> IO[bytes]:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        return os.fdopen(fd, "ab")

    async def start(self) -> None:
        """Open the file for appending. Raises OSError if it cannot be opened."""
        async with self._lock:
            if self._file is None:
                self._file = await anyio.to_thread.run_sync(self._open)

    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        """Append ``events`` and flush (and fsync). Raises OSError on failure."""
        data = _lines(events)
        await self.start()
        async with self._lock:
            file = self._file
            assert file is not None

            def write() -> None:
                file.write(data)
                file.flush()
                if self.fsync:
                    os.fsync(file.fileno())

            await anyio.to_thread.run_sync(write)
        return [None] * len(events)

    async def aclose(self) -> None:
        """Close the file (idempotent)."""
        async with self._lock:
            file, self._file = self._file, None
            if file is not None:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(file.close)


class Putter(Protocol):
    """What KinesisOutput needs from a producer (:class:`shardflow.Producer` has it)."""

    async def put(self, obj: Any, *, partition_key: str) -> Awaitable[PutResult]: ...


KeyFunc = Callable[[Mapping[str, Any]], str]
ProducerFactory = Callable[[], AbstractAsyncContextManager[Putter]]


class KinesisOutput:
    """Sends each event as a JSON record through a :class:`shardflow.Producer`.

    ``producer`` is either a started producer that the caller owns (start it before the
    collector and close it after: ``async with Producer(...) as p, Collector() as c``),
    or a function returning a new, unstarted one, e.g.
    ``lambda: Producer("logs", credentials=CognitoCredentials(...))``. With a function,
    the output starts the producer in :meth:`start` and closes it in :meth:`aclose`;
    behind a BufferedOutput a failed start (no network, credentials refused, stream
    missing) is retried with a fresh producer while events wait in the buffer.

    ``partition_key`` is a field name (its value, as a string, is the key) or a function
    ``event -> str``. An event without the field, or whose field is None, is keyed by its
    ``event_id`` (spread over all shards). The default, None, keys every event by
    ``event_id``.

    Records the producer rejects at ``put`` (bad partition key, record too large) and
    events whose key function raises come back as ValueError/TypeError, so a
    BufferedOutput drops them as rejected; delivery failures (``DeliveryFailed`` after the
    producer's own retries, ``ProducerClosed``) come back as failures to retry.
    """

    def __init__(
        self,
        producer: Putter | ProducerFactory,
        *,
        partition_key: str | KeyFunc | None = None,
    ) -> None:
        self._producer: Putter | None
        self._factory: ProducerFactory | None
        self._context: AbstractAsyncContextManager[Putter] | None = None
        if callable(getattr(producer, "put", None)):
            self._producer, self._factory = cast(Putter, producer), None
        elif callable(producer):
            self._producer, self._factory = None, producer
        else:
            raise TypeError(
                "producer must be a Producer (with an async put()) or a function returning "
                f"one, got {type(producer).__name__}"
            )
        if partition_key is not None and not (
            callable(partition_key) or (isinstance(partition_key, str) and partition_key)
        ):
            raise TypeError(
                "partition_key must be a non-empty field name, a callable event -> str, "
                f"or None, got {shown(partition_key)}"
            )
        self._partition_key = partition_key

    def __repr__(self) -> str:
        producer = self._producer if self._producer is not None else self._factory
        return f"KinesisOutput({producer!r}, partition_key={self._partition_key!r})"

    async def start(self) -> None:
        """With a producer factory: create and start a producer (else nothing).

        Raises what the producer's start raises (e.g. :class:`errors.StreamNotFound`,
        :class:`errors.AccessDenied`); a later call tries again with a new producer.
        """
        if self._factory is None or self._context is not None:
            return
        context = self._factory()
        self._producer = await context.__aenter__()
        self._context = context

    async def aclose(self) -> None:
        """With a producer factory: close the producer, delivering what it holds."""
        context, self._context = self._context, None
        if context is not None:
            self._producer = None
            await context.__aexit__(None, None, None)

    def key_for(self, event: Mapping[str, Any]) -> str:
        """The partition key for ``event``."""
        spec = self._partition_key
        if callable(spec):
            return spec(event)
        value = event.get(spec) if spec is not None else None
        if value is None:
            value = event.get("event_id")
        return value if isinstance(value, str) else str(value)

    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        """Put every event, then wait for every delivery; one result per event.

        Waits while the producer's queue is full. On cancellation, records already put
        may still be delivered by the producer (a later retry then sends a duplicate).
        """
        producer = self._producer
        if producer is None:
            raise errors.ProducerClosed("the output's producer is not started")
        results: list[BaseException | None] = [None] * len(events)
        pending: list[tuple[int, Awaitable[PutResult]]] = []
        for i, event in enumerate(events):
            try:
                try:
                    key = self.key_for(event)
                except Exception as exc:
                    raise ValueError(
                        f"partition key for event {event.get('event_id')!r} failed: {exc!r}"
                    ) from exc
                data = orjson.dumps(event)
                pending.append((i, await producer.put(data, partition_key=key)))
            except Exception as exc:
                results[i] = exc
        for i, delivery in pending:
            try:
                # Shielded: cancelling this send must not cancel the producer's future.
                if isinstance(delivery, asyncio.Future):
                    await asyncio.shield(delivery)
                else:
                    await delivery
            except Exception as exc:
                results[i] = exc
        return results
