from __future__ import annotations

import io
import os
import stat
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from shardflow import Collector, FileOutput, StdoutOutput, errors
from shardflow.collector import add_fields, redact, sample

from support_collector import Event, RecordingOutput


def fixed_clock() -> float:
    return 1_700_000_000.5


async def test_post_stamps_event_id_tag_and_time() -> None:
    out = RecordingOutput()
    collector = Collector(clock=fixed_clock)
    collector.output("**", out)
    async with collector:
        event_id = await collector.post("app.click", {"user_id": "u1"})
    [event] = out.events
    assert event == {
        "user_id": "u1",
        "event_id": event_id,
        "tag": "app.click",
        "time": 1_700_000_000.5,
    }
    assert uuid.UUID(str(event_id)).version == 4


async def test_post_keeps_fields_the_event_already_has() -> None:
    out = RecordingOutput()
    collector = Collector()
    collector.output("**", out)
    async with collector:
        returned = await collector.post("a", {"event_id": "mine", "tag": "t0", "time": 7})
    assert out.events == [{"event_id": "mine", "tag": "t0", "time": 7}]
    assert returned == "mine"


async def test_every_event_gets_a_distinct_id() -> None:
    out = RecordingOutput()
    collector = Collector()
    collector.output("**", out)
    async with collector:
        for i in range(200):
            await collector.post("a", {"n": i})
    assert len({e["event_id"] for e in out.events}) == 200


async def test_filters_run_in_order_only_for_matching_tags() -> None:
    out = RecordingOutput()
    collector = Collector()
    seen: list[str] = []

    def first(event: Event) -> Event:
        seen.append("first")
        event["trail"] = ["first"]
        return event

    async def second(event: Event) -> Event:
        seen.append("second")
        event["trail"].append("second")
        return event

    def web_only(event: Event) -> Event:
        seen.append("web")
        return event

    collector.filter("app.**", first)
    collector.filter("web.*", web_only)
    collector.filter("app.*", second)
    collector.output("**", out)
    async with collector:
        await collector.post("app.click", {})
        await collector.post("app", {})
    assert seen == ["first", "second", "first"]
    assert [e["trail"] for e in out.events] == [["first", "second"], ["first"]]


async def test_a_filter_returning_none_drops_the_event() -> None:
    out = RecordingOutput()
    collector = Collector()
    later_calls: list[Event] = []
    collector.filter("**", lambda e: None if e.get("debug") else e)
    collector.filter("**", lambda e: later_calls.append(e) or e)
    collector.output("**", out)
    async with collector:
        assert await collector.post("a", {"debug": True}) is None
        assert await collector.post("a", {"debug": False}) is not None
    assert [e["debug"] for e in out.events] == [False]
    assert len(later_calls) == 1
    assert collector.stats().filtered_out == 1
    assert collector.stats().posted == 2


async def test_a_filter_may_return_a_new_dict() -> None:
    out = RecordingOutput()
    collector = Collector()
    collector.filter("**", lambda e: {"only": e["n"], "event_id": e["event_id"]})
    collector.output("**", out)
    async with collector:
        await collector.post("a", {"n": 1})
    assert [set(e) for e in out.events] == [{"only", "event_id"}]


async def test_a_filter_returning_something_else_is_a_type_error() -> None:
    collector = Collector()
    collector.filter("**", lambda e: [e])  # type: ignore[arg-type, return-value]
    collector.output("**", RecordingOutput())
    async with collector:
        with pytest.raises(TypeError, match="expected a dict, or None"):
            await collector.post("a", {})


async def test_a_failing_filter_fails_post_and_not_the_next_event() -> None:
    out = RecordingOutput()
    collector = Collector()

    def picky(event: Event) -> Event:
        if event["n"] == 1:
            raise ValueError("no ones")
        return event

    collector.filter("**", picky)
    collector.output("**", out)
    async with collector:
        with pytest.raises(ValueError, match="no ones"):
            await collector.post("a", {"n": 1})
        await collector.post("a", {"n": 2})
    assert [e["n"] for e in out.events] == [2]


async def test_every_matching_output_gets_the_event() -> None:
    clicks, everything, web = RecordingOutput(), RecordingOutput(), RecordingOutput()
    collector = Collector()
    collector.output("app.click", clicks)
    collector.output("**", everything)
    collector.output("web.**", web)
    async with collector:
        await collector.post("app.click", {"n": 1})
        await collector.post("app.view", {"n": 2})
        await collector.post("web", {"n": 3})
    assert [e["n"] for e in clicks.events] == [1]
    assert [e["n"] for e in everything.events] == [1, 2, 3]
    assert [e["n"] for e in web.events] == [3]


