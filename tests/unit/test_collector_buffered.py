"""BufferedOutput against user-defined outputs, in memory and with a SQLite spool."""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from shardflow import BufferedOutput, Collector, errors

from support_collector import BrokenOutput, Event, RecordingOutput, StalledOutput, wait_until

FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}


@pytest.fixture(params=["memory", "spool"])
def spool(request: pytest.FixtureRequest, tmp_path: Path) -> Path | None:
    return None if request.param == "memory" else tmp_path / "spool.db"


def numbers(events: Sequence[Event]) -> list[Any]:
    return [e["n"] for e in events]


async def test_flush_drains_the_whole_backlog_in_batches(spool: Path | None) -> None:
    out = RecordingOutput()
    async with BufferedOutput(out, spool=spool, flush_interval=60, max_batch=500) as buf:
        for i in range(1200):
            await buf.post({"n": i})
        await buf.flush()
        assert numbers(out.events) == list(range(1200))
        assert all(len(b) <= 500 for b in out.batches)
        assert buf.stats().sent == 1200
        assert buf.stats().buffered == 0


async def test_a_full_batch_is_sent_without_waiting_for_the_interval(spool: Path | None) -> None:
    out = RecordingOutput()
    async with BufferedOutput(out, spool=spool, flush_interval=3600, max_batch=10) as buf:
        for i in range(10):
            await buf.post({"n": i})
        await wait_until(lambda: len(out.events) == 10)


async def test_the_interval_sends_a_partial_batch(spool: Path | None) -> None:
    out = RecordingOutput()
    async with BufferedOutput(out, spool=spool, flush_interval=0.05, max_batch=500) as buf:
        await buf.post({"n": 1})
        await wait_until(lambda: len(out.events) == 1)


async def test_only_failed_events_are_retried(spool: Path | None) -> None:
    out = RecordingOutput(fail={3: 2, 7: 1})
    async with BufferedOutput(out, spool=spool, flush_interval=60, **FAST) as buf:
        for i in range(10):
            await buf.post({"n": i})
        await buf.flush()
        tries = numbers(out.attempts)
        assert sorted(numbers(out.events)) == list(range(10))
        assert {n: tries.count(n) for n in range(10)} == {
            n: 3 if n == 3 else 2 if n == 7 else 1 for n in range(10)
        }
        assert buf.stats().failed_attempts == 3
        assert buf.stats().dropped == 0


async def test_a_whole_batch_failure_is_retried_until_it_works(spool: Path | None) -> None:
    out = BrokenOutput()
    async with BufferedOutput(out, spool=spool, flush_interval=0.01, **FAST) as buf:
        for i in range(5):
            await buf.post({"n": i})
        await wait_until(lambda: out.calls >= 3)
        assert out.events == []
        out.broken = False
        await buf.flush()
        assert numbers(out.events) == list(range(5))
        assert buf.stats().dropped == 0


async def test_exhausted_retries_drop_counted_and_reported(spool: Path | None) -> None:
    out = RecordingOutput(fail={1: 100})
    dropped: list[tuple[list[Any], str]] = []
    async with BufferedOutput(
        out,
        spool=spool,
        flush_interval=60,
        max_retries=2,
        on_drop=lambda events, why: dropped.append((numbers(events), why)),
        **FAST,
    ) as buf:
        await buf.post({"n": 0})
        await buf.post({"n": 1})
        await buf.flush()
        assert numbers(out.attempts).count(1) == 3  # the first try and two retries
        assert numbers(out.events) == [0]
        assert buf.stats().dropped_retries == 1
    assert dropped == [([1], "retries")]


async def test_events_the_output_rejects_as_bad_input_are_dropped_at_once(
    spool: Path | None,
) -> None:
    out = RecordingOutput(fail={2: 100}, error=lambda e: errors.InvalidPartitionKey("bad key"))
    dropped: list[str] = []
    async with BufferedOutput(
        out, spool=spool, flush_interval=60, on_drop=lambda e, why: dropped.append(why), **FAST
    ) as buf:
        for i in range(4):
            await buf.post({"n": i})
        await buf.flush()
        assert numbers(out.attempts).count(2) == 1
        assert numbers(out.events) == [0, 1, 3]
        assert buf.stats().dropped_rejected == 1
    assert dropped == ["rejected"]


