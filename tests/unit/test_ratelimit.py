"""Token buckets and per-shard write pacing, on a fake clock (no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardflow.producer._ratelimit import ShardRateLimiter, TokenBucket


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_starts_full_and_refills_at_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 5, clock=clock)
    assert bucket.tokens == 5
    assert bucket.try_take(5)
    assert not bucket.try_take(1)
    assert bucket.delay_until_available(1) == pytest.approx(0.1)
    assert bucket.delay_until_available(3) == pytest.approx(0.3)
    clock.advance(0.25)
    assert bucket.tokens == pytest.approx(2.5)
    assert bucket.try_take(2)
    assert not bucket.try_take(1)
    clock.advance(100)
    assert bucket.tokens == 5  # never more than capacity


def test_waiting_the_delay_is_enough() -> None:
    clock = FakeClock(0.1)  # a start that does not add up exactly in binary
    bucket = TokenBucket(1000 / 3, 1000 / 3, clock=clock)
    for n in (333, 7, 100, 333, 1, 50, 1000):
        delay = bucket.delay_until_available(n)
        if delay > 0:
            assert not bucket.try_take(n)
            clock.advance(delay)
        assert bucket.try_take(n), "waiting the announced delay must be enough"


def test_request_larger_than_capacity_waits_for_a_full_bucket_then_leaves_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(100, 50, clock=clock)
    assert bucket.try_take(20)
    assert bucket.delay_until_available(120) == pytest.approx(0.2)  # until full (50)
    assert not bucket.try_take(120)
    clock.advance(0.2)
    assert bucket.try_take(120)
    assert bucket.tokens == pytest.approx(-70)
    assert bucket.delay_until_available(1) == pytest.approx(0.71)
    clock.advance(0.71)
    assert bucket.try_take(1)


def test_zero_is_always_available() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, 1, clock=clock)
    bucket.take(5)
    assert bucket.delay_until_available(0) == 0
    assert bucket.try_take(0)


def test_take_goes_into_debt() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 10, clock=clock)
    bucket.take(15)
    assert bucket.tokens == pytest.approx(-5)
    assert bucket.delay_until_available(10) == pytest.approx(1.5)


def test_clock_going_backwards_adds_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10, 10, clock=clock)
    assert bucket.try_take(10)
    clock.advance(-5)
    assert bucket.tokens == 0
    clock.advance(5.5)  # only time after the last reading counts
    assert bucket.tokens == pytest.approx(5)


@pytest.mark.parametrize(
    ("rate", "capacity", "error"),
    [
        (0, 1, ValueError),
        (1, 0, ValueError),
        (-1, 1, ValueError),
        (float("nan"), 1, ValueError),
        (float("inf"), 1, ValueError),
        ("1", 1, TypeError),
        (True, 1, TypeError),
    ],
)
def test_bucket_options_are_validated(rate: float, capacity: float, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"rate|capacity"):
        TokenBucket(rate, capacity)


@pytest.mark.parametrize("amount", [-1, float("nan"), float("inf")])
def test_bad_amounts_are_refused(amount: float) -> None:
    bucket = TokenBucket(1, 1, clock=FakeClock())
    for call in (bucket.try_take, bucket.delay_until_available, bucket.take):
        with pytest.raises(ValueError, match="amount"):
            call(amount)
    assert bucket.tokens == 1


@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=2), st.integers(min_value=0, max_value=300)),
        max_size=60,
    )
)
def test_granted_tokens_never_exceed_capacity_plus_rate_times_time(
    steps: list[tuple[float, int]],
) -> None:
    clock = FakeClock()
    rate, capacity = 100.0, 150.0
    bucket = TokenBucket(rate, capacity, clock=clock)
    start = clock.now
    granted = 0
    for wait, n in steps:
        clock.advance(wait)
        if bucket.try_take(n):
            granted += n
        elif n <= capacity:
            assert bucket.delay_until_available(n) > 0
        # The last grant may overdraw by at most one over-capacity request.
        assert granted <= capacity + rate * (clock.now - start) + 300


def test_shard_limiter_grants_then_answers_with_the_wait() -> None:
    clock = FakeClock()
    limiter = ShardRateLimiter(1000, 1_000_000, clock=clock)
    assert limiter.reserve("s1", 500, 100_000) == 0
    assert limiter.reserve("s1", 500, 100_000) == 0
    # Records exhausted on s1, not on another shard.
    wait = limiter.reserve("s1", 100, 1)
    assert wait == pytest.approx(0.1)
    assert limiter.reserve("s2", 100, 1) == 0
    # Nothing was taken by the refused request: after the wait it is granted.
    clock.advance(wait)
    assert limiter.reserve("s1", 100, 1) == 0
    assert limiter.reserve("s1", 1, 1) > 0


def test_shard_limiter_bytes_bind_too() -> None:
    clock = FakeClock()
    limiter = ShardRateLimiter(1000, 1000, clock=clock)
    assert limiter.reserve("s", 1, 800) == 0
    wait = limiter.reserve("s", 1, 500)
    assert wait == pytest.approx(0.3)
    assert limiter.delay("s", 1, 500) == pytest.approx(0.3)
    clock.advance(0.3)
    assert limiter.reserve("s", 1, 500) == 0


def test_shard_limiter_paces_to_the_rate_over_time() -> None:
    clock = FakeClock()
    limiter = ShardRateLimiter(1000, 1 << 20, clock=clock)
    sent = 0
    start = clock.now
    while clock.now - start < 10:
        wait = limiter.reserve("s", 100, 100 * 200)
        if wait == 0:
            sent += 100
        else:
            clock.advance(wait)
    # One second of burst, then 1,000 records/s.
    assert 1000 * 10 <= sent <= 1000 * 11


def test_burst_sets_the_capacity() -> None:
    clock = FakeClock()
    limiter = ShardRateLimiter(1000, 1 << 20, burst=0.1, clock=clock)
    assert limiter.reserve("s", 100, 1) == 0
    assert limiter.reserve("s", 1, 1) == pytest.approx(0.001)


def test_oversized_batch_waits_for_full_buckets() -> None:
    clock = FakeClock()
    limiter = ShardRateLimiter(200, 1000, clock=clock)
    assert limiter.reserve("s", 100, 0) == 0
    assert limiter.reserve("s", 500, 0) == pytest.approx(0.5)  # until 200 stored
    clock.advance(0.5)
    assert limiter.reserve("s", 500, 0) == 0
    assert limiter.reserve("s", 1, 0) == pytest.approx(301 / 200)


def test_forget_and_retain_shards() -> None:
    clock = FakeClock()
    limiter = ShardRateLimiter(10, 10, clock=clock)
    for shard_id in ("a", "b", "c"):
        limiter.reserve(shard_id, 10, 10)
    assert len(limiter) == 3
    limiter.retain(["b", "c", "new"])
    assert "a" not in limiter
    assert len(limiter) == 2
    limiter.forget("b")
    limiter.forget("unknown")
    assert "b" not in limiter
    assert "c" in limiter
    # A forgotten shard starts again with full buckets.
    assert limiter.reserve("a", 10, 10) == 0
    assert limiter.reserve("c", 10, 10) > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"records_per_s": 0, "bytes_per_s": 1},
        {"records_per_s": 1, "bytes_per_s": -1},
        {"records_per_s": 1, "bytes_per_s": 1, "burst": 0},
    ],
)
def test_limiter_options_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"records_per_s|bytes_per_s|burst"):
        ShardRateLimiter(**kwargs)


def test_negative_reservation_is_refused() -> None:
    limiter = ShardRateLimiter(10, 10, clock=FakeClock())
    with pytest.raises(ValueError, match="amount"):
        limiter.reserve("s", -1, 0)