async def test_an_output_registered_twice_gets_the_event_once() -> None:
    out = RecordingOutput()
    collector = Collector()
    collector.output("app.*", out)
    collector.output("app.**", out)
    async with collector:
        await collector.post("app.click", {})
    assert len(out.events) == 1
    assert out.started == 1
    assert out.closed == 1


async def test_unrouted_events_are_counted() -> None:
    collector = Collector()
    collector.output("app.**", RecordingOutput())
    async with collector:
        assert await collector.post("other", {}) is not None
    assert collector.stats().unrouted == 1


class Mutator(RecordingOutput):
    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        for event in events:
            event["mutated"] = True
            event["nested"]["x"] = "changed"
        return await super().send(events)


async def test_outputs_and_caller_do_not_share_event_objects() -> None:
    first, second = Mutator(), RecordingOutput()
    collector = Collector()
    collector.output("**", first)
    collector.output("**", second)
    original = {"nested": {"x": "original"}}
    async with collector:
        await collector.post("a", original)
    assert original == {"nested": {"x": "original"}}
    assert second.events[0]["nested"] == {"x": "original"}
    assert "mutated" not in second.events[0]


async def test_filters_do_not_change_the_callers_nested_objects() -> None:
    collector = Collector()
    collector.filter("**", redact("user.email"))
    collector.output("**", RecordingOutput())
    original = {"user": {"email": "a@example.com"}}
    async with collector:
        await collector.post("a", original)
    assert original == {"user": {"email": "a@example.com"}}


@pytest.mark.parametrize("event", [None, [("a", 1)], "text", 42])
async def test_non_mapping_events_are_a_type_error(event: Any) -> None:
    collector = Collector()
    collector.output("**", RecordingOutput())
    async with collector:
        with pytest.raises(TypeError, match="event must be a mapping"):
            await collector.post("a", event)


async def test_non_serialisable_events_fail_at_post() -> None:
    out = RecordingOutput()
    collector = Collector()
    collector.output("**", out)
    async with collector:
        with pytest.raises(errors.SerializationError, match="not JSON-serialisable"):
            await collector.post("a", {"x": object()})
        with pytest.raises(TypeError):
            await collector.post("a", {1: "int key"})
        await collector.post("a", {"ok": True})
    assert [e.get("ok") for e in out.events] == [True]


async def test_values_are_normalised_to_json() -> None:
    out = RecordingOutput()
    collector = Collector()
    collector.output("**", out)
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    async with collector:
        await collector.post("a", {"at": when, "t": (1, 2)})
    assert out.events[0]["at"] == "2024-05-01T12:00:00+00:00"
    assert out.events[0]["t"] == [1, 2]


@pytest.mark.parametrize("tag", ["", "a..b", "a.*", "a.**"])
async def test_invalid_tags_fail_at_post(tag: str) -> None:
    collector = Collector()
    collector.output("**", RecordingOutput())
    async with collector:
        with pytest.raises(ValueError, match="tag"):
            await collector.post(tag, {})


async def test_post_outside_async_with_is_refused() -> None:
    collector = Collector()
    collector.output("**", RecordingOutput())
    with pytest.raises(errors.CollectorClosed, match="not started"):
        await collector.post("a", {})
    async with collector:
        pass
    with pytest.raises(errors.CollectorClosed, match="closed"):
        await collector.post("a", {})