async def test_events_wait_in_the_buffer_until_the_output_is_ready(spool: Path | None) -> None:
    out = StalledOutput(stall_start=True)
    async with BufferedOutput(out, spool=spool, flush_interval=0.01, max_batch=5) as buf:
        for i in range(20):
            await buf.post({"n": i})
        assert buf.stats().buffered == 20
        assert out.attempts == []
        out.release()
        await buf.flush()
        assert numbers(out.events) == list(range(20))


class FlakyStart(RecordingOutput):
    def __init__(self) -> None:
        super().__init__()
        self.tries = 0

    async def start(self) -> None:
        self.tries += 1
        if self.tries < 3:
            raise ConnectionError("credentials not there yet")
        await super().start()


async def test_a_failing_output_start_is_retried(spool: Path | None) -> None:
    out = FlakyStart()
    async with BufferedOutput(out, spool=spool, flush_interval=0.01, **FAST) as buf:
        await buf.post({"n": 1})
        await buf.flush()
    assert out.tries == 3
    assert numbers(out.events) == [1]
    assert out.closed == 1


# --- overflow -------------------------------------------------------------------------


async def test_overflow_block_waits_for_room(spool: Path | None) -> None:
    out = StalledOutput()
    posted: list[int] = []
    # A long interval: only a full batch (2 events) starts a send, so [0, 1] go first.
    async with BufferedOutput(
        out, spool=spool, flush_interval=60, max_batch=2, max_spool_records=4
    ) as buf:

        async def poster() -> None:
            for i in range(6):
                await buf.post({"n": i})
                posted.append(i)

        async with anyio.create_task_group() as tg:
            tg.start_soon(poster)
            await wait_until(lambda: len(posted) == 4 and len(out.in_flight) == 2)
            await anyio.wait_all_tasks_blocked()
            assert posted == [0, 1, 2, 3]  # the fifth post waits for room
            assert buf.stats().buffered == 4
            out.release()
        await buf.flush()
        assert numbers(out.events) == list(range(6))
        assert buf.stats().dropped == 0


async def test_overflow_raise_refuses_with_buffer_full(spool: Path | None) -> None:
    out = StalledOutput()
    async with BufferedOutput(
        out, spool=spool, flush_interval=0.01, max_spool_records=3, overflow="raise"
    ) as buf:
        for i in range(3):
            await buf.post({"n": i})
        with pytest.raises(errors.BufferFull, match="full"):
            await buf.post({"n": 3})
        assert buf.stats().refused == 1
        out.release()
        await buf.flush()
        await buf.post({"n": 4})
        await buf.flush()
    assert numbers(out.events) == [0, 1, 2, 4]


async def test_overflow_raise_applies_to_bytes_too(spool: Path | None) -> None:
    out = StalledOutput()
    async with BufferedOutput(
        out, spool=spool, max_spool_bytes=100, overflow="raise", flush_interval=60
    ) as buf:
        await buf.post({"pad": "x" * 60})
        with pytest.raises(errors.BufferFull):
            await buf.post({"pad": "y" * 60})
        with pytest.raises(ValueError, match="can never fit"):
            await buf.post({"pad": "z" * 200})
        out.release()


async def test_overflow_drop_oldest_evicts_and_counts(spool: Path | None) -> None:
    out = StalledOutput()
    dropped: list[Any] = []
    async with BufferedOutput(
        out,
        spool=spool,
        flush_interval=60,  # only a full batch starts a send: [0, 1]
        max_batch=2,
        max_spool_records=5,
        overflow="drop_oldest",
        on_drop=lambda events, why: dropped.extend((e["n"], why) for e in events),
    ) as buf:
        await buf.post({"n": 0})
        await buf.post({"n": 1})
        await wait_until(lambda: numbers(out.in_flight) == [0, 1])
        for i in range(2, 10):
            await buf.post({"n": i})
        assert buf.stats().buffered == 5
        assert buf.stats().dropped_overflow == 5
        out.release()
        await buf.flush()
    # The batch in flight when 0 and 1 were evicted still arrived (counted as dropped).
    assert numbers(out.events) == [0, 1, 5, 6, 7, 8, 9]
    assert dropped == [(n, "overflow") for n in range(5)]


