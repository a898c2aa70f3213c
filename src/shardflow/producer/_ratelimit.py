"""Token buckets that pace writes per shard (the producer's ``rate_limit``).

Pure arithmetic on an injectable clock: nothing here sleeps, waits or spawns. A caller
asks for a reservation and gets either 0 (granted, tokens taken) or how many seconds to
wait before asking again (nothing taken).

Requests larger than a bucket's capacity are granted once the bucket is full and leave it
in debt (negative tokens), so a large request waits for a full bucket and the requests
after it wait for the debt to be repaid: the long-run rate holds, and no request is
refused forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .._core.validate import check_number

__all__ = ["ShardRateLimiter", "TokenBucket"]

Clock = Callable[[], float]

# A shortfall worth less than this many seconds of refill counts as none: float rounding
# must not turn "wait exactly the delay we returned, then ask again" into a refusal, nor
# answer with a wait too short to move the clock.
_SLACK = 1e-6


def _amount(value: float) -> float:
    return check_number("amount", value, positive=False)


class TokenBucket:
    """``rate`` tokens per second, at most ``capacity`` stored; starts full.

    ``clock`` returns seconds (monotonic); inject a fake one in tests.
    """

    __slots__ = ("_clock", "_last", "_tokens", "capacity", "rate")

    def __init__(self, rate: float, capacity: float, *, clock: Clock = time.monotonic) -> None:
        self.rate = check_number("rate", rate)
        self.capacity = check_number("capacity", capacity)
        self._clock = clock
        self._tokens = self.capacity
        self._last = clock()

    def __repr__(self) -> str:
        return f"<TokenBucket {self.tokens:.3f}/{self.capacity:g} at {self.rate:g}/s>"

    def _refill(self) -> float:
        now = self._clock()
        if now > self._last:
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
        return self._tokens

    @property
    def tokens(self) -> float:
        """Tokens available now (negative while in debt)."""
        return self._refill()

    def delay_until_available(self, n: float = 1) -> float:
        """Seconds until :meth:`try_take` of ``n`` would succeed (0 if it would now).

        A request above ``capacity`` needs a full bucket; 0 tokens are always available.
        Raises ValueError for n < 0.
        """
        need = min(_amount(n), self.capacity)
        wait = (need - self._refill()) / self.rate
        return wait if wait > _SLACK and need > 0 else 0.0

    def try_take(self, n: float = 1) -> bool:
        """Take ``n`` tokens if available now (a full bucket for ``n`` above capacity, which
        then goes into debt); True if taken. Raises ValueError for n < 0."""
        if self.delay_until_available(n) > 0:
            return False
        self._tokens -= n
        return True

    def take(self, n: float) -> None:
        """Take ``n`` tokens unconditionally (possibly into debt), e.g. for work that went
        out anyway. Raises ValueError for n < 0."""
        self._refill()
        self._tokens -= _amount(n)


class ShardRateLimiter:
    """Per-shard write pacing: a records bucket and a bytes bucket for every shard.

    Each shard may write ``records_per_s`` records and ``bytes_per_s`` bytes per second,
    with bursts of up to ``burst`` seconds' worth. Buckets are created on a shard's first
    reservation; :meth:`forget` / :meth:`retain` drop shards that disappeared (closed by a
    reshard). An aggregated Kinesis record counts as one record.
    """

    __slots__ = ("_buckets", "_clock", "burst", "bytes_per_s", "records_per_s")

    def __init__(
        self,
        records_per_s: float,
        bytes_per_s: float,
        *,
        burst: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self.records_per_s = check_number("records_per_s", records_per_s)
        self.bytes_per_s = check_number("bytes_per_s", bytes_per_s)
        self.burst = check_number("burst", burst)
        self._clock = clock
        self._buckets: dict[str, tuple[TokenBucket, TokenBucket]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def __contains__(self, shard_id: object) -> bool:
        return shard_id in self._buckets

    def __repr__(self) -> str:
        return (
            f"<ShardRateLimiter {self.records_per_s:g} records/s, {self.bytes_per_s:g} B/s "
            f"per shard, {len(self)} shards>"
        )

    def _pair(self, shard_id: str) -> tuple[TokenBucket, TokenBucket]:
        pair = self._buckets.get(shard_id)
        if pair is None:
            pair = self._buckets[shard_id] = (
                TokenBucket(self.records_per_s, self.records_per_s * self.burst, clock=self._clock),
                TokenBucket(self.bytes_per_s, self.bytes_per_s * self.burst, clock=self._clock),
            )
        return pair

    def delay(self, shard_id: str, records: float, nbytes: float) -> float:
        """Seconds until ``reserve`` of the same amounts would be granted; takes nothing."""
        record_bucket, byte_bucket = self._pair(shard_id)
        return max(
            record_bucket.delay_until_available(records),
            byte_bucket.delay_until_available(nbytes),
        )

    def reserve(self, shard_id: str, records: float, nbytes: float) -> float:
        """Reserve ``records`` records and ``nbytes`` bytes of ``shard_id``'s budget.

        Returns 0.0 when granted (the tokens are taken), else the seconds to wait before
        asking again (nothing is taken). Raises ValueError for negative amounts.
        """
        wait = self.delay(shard_id, records, nbytes)
        if wait > 0:
            return wait
        record_bucket, byte_bucket = self._buckets[shard_id]
        record_bucket.take(records)
        byte_bucket.take(nbytes)
        return 0.0

    def available(self, shard_id: str) -> tuple[float, float]:
        """The records and bytes ``shard_id`` may send now (negative while in debt)."""
        record_bucket, byte_bucket = self._pair(shard_id)
        return record_bucket.tokens, byte_bucket.tokens

    def take(self, shard_id: str, records: float, nbytes: float) -> None:
        """Take ``records`` and ``nbytes`` from ``shard_id``'s budget unconditionally (into
        debt if need be), e.g. for a batch cut to what :meth:`available` allowed. Raises
        ValueError for negative amounts."""
        record_bucket, byte_bucket = self._pair(shard_id)
        record_bucket.take(records)
        byte_bucket.take(nbytes)

    def forget(self, shard_id: str) -> None:
        """Drop a shard's buckets (no error if unknown)."""
        self._buckets.pop(shard_id, None)

    def retain(self, shard_ids: Iterable[str]) -> None:
        """Keep the buckets of ``shard_ids`` only, e.g. the open shards after a reshard."""
        keep = set(shard_ids)
        for shard_id in [s for s in self._buckets if s not in keep]:
            del self._buckets[shard_id]