def test_configuration_errors() -> None:
    collector = Collector()
    with pytest.raises(ValueError, match="wildcards must come last"):
        collector.output("a.*.b", RecordingOutput())
    with pytest.raises(ValueError, match="empty part"):
        collector.filter("a..b", lambda e: e)
    with pytest.raises(TypeError, match="send"):
        collector.output("**", object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        collector.filter("**", "not callable")  # type: ignore[arg-type]


async def test_outputs_cannot_be_added_after_start() -> None:
    collector = Collector()
    async with collector:
        with pytest.raises(RuntimeError, match="before the collector starts"):
            collector.output("**", RecordingOutput())


async def test_async_with_starts_and_closes_outputs_once() -> None:
    a, b = RecordingOutput(), RecordingOutput()
    collector = Collector()
    collector.output("a", a)
    collector.output("b", b)
    async with collector:
        assert (a.started, b.started, a.closed) == (1, 1, 0)
    assert (a.closed, b.closed) == (1, 1)
    await collector.aclose()
    assert (a.closed, b.closed) == (1, 1)


class FailsToStart(RecordingOutput):
    async def start(self) -> None:
        raise OSError("cannot start")


async def test_a_failing_start_closes_the_outputs_already_started() -> None:
    good = RecordingOutput()
    collector = Collector()
    collector.output("a", good)
    collector.output("b", FailsToStart())
    with pytest.raises(OSError, match="cannot start"):
        async with collector:
            pass
    assert good.closed == 1


class Refuses(RecordingOutput):
    async def send(self, events: Sequence[Event]) -> Sequence[BaseException | None]:
        return [errors.BufferFull("full")] * len(events)


async def test_a_refusing_output_fails_post_after_the_others_got_it() -> None:
    good = RecordingOutput()
    collector = Collector()
    collector.output("**", Refuses())
    collector.output("**", good)
    async with collector:
        with pytest.raises(errors.BufferFull):
            await collector.post("a", {"n": 1})
    assert [e["n"] for e in good.events] == [1]
    assert collector.stats().failed == 1


# --- filter helpers -------------------------------------------------------------------


def test_add_fields_keeps_existing_unless_overwrite() -> None:
    add = add_fields({"app": "shop", "env": "prod"}, host=lambda e: f"h-{e['n']}")
    assert add({"n": 1, "env": "dev"}) == {"n": 1, "env": "dev", "app": "shop", "host": "h-1"}
    force = add_fields(env="prod", overwrite=True)
    assert force({"env": "dev"}) == {"env": "prod"}
    with pytest.raises(ValueError, match="non-empty"):
        add_fields({"": 1})


def test_sample_with_a_seed_is_repeatable() -> None:
    events = [{"n": i} for i in range(2000)]

    def decisions(seed: int) -> list[bool]:
        keep = sample(0.25, seed=seed)
        return [keep(dict(e)) is not None for e in events]

    first = decisions(7)
    assert decisions(7) == first
    assert decisions(8) != first
    assert 400 < sum(first) < 600


def test_sample_edges_and_validation() -> None:
    assert all(sample(1.0)({"n": i}) is not None for i in range(100))
    assert all(sample(0.0)({"n": i}) is None for i in range(100))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        sample(1.5)
    with pytest.raises(TypeError):
        sample("half")  # type: ignore[arg-type]


def test_sample_by_key_keeps_or_drops_a_user_consistently() -> None:
    keep = sample(0.5, key="user_id", seed=1)
    decisions: dict[str, set[bool]] = {}
    for i in range(1000):
        user = f"u{i % 50}"
        decisions.setdefault(user, set()).add(keep({"user_id": user, "n": i}) is not None)
    assert all(len(d) == 1 for d in decisions.values())
    kept_users = sum(1 for d in decisions.values() if True in d)
    assert 10 < kept_users < 40
    assert keep({"n": 1}) is not None  # no key field: kept
    same = sample(0.5, key="user_id", seed=1)
    assert all((same({"user_id": u}) is not None) == (True in d) for u, d in decisions.items())


def test_redact_replaces_or_removes_nested_fields() -> None:
    hide = redact("password", "user.email", "missing.path")
    event = {"password": "s3cret", "user": {"email": "a@b", "id": 1}, "n": 1}
    assert hide(event) == {
        "password": "[REDACTED]",
        "user": {"email": "[REDACTED]", "id": 1},
        "n": 1,
    }
    drop = redact("user.email", remove=True)
    assert drop({"user": {"email": "a@b", "id": 1}}) == {"user": {"id": 1}}
    assert drop({"user": "not a dict"}) == {"user": "not a dict"}
    with pytest.raises(ValueError, match="invalid field path"):
        redact("a..b")
    with pytest.raises(ValueError, match="at least one"):
        redact()


# --- plain outputs --------------------------------------------------------------------


async def test_stdout_output_writes_json_lines() -> None:
    stream = io.StringIO()
    collector = Collector()
    collector.output("**", StdoutOutput(stream=stream))
    async with collector:
        await collector.post("a", {"n": 1})
        await collector.post("a", {"n": 2})
    lines = stream.getvalue().splitlines()
    assert [orjson.loads(line)["n"] for line in lines] == [1, 2]


async def test_stdout_output_defaults_to_sys_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    collector = Collector()
    collector.output("**", StdoutOutput())
    async with collector:
        await collector.post("a", {"n": 1})
    assert orjson.loads(capsys.readouterr().out)["n"] == 1


async def test_file_output_appends_ndjson_with_private_mode(tmp_path: Path) -> None:
    path = tmp_path / "events.ndjson"
    for round_ in range(2):
        collector = Collector()
        collector.output("**", FileOutput(path, fsync=True))
        async with collector:
            await collector.post("a", {"round": round_})
    assert [orjson.loads(line)["round"] for line in path.read_bytes().splitlines()] == [0, 1]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