# --- purge ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def test_purge_age_drops_old_events_unsent(spool: Path | None) -> None:
    clock = Clock()
    out = StalledOutput(stall_start=True)
    dropped: list[Any] = []
    async with BufferedOutput(
        out,
        spool=spool,
        flush_interval=0.01,
        purge_age=60,
        clock=clock,
        on_drop=lambda events, why: dropped.extend((e["n"], why) for e in events),
    ) as buf:
        for i in range(3):
            await buf.post({"n": i})
        clock.now += 30
        for i in range(3, 5):
            await buf.post({"n": i})
        clock.now += 31  # the first three are now 61 s old, the others 31 s
        await wait_until(lambda: buf.stats().dropped_purged == 3)
        assert buf.stats().buffered == 2
        out.release()
        await buf.flush()
    assert numbers(out.events) == [3, 4]
    assert dropped == [(n, "purged") for n in range(3)]


async def test_events_expiring_while_failing_are_purged(spool: Path | None) -> None:
    clock = Clock()
    out = BrokenOutput()
    async with BufferedOutput(
        out, spool=spool, flush_interval=0.01, purge_age=10, clock=clock, **FAST
    ) as buf:
        await buf.post({"n": 1})
        await wait_until(lambda: out.calls >= 2)
        clock.now += 11
        await buf.flush()
        assert buf.stats().dropped_purged == 1
        assert buf.stats().buffered == 0
    assert out.events == []


# --- lifecycle ------------------------------------------------------------------------


async def test_post_outside_the_lifetime_is_refused(spool: Path | None) -> None:
    buf = BufferedOutput(RecordingOutput(), spool=spool)
    with pytest.raises(errors.OutputClosed, match="not open"):
        await buf.post({"n": 1})
    async with buf:
        await buf.post({"n": 1})
    with pytest.raises(errors.OutputClosed):
        await buf.post({"n": 2})
    with pytest.raises(errors.OutputClosed, match="cannot be restarted"):
        await buf.start()
    await buf.aclose()


async def test_close_flushes_what_is_buffered(spool: Path | None) -> None:
    out = RecordingOutput()
    async with BufferedOutput(out, spool=spool, flush_interval=3600) as buf:
        for i in range(7):
            await buf.post({"n": i})
    assert numbers(out.events) == list(range(7))
    assert (out.started, out.closed) == (1, 1)


async def test_close_gives_up_after_close_timeout_and_counts_memory_losses() -> None:
    out = StalledOutput()
    dropped: list[str] = []
    buf = BufferedOutput(
        out, flush_interval=0.01, close_timeout=0.05, on_drop=lambda e, why: dropped.append(why)
    )
    async with buf:
        await buf.post({"n": 1})
        await buf.post({"n": 2})
    assert buf.stats().dropped_at_close == 2
    assert dropped == ["close"]


async def test_a_blocked_post_is_released_by_close(spool: Path | None) -> None:
    out = StalledOutput()
    buf = BufferedOutput(out, spool=spool, max_spool_records=1, close_timeout=0.01)
    outcome: list[BaseException] = []

    async def blocked_post() -> None:
        try:
            await buf.post({"n": 2})
        except errors.OutputClosed as exc:
            outcome.append(exc)

    async with anyio.create_task_group() as tg:
        await buf.start()
        await buf.post({"n": 1})
        tg.start_soon(blocked_post)
        await anyio.wait_all_tasks_blocked()
        await buf.aclose()
    assert len(outcome) == 1


