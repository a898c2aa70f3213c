"""TumblingWindows: boundaries, lateness, out-of-order input, closing, keys, emission."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from shardflow import errors
from shardflow.sinks import Aggregation, TumblingWindows, Window

from support_sinks import make_record

Event = dict[str, Any]


def ev(t: float, kind: str = "click", **extra: Any) -> Event:
    return {"time": t, "type": kind, **extra}


def by_type(e: Event) -> str:
    return str(e["type"])


def summary(windows: list[Window[Any, Any]]) -> list[tuple[float, Any, Any]]:
    return [(w.start, w.key, w.value) for w in windows]


async def collect(
    events: list[Event], *, size: float = 60.0, close: bool = True, **options: Any
) -> tuple[list[Window[Any, Any]], TumblingWindows[Any, Any, Any]]:
    out: list[Window[Any, Any]] = []
    windows: TumblingWindows[Any, Any, Any] = TumblingWindows(size, on_window=out.append, **options)
    await windows.add_many(events)
    if close:
        await windows.aclose()
    return out, windows


async def test_event_at_window_end_goes_to_next_window() -> None:
    out, _ = await collect([ev(0.0), ev(59.999999), ev(60.0), ev(119.9), ev(120.0)])
    assert summary(out) == [(0.0, None, 2), (60.0, None, 2), (120.0, None, 1)]
    assert [(w.start, w.end) for w in out] == [(0.0, 60.0), (60.0, 120.0), (120.0, 180.0)]


async def test_fractional_sizes_have_exact_boundaries() -> None:
    out, _ = await collect([ev(0.1), ev(0.2), ev(0.3), ev(0.30000000000000004)], size=0.1)
    # 0.3 is exactly a boundary (to the microsecond): it opens the window [0.3, 0.4)
    assert summary(out) == [(0.1, None, 1), (0.2, None, 1), (0.3, None, 2)]


async def test_window_closes_when_watermark_reaches_its_end() -> None:
    out, windows = await collect([ev(10), ev(59)], close=False)
    assert out == []
    assert windows.watermark == 59.0
    await windows.add(ev(60))
    assert summary(out) == [(0.0, None, 2)]
    assert windows.open_windows == 1


async def test_events_per_type_per_minute() -> None:
    events = [ev(1, "click"), ev(2, "view"), ev(3, "click"), ev(61, "view"), ev(62, "buy")]
    out, _ = await collect(events, key=by_type)
    assert summary(out) == [
        (0.0, "click", 2),
        (0.0, "view", 1),
        (60.0, "view", 1),
        (60.0, "buy", 1),
    ]
    assert [w.count for w in out] == [2, 1, 1, 1]


async def test_late_within_lateness_is_counted_in_its_window() -> None:
    out, windows = await collect(
        [ev(50), ev(65), ev(58), ev(69.5), ev(59)], allowed_lateness=10.0, close=False
    )
    # watermark 59.5 < 60: the first window is still open, 58 and 59 count there
    assert out == []
    await windows.add(ev(70))  # watermark 60: [0, 60) closes
    assert summary(out) == [(0.0, None, 3)]
    assert windows.late_events == 0


async def test_late_beyond_lateness_is_dropped_and_counted() -> None:
    late: list[Event] = []
    out, windows = await collect(
        [ev(10), ev(75), ev(59.9), ev(64.9), ev(70)],
        allowed_lateness=10.0,
        on_late=late.append,
    )
    # 75 moves the watermark to 65: [0, 60) closes; 59.9 is too late, 64.9 is in time
    assert late == [ev(59.9)]
    assert windows.late_events == 1
    assert summary(out) == [(0.0, None, 1), (60.0, None, 3)]


async def test_late_without_callback_is_dropped() -> None:
    out, windows = await collect([ev(130), ev(10), ev(131)])
    assert windows.late_events == 1
    assert summary(out) == [(120.0, None, 2)]


async def test_out_of_order_input_within_open_windows() -> None:
    events = [ev(125), ev(5), ev(65), ev(3), ev(130), ev(61)]
    out, windows = await collect(events, allowed_lateness=200.0)
    assert windows.late_events == 0
    assert summary(out) == [(0.0, None, 2), (60.0, None, 2), (120.0, None, 2)]


async def test_close_emits_every_open_window_in_order() -> None:
    events = [ev(200, "b"), ev(70, "a"), ev(10, "a"), ev(75, "b"), ev(71, "a")]
    out, windows = await collect(events, key=by_type, allowed_lateness=1000.0)
    assert summary(out) == [(0.0, "a", 1), (60.0, "a", 2), (60.0, "b", 1), (180.0, "b", 1)]
    assert windows.open_windows == 0
    with pytest.raises(errors.SinkClosed):
        await windows.add(ev(300))
    await windows.aclose()  # idempotent
    assert len(out) == 4


async def test_aggregations_sum_and_collect() -> None:
    events = [ev(1, amount=5), ev(2, amount=7), ev(70, amount=1)]
    sums: list[Window[None, float]] = []
    windows = TumblingWindows(
        60, aggregation=Aggregation.sum(lambda e: e["amount"]), on_window=sums.append
    )
    async with windows:
        await windows.add_many(events)
    assert [(w.start, w.value, w.count) for w in sums] == [(0.0, 12.0, 2), (60.0, 1.0, 1)]

    out, _ = await collect(events, aggregation=Aggregation.collect())
    assert [w.value for w in out] == [events[:2], events[2:]]


async def test_async_iterator_yields_windows_and_ends_on_close() -> None:
    windows: TumblingWindows[Event, str, int] = TumblingWindows(60, key=by_type)
    got: list[Window[str, int]] = []

    async def reader() -> None:
        async for window in windows:
            got.append(window)

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        async with windows:
            await windows.add_many([ev(1, "a"), ev(2, "b"), ev(61, "a"), ev(121, "a")])
    assert summary(got) == [  # type: ignore[arg-type]
        (0.0, "a", 1),
        (0.0, "b", 1),
        (60.0, "a", 1),
        (120.0, "a", 1),
    ]


async def test_iterator_backpressure_when_nobody_reads() -> None:
    windows: TumblingWindows[Event, None, int] = TumblingWindows(1, max_buffered=2)
    await windows.add_many([ev(0), ev(1), ev(2)])  # two windows closed, buffered
    with anyio.move_on_after(0.05) as scope:
        await windows.add(ev(3))  # a third closed window: waits for a reader
    assert scope.cancelled_caught
    # the event was counted before the wait; the window it closed is still in line
    received = []
    async with anyio.create_task_group() as tg:

        async def read() -> None:
            async for w in windows:
                received.append(w.start)

        tg.start_soon(read)
        await windows.aclose()
    assert received == [0.0, 1.0, 2.0, 3.0]


async def test_async_callback_and_failure_keeps_window_in_line() -> None:
    seen: list[float] = []
    fail = True

    async def on_window(w: Window[None, int]) -> None:
        await anyio.lowlevel.checkpoint()
        if fail and w.start == 60.0:
            raise RuntimeError("downstream down")
        seen.append(w.start)

    windows: TumblingWindows[Event, None, int] = TumblingWindows(60, on_window=on_window)
    await windows.add_many([ev(1), ev(61)])
    with pytest.raises(RuntimeError, match="downstream"):
        await windows.add(ev(125))  # closes [60, 120): the callback fails
    assert seen == [0.0]
    fail = False
    await windows.aclose()
    assert seen == [0.0, 60.0, 120.0]


async def test_datetimes_records_and_advance() -> None:
    t0 = datetime(2024, 3, 5, 7, 0, 30, tzinfo=timezone.utc)
    records = [make_record(i, at=t0 + timedelta(seconds=20 * i)) for i in range(4)]
    out: list[Window[None, int]] = []
    windows: TumblingWindows[Any, None, int] = TumblingWindows(60, on_window=out.append)
    await windows.add_many(records)  # Records: arrival_time is the default event time
    minute = t0.replace(second=0).timestamp()
    assert summary(out) == [(minute, None, 2)]  # type: ignore[arg-type]
    await windows.advance(t0 + timedelta(minutes=5))  # idle input: move time on
    assert summary(out) == [(minute, None, 2), (minute + 60, None, 2)]  # type: ignore[arg-type]
    await windows.advance(0)  # never backwards
    assert windows.watermark == (t0 + timedelta(minutes=5)).timestamp()

    naive: list[Window[None, int]] = []
    w2: TumblingWindows[Event, None, int] = TumblingWindows(
        3600, on_window=naive.append, event_time=lambda e: e["at"]
    )
    async with w2:
        await w2.add({"at": datetime(2024, 3, 5, 7, 59)})  # naive: UTC
    assert naive[0].start == datetime(2024, 3, 5, 7, tzinfo=timezone.utc).timestamp()


async def test_bad_events_fail_at_add_and_change_nothing() -> None:
    out: list[Window[Any, int]] = []
    windows: TumblingWindows[Any, Any, int] = TumblingWindows(60, on_window=out.append)
    await windows.add(ev(10))
    with pytest.raises(TypeError, match="event_time"):
        await windows.add(object())
    with pytest.raises(TypeError, match="epoch seconds"):
        await windows.add({"time": "yesterday"})
    with pytest.raises(ValueError, match="finite"):
        await windows.add({"time": float("nan")})
    keyed: TumblingWindows[Event, str, int] = TumblingWindows(
        60, key=lambda e: e["type"], on_window=out.append
    )
    with pytest.raises(KeyError):
        await keyed.add({"time": 1})
    await windows.aclose()
    assert summary(out) == [(0.0, None, 1)]


@pytest.mark.parametrize(
    ("args", "kwargs", "exc"),
    [
        ((0,), {}, ValueError),
        ((-1,), {}, ValueError),
        ((float("inf"),), {}, ValueError),
        ((1e-9,), {}, ValueError),
        ((60,), {"allowed_lateness": -1}, ValueError),
        ((60,), {"max_buffered": 0}, ValueError),
        ((60,), {"key": "type"}, TypeError),
        ((60,), {"aggregation": len}, TypeError),
        ((60,), {"on_window": 3}, TypeError),
    ],
)
def test_options_are_validated(args: tuple[Any, ...], kwargs: dict[str, Any], exc: type) -> None:
    with pytest.raises(exc):
        TumblingWindows(*args, **kwargs)


def test_iterating_with_a_callback_is_an_error() -> None:
    windows: TumblingWindows[Event, None, int] = TumblingWindows(60, on_window=print)
    with pytest.raises(RuntimeError, match="on_window"):
        windows.__aiter__()
