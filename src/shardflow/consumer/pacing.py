"""How the consumer's tasks wait: jittered backoff after a failed call, a shard's read
budget (:class:`ReadPacer`: calls and bytes per second), and :class:`Signal`, which wakes
the tasks waiting for data or for room in a buffer.
"""

from __future__ import annotations

import anyio

from .._core.backoff import full_jitter

__all__ = ["ReadPacer", "Signal", "backoff_delay"]

_BACKOFF_BASE = 0.2
_BACKOFF_CAP = 10.0


def backoff_delay(attempt: int, base: float = _BACKOFF_BASE, cap: float = _BACKOFF_CAP) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return full_jitter(attempt, base, cap)


class ReadPacer:
    """A shard's read budget, as AWS enforces it: at most ``calls_per_s`` GetRecords calls
    and ``bytes_per_s`` bytes per second. A large answer is a debt paid off before the
    next call (AWS answers the calls of the next seconds with a throttling error
    otherwise: a 10 MiB answer at 2 MiB/s costs 5 seconds)."""

    __slots__ = ("_bytes_free_at", "_interval", "_next_call", "_seconds_per_byte")

    def __init__(self, calls_per_s: float, bytes_per_s: float) -> None:
        self._interval = 1.0 / calls_per_s
        self._seconds_per_byte = 1.0 / bytes_per_s
        self._next_call = 0.0
        self._bytes_free_at = 0.0

    def delay(self, now: float) -> float:
        """Seconds to wait before the next call may be sent (0 if it may go now)."""
        return max(self._next_call, self._bytes_free_at) - now

    def called(self, now: float) -> None:
        """A call is being sent at ``now``."""
        self._next_call = now + self._interval

    def spent(self, now: float, nbytes: int) -> None:
        """A call answered ``nbytes`` of record data at ``now``."""
        self._bytes_free_at = max(self._bytes_free_at, now) + nbytes * self._seconds_per_byte


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
