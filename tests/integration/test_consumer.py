"""The Consumer against real endpoints: delivery, start positions, checkpoints, close."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest

from shardflow import Consumer, MemoryCheckpointer, Record, SQLiteCheckpointer, errors

from support import create_stream, kinesis, read_stream, unique_name
from support_consumer import (
    POLL,
    assert_per_key_order,
    collect,
    no_more,
    numbered,
    put_records,
    wait_until,
)


def by_shard(records: list[Record]) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        out[record.shard_id].append(record)
    return out


async def test_every_record_delivered_exactly_once(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=4)
    items = numbered(800)
    put_records(kinesis_url, name, items)
    async with Consumer(name, endpoint_url=kinesis_url, poll_interval=POLL) as consumer:
        got = await collect(consumer, len(items))
        assert await no_more(consumer) == []
        stats = consumer.stats()
    assert sorted(r.data for r in got) == sorted(data for _, data in items)
    assert len(by_shard(got)) == 4
    assert stats.records_delivered == len(items)
    for shard_records in by_shard(got).values():
        positions = [r.position for r in shard_records]
        assert positions == sorted(positions)
        assert len(set(positions)) == len(positions)
    assert_per_key_order(got)


async def test_record_fields(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=1)
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    [result] = put_records(kinesis_url, name, [("user-42", b'{"n": 1}')])
    async with Consumer(name, endpoint_url=kinesis_url, poll_interval=POLL) as consumer:
        [record] = await collect(consumer, 1)
    assert record.data == b'{"n": 1}'
    assert record.json() == {"n": 1}
    assert record.partition_key == "user-42"
    assert record.sequence_number == result["SequenceNumber"]
    assert record.shard_id == result["ShardId"]
    assert record.sub_sequence_number is None
    assert record.arrival_time.utcoffset() == timedelta(0)
    assert record.arrival_time > before


async def test_interleaves_shards_fairly(kinesalite_url: str) -> None:
    # Two busy shards: the first records delivered come from both, not one shard first.
    name = create_stream(kinesalite_url, shards=2)
    shard_keys = _keys_per_shard(kinesalite_url, name, 2)
    items = [(key, f"r:{key}:{i}".encode()) for i in range(300) for key in shard_keys]
    put_records(kinesalite_url, name, items)
    async with Consumer(
        name, endpoint_url=kinesalite_url, poll_interval=POLL, get_records_limit=50
    ) as consumer:
        got = await collect(consumer, len(items))
    first_half = got[: len(got) // 2]
    counts = {shard: len(rs) for shard, rs in by_shard(first_half).items()}
    assert len(counts) == 2
    assert min(counts.values()) >= len(first_half) // 4


def _keys_per_shard(url: str, name: str, shards: int) -> list[str]:
    """One partition key landing on each shard (found by writing probes)."""
    client = kinesis(url)
    found: dict[str, str] = {}
    for i in itertools.count():
        key = f"probe-{i}"
        shard = client.put_record(StreamName=name, PartitionKey=key, Data=b"probe")["ShardId"]
        found.setdefault(shard, key)
        if len(found) == shards:
            return sorted(found.values())
    raise AssertionError("unreachable")


async def test_idle_shards_deliver_promptly(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=8)
    async with Consumer(name, endpoint_url=kinesis_url, poll_interval=POLL) as consumer:
        # Every shard is being polled (and found idle) before the record is written.
        await wait_until(lambda: consumer.stats().get_records_calls >= 16)
        await anyio.to_thread.run_sync(put_records, kinesis_url, name, [("late", b"hello")])
        # A few poll intervals, not one per idle shard.
        [record] = await collect(consumer, 1, within=10 * POLL)
    assert record.data == b"hello"


async def test_latest_skips_what_was_there(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    put_records(kinesis_url, name, numbered(50, prefix="old"))
    async with Consumer(
        name, endpoint_url=kinesis_url, poll_interval=POLL, start_at="LATEST"
    ) as consumer:
        await wait_until(lambda: consumer.stats().get_records_calls >= 2)
        new = numbered(30, prefix="new")
        await anyio.to_thread.run_sync(put_records, kinesis_url, name, new)
        got = await collect(consumer, 30)
        assert await no_more(consumer) == []
    assert sorted(r.data for r in got) == sorted(d for _, d in new)


async def test_at_timestamp(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    put_records(kinesis_url, name, numbered(20, prefix="old"))
    newest_old = max(r["ApproximateArrivalTimestamp"] for r in read_stream(kinesis_url, name))
    start = newest_old + timedelta(milliseconds=5)
    # Write the new records only once the clock has passed the start time.
    while datetime.now(timezone.utc) <= start + timedelta(milliseconds=5):  # noqa: ASYNC110
        await anyio.sleep(0.005)
    new = numbered(20, prefix="new")
    put_records(kinesis_url, name, new)
    async with Consumer(
        name, endpoint_url=kinesis_url, poll_interval=POLL, start_at=start
    ) as consumer:
        got = await collect(consumer, 20)
        assert await no_more(consumer) == []
    assert sorted(r.data for r in got) == sorted(d for _, d in new)


async def test_missing_stream(kinesis_url: str) -> None:
    consumer = Consumer(unique_name("missing"), endpoint_url=kinesis_url)
    with pytest.raises(errors.StreamNotFound):
        await consumer.__aenter__()
    await consumer.aclose()  # still safe


async def test_checkpoint_and_resume_in_memory(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=3)
    items = numbered(300)
    put_records(kinesis_url, name, items)
    checkpointer = MemoryCheckpointer()
    expected = await _read_and_checkpoint_half(kinesis_url, name, checkpointer, len(items))
    async with Consumer(
        name, endpoint_url=kinesis_url, poll_interval=POLL, app_name="app",
        checkpointer=checkpointer,
    ) as consumer:
        rest = await collect(consumer, len(expected))
        assert await no_more(consumer) == []
    assert sorted(r.data for r in rest) == sorted(expected)
    # Another application on the same checkpointer starts from the beginning.
    async with Consumer(
        name, endpoint_url=kinesis_url, poll_interval=POLL, app_name="other",
        checkpointer=checkpointer,
    ) as consumer:
        assert len(await collect(consumer, len(items))) == len(items)


async def test_checkpoint_and_resume_with_sqlite(kinesalite_url: str, tmp_path: Path) -> None:
    name = create_stream(kinesalite_url, shards=3)
    items = numbered(300)
    put_records(kinesalite_url, name, items)
    path = tmp_path / "cp.db"
    expected = await _read_and_checkpoint_half(
        kinesalite_url, name, SQLiteCheckpointer(path), len(items)
    )
    async with Consumer(
        name, endpoint_url=kinesalite_url, poll_interval=POLL, app_name="app",
        checkpointer=SQLiteCheckpointer(path),
    ) as consumer:
        rest = await collect(consumer, len(expected))
        assert await no_more(consumer) == []
    assert sorted(r.data for r in rest) == sorted(expected)


async def _read_and_checkpoint_half(
    url: str, name: str, checkpointer: MemoryCheckpointer | SQLiteCheckpointer, total: int
) -> list[bytes]:
    """Read everything, checkpoint the middle record of each shard; return what is after."""
    async with Consumer(
        name, endpoint_url=url, poll_interval=POLL, app_name="app", checkpointer=checkpointer
    ) as consumer:
        got = await collect(consumer, total)
        after: list[bytes] = []
        for records in by_shard(got).values():
            middle = len(records) // 2
            # Checkpoints are monotonic: an earlier record afterwards changes nothing.
            await consumer.checkpoint(records[middle])
            await consumer.checkpoint(records[0])
            after.extend(r.data for r in records[middle + 1 :])
        stats = consumer.stats()
    assert stats.checkpoints_saved == 3
    assert 0 < len(after) < total
    return after


async def test_checkpoint_rules(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=1)
    put_records(kinesalite_url, name, numbered(5))
    consumer = Consumer(name, endpoint_url=kinesalite_url, poll_interval=POLL)
    with pytest.raises(RuntimeError, match="start the Consumer"):
        await consumer.checkpoint(_fake_record("shardId-000000000000"))
    async with consumer:
        got = await collect(consumer, 5)
        with pytest.raises(TypeError):
            await consumer.checkpoint("not a record")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="not read by this consumer"):
            await consumer.checkpoint(_fake_record("shardId-000000000099"))
        with pytest.raises(ValueError, match="not delivered") as info:
            await consumer.checkpoint(_fake_record(got[0].shard_id, "9" * 56))
        assert str(info.value) == (
            f"cannot checkpoint the record at sequence number {'9' * 56} of "
            f"{got[0].shard_id}: this consumer has not delivered it"
        )
        with pytest.raises(ValueError, match=r"9, sub-sequence number 3 of shardId-0+: "):
            await consumer.checkpoint(_fake_record(got[0].shard_id, "9" * 56, sub=3))
        await consumer.checkpoint(got[-1])
    with pytest.raises(errors.ConsumerClosed):
        await consumer.checkpoint(got[-1])


def _fake_record(shard_id: str, seq: str = "1", sub: int | None = None) -> Record:
    return Record(b"x", "k", seq, sub, shard_id, datetime.now(timezone.utc))


async def test_batches_are_per_shard_and_ordered(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=3)
    items = numbered(600)
    put_records(kinesalite_url, name, items)
    seen: list[Record] = []
    async with Consumer(
        name, endpoint_url=kinesalite_url, poll_interval=POLL, get_records_limit=70
    ) as consumer:
        with anyio.fail_after(20):
            async for batch in consumer.batches():
                assert batch
                assert len(batch) <= 70
                assert len({r.shard_id for r in batch}) == 1
                positions = [r.position for r in batch]
                assert positions == sorted(positions)
                seen.extend(batch)
                if len(seen) >= len(items):
                    break
        with pytest.raises(RuntimeError, match="already read"):
            await consumer.shards().__anext__()
    assert sorted(r.data for r in seen) == sorted(d for _, d in items)
    assert_per_key_order(seen)


async def test_batches_take_max_records_and_a_timeout(kinesalite_url: str) -> None:
    """As aiokafka's getmany(max_records=..., timeout_ms=...): lists of at most
    max_records, handed out without waiting to fill them, and an empty list when nothing
    came within the timeout."""
    name = create_stream(kinesalite_url, shards=1)
    items = numbered(50)
    put_records(kinesalite_url, name, items)
    async with Consumer(name, endpoint_url=kinesalite_url, poll_interval=POLL) as consumer:
        with pytest.raises(ValueError, match="max_records"):
            consumer.batches(max_records=0)
        with pytest.raises(TypeError, match="max_records"):
            consumer.batches(max_records=1.5)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="timeout"):
            consumer.batches(timeout=0)
        first = await collect(consumer, 3)  # async for and batches() share one queue
        got, sizes, empty_at = list(first), [], []
        late = [(f"late-{i}", b"late-%d" % i) for i in range(3)]
        with anyio.fail_after(20):
            async for batch in consumer.batches(max_records=7, timeout=POLL):
                if batch:
                    sizes.append(len(batch))
                    got += batch
                else:  # idle: an empty list; then new records come
                    empty_at.append(len(got))
                    if len(empty_at) == 1:
                        await anyio.to_thread.run_sync(put_records, kinesalite_url, name, late)
                if len(got) == len(items) + len(late):
                    break
    assert empty_at
    assert set(empty_at) == {len(items)}  # only once everything in hand was handed out
    assert max(sizes) == 7
    assert sizes[:6] == [7] * 6  # 47 left of the first response: 7 x 6, then 5
    assert [r.data for r in got] == [d for _, d in items + late]


async def test_records_then_batches_lose_nothing(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=1)
    items = numbered(100)
    put_records(kinesalite_url, name, items)
    async with Consumer(name, endpoint_url=kinesalite_url, poll_interval=POLL) as consumer:
        first = await collect(consumer, 10)  # leaves 90 of the first batch in hand
        rest: list[Record] = []
        with anyio.fail_after(10):
            async for batch in consumer.batches():
                rest.extend(batch)
                if len(first) + len(rest) >= len(items):
                    break
    assert [r.data for r in first + rest] == [d for _, d in items]


async def test_slow_application_bounds_the_buffer(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=1)
    put_records(kinesalite_url, name, numbered(2000))
    async with Consumer(
        name, endpoint_url=kinesalite_url, poll_interval=POLL,
        max_buffer_records=500, get_records_limit=500,
    ) as consumer:
        await wait_until(lambda: consumer.stats().records_buffered >= 500)
        calls = consumer.stats().get_records_calls
        # Several read intervals go by with nobody taking records: no more fetching.
        await anyio.sleep(6 * POLL)
        stats = consumer.stats()
        assert stats.records_buffered <= 500
        assert stats.get_records_calls == calls
        got = await collect(consumer, 2000)
    assert len({r.data for r in got}) == 2000


async def test_close_from_another_task_ends_iteration(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=2)
    consumer = Consumer(name, endpoint_url=kinesalite_url, poll_interval=POLL)
    ended = anyio.Event()

    async def iterate() -> None:
        async for _ in consumer:
            pass
        ended.set()

    async with consumer:
        async with anyio.create_task_group() as tg:
            tg.start_soon(iterate)
            await wait_until(lambda: consumer.stats().get_records_calls >= 2)
            with anyio.fail_after(5):
                await consumer.aclose()
                await ended.wait()
        await consumer.aclose()  # idempotent
    await consumer.aclose()
    with pytest.raises(StopAsyncIteration):
        await consumer.__anext__()


async def test_enter_twice_and_unstarted_iteration(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=1)
    consumer = Consumer(name, endpoint_url=kinesalite_url)
    with pytest.raises(RuntimeError, match="start the Consumer"):
        await consumer.__anext__()
    async with consumer:
        with pytest.raises(RuntimeError, match="started once"):
            await consumer.__aenter__()


async def test_errors_of_the_block_propagate_unwrapped(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=1)
    with pytest.raises(ZeroDivisionError):
        async with Consumer(name, endpoint_url=kinesalite_url):
            1 / 0  # noqa: B018


async def test_cancelling_the_block_closes_cleanly(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=2)
    consumer = Consumer(name, endpoint_url=kinesalite_url, poll_interval=POLL)
    with anyio.move_on_after(0.5) as scope:
        async with consumer:
            async for _ in consumer:
                pass
    assert scope.cancelled_caught
    stats = consumer.stats()  # counters stay readable after close
    assert stats.shards_reading == 0
    assert stats.get_records_calls >= 2
    with pytest.raises(errors.ConsumerClosed):
        await consumer.checkpoint(_fake_record("shardId-000000000000"))


async def test_a_deleted_stream_fails_the_iteration(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=2)
    put_records(kinesalite_url, name, numbered(10))
    async with Consumer(name, endpoint_url=kinesalite_url, poll_interval=POLL) as consumer:
        await collect(consumer, 10)
        await anyio.to_thread.run_sync(
            lambda: kinesis(kinesalite_url).delete_stream(StreamName=name)
        )
        with pytest.raises(errors.StreamNotFound), anyio.fail_after(10):
            async for _ in consumer:
                pass
