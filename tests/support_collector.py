"""User-defined outputs and helpers for the collector tests (the Output protocol in use)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio

Event = dict[str, Any]


async def wait_until(condition: Callable[[], bool], deadline: float = 10.0) -> None:
    """Poll ``condition`` until true; fail the test after ``deadline`` seconds."""
    with anyio.fail_after(deadline):
        while not condition():  # noqa: ASYNC110 - polling state that has no event
            await anyio.sleep(0.005)


class RecordingOutput:
    """Delivers everything; keeps each batch. ``fail`` maps an event key to failures left."""

    def __init__(
        self,
        *,
        fail: dict[Any, int] | None = None,
        key: str = "n",
        error: Callable[[Event], BaseException] | None = None,
    ) -> None:
        self.batches: list[list[Event]] = []
        self.attempts: list[Event] = []
        self.fail = dict(fail or {})
        self.key = key
        self.error = error or (lambda e: RuntimeError(f"failed {e.get(key)}"))
        self.started = 0
        self.closed = 0

    @property
    def events(self) -> list[Event]:
        return [e for batch in self.batches for e in batch]

    async def start(self) -> None:
        self.started += 1

    async def aclose(self) -> None:
        self.closed += 1

    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        results: list[BaseException | None] = []
        delivered = []
        for event in events:
            self.attempts.append(event)
            left = self.fail.get(event.get(self.key), 0)
            if left:
                self.fail[event.get(self.key)] = left - 1
                results.append(self.error(event))
            else:
                results.append(None)
                delivered.append(event)
        self.batches.append(delivered)
        return results


class StalledOutput(RecordingOutput):
    """Blocks in send (and optionally start) until ``release()``; counts sends in flight."""

    def __init__(self, *, stall_start: bool = False) -> None:
        super().__init__()
        self.released = anyio.Event()
        self.stall_start = stall_start
        self.in_flight: list[Event] = []

    def release(self) -> None:
        self.released.set()

    async def start(self) -> None:
        if self.stall_start:
            await self.released.wait()
        await super().start()

    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        self.in_flight = list(events)
        await self.released.wait()
        self.in_flight = []
        return await super().send(events)


class BrokenOutput(RecordingOutput):
    """Raises from send (a whole-batch failure) while ``broken`` is true."""

    def __init__(self) -> None:
        super().__init__()
        self.broken = True
        self.calls = 0

    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        self.calls += 1
        if self.broken:
            raise ConnectionError("output is down")
        return await super().send(events)