async def test_spooled_events_survive_a_restart_and_go_first(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    stalled = StalledOutput(stall_start=True)
    async with BufferedOutput(stalled, spool=path, close_timeout=0.01) as buf:
        for i in range(5):
            await buf.post({"n": i})
    assert stalled.attempts == []
    assert buf.stats().dropped == 0
    out = RecordingOutput()
    async with BufferedOutput(out, spool=path, flush_interval=60) as buf:
        assert buf.stats().buffered == 5
        await buf.post({"n": 5})
        await buf.flush()
    assert numbers(out.events) == list(range(6))


async def test_retry_counts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    out = RecordingOutput(fail={1: 1000})
    async with BufferedOutput(
        out, spool=path, flush_interval=0.01, close_timeout=0, **FAST
    ) as buf:
        await buf.post({"n": 1})
        # A third try starts only after two failures were recorded in the spool.
        await wait_until(lambda: len(out.attempts) >= 3)
    out.attempts.clear()
    async with BufferedOutput(out, spool=path, flush_interval=60, max_retries=2, **FAST) as buf:
        await buf.flush()
        assert buf.stats().dropped_retries == 1
    assert len(out.attempts) == 1


async def test_spool_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with BufferedOutput(StalledOutput(), spool=path, close_timeout=0) as buf:
        await buf.post({"n": 1})
        for name in (path, Path(f"{path}-wal")):
            if name.exists():
                assert stat.S_IMODE(os.stat(name).st_mode) == 0o600, name


async def test_a_spool_is_used_by_one_output_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    async with BufferedOutput(RecordingOutput(), spool=path):
        with pytest.raises(errors.SpoolError, match="another process"):
            async with BufferedOutput(RecordingOutput(), spool=path):
                pass


async def test_a_file_that_is_not_a_spool_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(errors.SpoolError, match="cannot open spool"):
        async with BufferedOutput(RecordingOutput(), spool=path):
            pass


async def test_concurrent_posts_are_group_committed_and_all_delivered(tmp_path: Path) -> None:
    out = RecordingOutput()
    async with BufferedOutput(out, spool=tmp_path / "s.db", flush_interval=60) as buf:
        async with anyio.create_task_group() as tg:
            for w in range(20):

                async def worker(w: int = w) -> None:
                    for i in range(25):
                        await buf.post({"n": w * 100 + i})

                tg.start_soon(worker)
        await buf.flush()
    assert sorted(numbers(out.events)) == sorted(w * 100 + i for w in range(20) for i in range(25))


async def test_non_serialisable_events_fail_at_post(spool: Path | None) -> None:
    out = RecordingOutput()
    async with BufferedOutput(out, spool=spool, flush_interval=60) as buf:
        with pytest.raises(errors.SerializationError):
            await buf.post({"x": object()})
        await buf.post({"n": 1})
        await buf.flush()
    assert numbers(out.events) == [1]


async def test_as_a_collector_output(spool: Path | None) -> None:
    out = RecordingOutput()
    collector = Collector()
    collector.output("app.**", BufferedOutput(out, spool=spool, flush_interval=60))
    async with collector:
        ids = [await collector.post("app.x", {"n": i}) for i in range(3)]
        await collector.flush()
        assert [e["event_id"] for e in out.events] == ids
    assert out.closed == 1


class BadResults(RecordingOutput):
    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        self.attempts.extend(events)
        return []


async def test_an_output_returning_the_wrong_number_of_results_is_a_batch_failure() -> None:
    out = BadResults()
    async with BufferedOutput(
        out, flush_interval=0.01, max_retries=1, close_timeout=1, **FAST
    ) as buf:
        await buf.post({"n": 1})
        await buf.flush()
        assert buf.stats().dropped_retries == 1
    assert len(out.attempts) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"flush_interval": 0}, ValueError, "flush_interval must be > 0 seconds, got 0.0"),
        ({"flush_interval": math.nan}, ValueError, "flush_interval must be > 0 seconds"),
        ({"max_batch": 0}, ValueError, "max_batch must be >= 1, got 0"),
        ({"max_batch": 1.5}, TypeError, "max_batch must be an int, got 1.5"),
        ({"max_retries": -1}, ValueError, "max_retries must be >= 0, got -1"),
        ({"backoff_base": -1}, ValueError, "backoff_base"),
        ({"backoff_base": 2, "backoff_cap": 1}, ValueError, "must not be smaller"),
        ({"purge_age": 0}, ValueError, "purge_age"),
        ({"max_spool_records": 0}, ValueError, "max_spool_records"),
        ({"max_spool_bytes": True}, TypeError, "max_spool_bytes must be an int, got True"),
        ({"overflow": "spill"}, ValueError, "overflow must be one of"),
        ({"close_timeout": -1}, ValueError, "close_timeout"),
        ({"close_timeout": math.nan}, ValueError, "close_timeout must be >= 0 seconds"),
    ],
)
def test_options_are_validated(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        BufferedOutput(RecordingOutput(), **kwargs)


def test_output_must_have_send() -> None:
    with pytest.raises(TypeError, match="send"):
        BufferedOutput(object())  # type: ignore[arg-type]
