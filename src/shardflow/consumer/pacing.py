"""How the consumer's tasks wait: jittered backoff after a failed call, and
:class:`Signal`, which wakes the tasks waiting for data or for room in a buffer.
"""

from __future__ import annotations

import random

import anyio

__all__ = ["Signal", "backoff_delay"]

_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 10.0


def backoff_delay(attempt: int, base: float = _BACKOFF_BASE, cap: float = _BACKOFF_CAP) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0.0, min(cap, base * (1 << min(attempt, 30))))


class Signal:
    """Wakes every task waiting at the moment it fires (edge-triggered, reusable)."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = anyio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    async def wait(self) -> None:
        """Return at the next :meth:`fire`; cancellation just stops waiting. Never raises."""
        await self._event.wait()
