"""Collector → BufferedOutput (spool) → KinesisOutput → Producer → a real endpoint."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest

from shardflow import BufferedOutput, Collector, KinesisOutput, Producer, errors
from shardflow.collector import add_fields, redact

from support import create_stream, read_stream, unique_name
from support_collector import wait_until


def stream_events(url: str, stream: str) -> list[tuple[str, dict[str, Any]]]:
    return [(r["PartitionKey"], orjson.loads(r["Data"])) for r in read_stream(url, stream)]


async def test_events_reach_the_stream_keyed_by_a_field(kinesis_url: str, tmp_path: Path) -> None:
    stream = create_stream(kinesis_url, shards=2)
    async with Producer(stream, endpoint_url=kinesis_url, linger=0.01) as producer:
        collector = Collector()
        collector.filter("app.**", add_fields(app="shop"))
        collector.filter("app.login", redact("password"))
        collector.output(
            "app.**",
            BufferedOutput(
                KinesisOutput(producer, partition_key="user_id"),
                spool=tmp_path / "spool.db",
                flush_interval=0.05,
                max_batch=100,
            ),
        )
        async with collector:
            posted = {}
            for i in range(250):
                tag = "app.login" if i % 10 == 0 else "app.click"
                event = {"user_id": f"u{i % 7}", "n": i, "password": "hunter2"}
                posted[await collector.post(tag, event)] = (tag, event)
            await collector.post("other.tag", {"n": -1})  # no output matches
    records = stream_events(kinesis_url, stream)
    by_id = {e["event_id"]: (key, e) for key, e in records}
    assert set(by_id) == set(posted)
    for event_id, (tag, event) in posted.items():
        key, sent = by_id[event_id]
        assert key == event["user_id"]
        assert sent["tag"] == tag
        assert sent["app"] == "shop"
        assert sent["n"] == event["n"]
        assert sent["password"] == ("[REDACTED]" if tag == "app.login" else "hunter2")
        assert isinstance(sent["time"], float)


async def test_events_without_the_key_field_are_keyed_by_event_id(moto_url: str) -> None:
    stream = create_stream(moto_url)
    async with Producer(stream, endpoint_url=moto_url, linger=0.01) as producer:
        collector = Collector()
        collector.output(
            "**",
            BufferedOutput(KinesisOutput(producer, partition_key="user_id"), flush_interval=0.05),
        )
        async with collector:
            with_key = await collector.post("a", {"user_id": 42})
            without = await collector.post("a", {"other": 1})
    keys = {e["event_id"]: key for key, e in stream_events(moto_url, stream)}
    assert keys == {with_key: "42", without: without}


async def test_a_key_function_and_bad_keys_do_not_poison_the_batch(moto_url: str) -> None:
    stream = create_stream(moto_url)
    dropped: list[tuple[Any, str]] = []
    async with Producer(stream, endpoint_url=moto_url, linger=0.01) as producer:
        buffered = BufferedOutput(
            KinesisOutput(producer, partition_key=lambda e: e["k"]),
            flush_interval=0.05,
            on_drop=lambda events, why: dropped.extend((e["n"], why) for e in events),
        )
        collector = Collector()
        collector.output("**", buffered)
        async with collector:
            await collector.post("a", {"k": "good", "n": 0})
            await collector.post("a", {"k": "", "n": 1})  # empty key: rejected by put()
            await collector.post("a", {"k": "x" * 300, "n": 2})  # too long: rejected
            await collector.post("a", {"n": 3})  # the key function raises KeyError
            await collector.post("a", {"k": "good", "n": 4})
            await collector.flush()
            assert buffered.stats().dropped_rejected == 3
    sent = sorted(e["n"] for _, e in stream_events(moto_url, stream))
    assert sent == [0, 4]
    assert sorted(dropped) == [(1, "rejected"), (2, "rejected"), (3, "rejected")]


async def test_events_wait_in_the_spool_until_the_producer_can_start(
    moto_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The stream does not exist yet: the producer starts (without reaching the
    endpoint) and refuses records once it learns the stream is missing; events stay
    spooled, and go once the stream exists (the producer checks again)."""
    name = unique_name("late")
    output = KinesisOutput(
        lambda: Producer(name, endpoint_url=moto_url, linger=0.01), partition_key="k"
    )
    buffered = BufferedOutput(
        output, spool=tmp_path / "s.db", flush_interval=0.02, backoff_base=0.05, backoff_cap=0.2
    )
    async with buffered:
        for i in range(20):
            await buffered.post({"k": f"k{i}", "n": i})
        await wait_until(lambda: "ResourceNotFound" in caplog.text)
        assert buffered.stats().buffered == 20
        # in a thread: the loop may be half-way through a request to the one-threaded moto
        await anyio.to_thread.run_sync(lambda: create_stream(moto_url, name=name))
        with anyio.fail_after(30):
            await buffered.flush()
        assert buffered.stats().sent == 20
    counts = Counter(e["n"] for _, e in stream_events(moto_url, name))
    assert set(counts) == set(range(20))


def test_kinesis_output_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match="put"):
        KinesisOutput(object())  # type: ignore[arg-type]
    with pytest.raises(errors.ProducerClosed):
        anyio.run(KinesisOutput(lambda: Producer("s")).send, [{"n": 1}])
    with pytest.raises(TypeError, match="partition_key"):
        KinesisOutput(_FakeProducer(), partition_key="")


class _FakeProducer:
    async def put(self, obj: Any, *, partition_key: str) -> Any:
        raise AssertionError("not called")
