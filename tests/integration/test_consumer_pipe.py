"""Consumer.pipe(S3Sink): everything lands in S3; only what S3 holds is checkpointed."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import anyio.abc
import orjson
import pytest

from shardflow import Consumer, DynamoDBLeases, MemoryCheckpointer, Record, S3Sink, errors
from shardflow.sinks import Durable

from support import create_stream, list_shards, unique_name
from support_consumer import (
    POLL,
    GrantingCheckpointer,
    collect,
    no_more,
    put_records,
    wait_until,
)
from support_leases import wait_loads
from support_sinks import all_lines, list_keys, new_bucket, s3, wait_for


async def test_pipe_archives_everything_and_resumes_after_it(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=2)
    bucket = new_bucket(moto_url)
    items = [(f"user-{i % 20}", orjson.dumps({"i": i})) for i in range(300)]
    put_records(moto_url, stream, items)
    checkpointer = MemoryCheckpointer()

    def archived() -> list[int]:
        return [line["i"] for _, line in all_lines(moto_url, bucket)]

    async with Consumer(
        stream, app_name="archive", checkpointer=checkpointer, endpoint_url=moto_url,
        poll_interval=POLL,
    ) as consumer:
        sink = S3Sink(bucket, prefix="logs", max_bytes=2_000, max_interval=0.5, stream=stream,
                      endpoint_url=moto_url, compression="gzip")
        async with anyio.create_task_group() as tg:
            tg.start_soon(consumer.pipe, sink)
            with anyio.fail_after(30):
                while len(await anyio.to_thread.run_sync(archived)) < len(items):  # noqa: ASYNC110
                    await anyio.sleep(0.1)  # polling S3 from outside, no event to wait on
            await consumer.aclose()

    lines = await anyio.to_thread.run_sync(archived)
    assert sorted(lines) == list(range(len(items)))

    # Everything S3 holds was checkpointed: a new consumer of the same app sees nothing.
    async with Consumer(
        stream, app_name="archive", checkpointer=checkpointer, endpoint_url=moto_url,
        poll_interval=POLL,
    ) as again:
        assert await no_more(again) == []


async def test_pipe_keeps_going_when_a_lease_moves_to_a_joining_worker(
    kinesalite_url: str, moto_url: str
) -> None:
    stream = create_stream(kinesalite_url, shards=4)
    bucket = new_bucket(moto_url)
    table = unique_name("leases")
    sent: list[int] = []

    def archived() -> set[int]:
        return {line["i"] for _, line in all_lines(moto_url, bucket)}

    async def worker(name: str, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        leases = DynamoDBLeases(table, worker_id=name, failover_time=1.5, endpoint_url=moto_url)
        async with Consumer(
            stream, app_name="archive", checkpointer=leases, endpoint_url=kinesalite_url,
            poll_interval=POLL,
        ) as consumer:
            task_status.started()
            await consumer.pipe(S3Sink(bucket, max_interval=0.3, stream=stream,
                                       endpoint_url=moto_url))

    async def produce(stop: anyio.Event) -> None:
        # Records keep flowing, so the first worker holds unsaved positions when a
        # lease is taken from it.
        while not stop.is_set():
            batch = [(f"user-{i % 37}", orjson.dumps({"i": i}))
                     for i in range(len(sent), len(sent) + 40)]
            await anyio.to_thread.run_sync(put_records, kinesalite_url, stream, batch)
            sent.extend(orjson.loads(data)["i"] for _, data in batch)
            await anyio.sleep(0.05)

    stop = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(produce, stop)
        first = anyio.CancelScope()

        async def run_first(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with first:
                await worker("first", task_status=task_status)

        await group.start(run_first)
        await wait_loads(moto_url, table, lambda c: c.get("first") == 4, within=30)
        second = anyio.CancelScope()

        async def run_second(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with second:
                await worker("second", task_status=task_status)

        await group.start(run_second)
        counts = await wait_loads(
            moto_url, table, lambda c: c.get("first") == 2 and c.get("second") == 2, within=30
        )
        stop.set()
        with anyio.fail_after(30):
            while not set(sent) <= await anyio.to_thread.run_sync(archived):  # noqa: ASYNC110
                await anyio.sleep(0.2)  # polling S3 from outside, no event to wait on
        first.cancel()
        second.cancel()
    print(f"{len(sent)} records archived by a group that rebalanced to {dict(counts)}")


async def test_a_revoked_shard_is_discarded_by_the_sink_not_written(
    kinesalite_url: str, moto_url: str
) -> None:
    kinesis_url, s3_url = kinesalite_url, moto_url
    stream = create_stream(kinesis_url, shards=2)
    bucket = new_bucket(s3_url)
    shards = sorted(s["ShardId"] for s in list_shards(kinesis_url, stream))
    items = [(f"user-{i % 20}", orjson.dumps({"i": i})) for i in range(200)]
    put_records(kinesis_url, stream, items)
    checkpointer = GrantingCheckpointer(set(shards))
    sink = S3Sink(bucket, max_interval=3600, stream=stream, endpoint_url=s3_url)
    async with Consumer(
        stream, app_name="archive", checkpointer=checkpointer, endpoint_url=kinesis_url,
        poll_interval=POLL,
    ) as consumer, anyio.create_task_group() as tg:
        tg.start_soon(consumer.pipe, sink)
        # Both shards' records sit in the sink's open objects (nothing is due yet).
        await wait_until(lambda: sink.stats().buffered_records == len(items), within=20)
        checkpointer.take_away(shards[0])
        await wait_until(lambda: sink.stats().buffered_records < len(items), within=10)
        await consumer.aclose()
    keys = [key for key, _ in all_lines(s3_url, bucket)]
    assert keys
    assert all(shards[0] not in key for key in keys), "the revoked shard was written"
    assert shards[0] not in checkpointer.positions
    assert shards[1] in checkpointer.positions


def delete_bucket(url: str, bucket: str) -> None:
    client = s3(url)
    for key in list_keys(url, bucket):
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)


async def test_an_idle_pipe_raises_when_its_bucket_is_gone(
    kinesalite_url: str, moto_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The records after the bucket went sit in the sink until its interval timer tries
    to write them; no record arrives after that, yet pipe() raises the sink's own
    error (S3Sink classes a missing bucket as permanent), and nothing unstored is
    checkpointed."""
    stream = create_stream(kinesalite_url, shards=1)
    bucket = new_bucket(moto_url)
    checkpointer = MemoryCheckpointer()
    put_records(kinesalite_url, stream, [("k", b'{"i":0}')])
    sink = S3Sink(bucket, max_interval=0.3, stream=stream, endpoint_url=moto_url)

    async def delete_the_bucket_then_write() -> None:
        await wait_for(lambda: list_keys(moto_url, bucket), what="the first object")
        await anyio.to_thread.run_sync(delete_bucket, moto_url, bucket)
        await anyio.to_thread.run_sync(
            put_records, kinesalite_url, stream, [("k", b'{"i":1}'), ("k", b'{"i":2}')]
        )

    async with Consumer(
        stream, app_name="archive", checkpointer=checkpointer, endpoint_url=kinesalite_url,
        poll_interval=POLL,
    ) as consumer, anyio.create_task_group() as tg:
        tg.start_soon(delete_the_bucket_then_write)
        with pytest.raises(errors.ResourceNotFound, match=bucket), anyio.fail_after(20):
            await consumer.pipe(sink)
    assert "stopped retrying" in caplog.text
    assert caplog.text.count("could not write") == 0  # no retry loop on a permanent error
    # The two records the bucket never got are read again by the next run.
    async with Consumer(
        stream, app_name="archive", checkpointer=checkpointer, endpoint_url=kinesalite_url,
        poll_interval=POLL,
    ) as again:
        assert [r.json()["i"] for r in await collect(again, 2)] == [1, 2]


class Broken(Exception):
    pass


class FailingSink:
    """A Sink whose write() fails on the second batch (it has no discard())."""

    def __init__(self) -> None:
        self.batches = 0

    async def __aenter__(self) -> FailingSink:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def write(self, records: Sequence[Record]) -> Durable:
        self.batches += 1
        if self.batches > 1:
            raise Broken("the sink broke")
        return {}

    async def flush(self) -> Durable:
        return {}

    async def aclose(self) -> Durable:
        return {}


async def test_pipe_raises_the_sinks_own_write_error(
    kinesalite_url: str, moto_url: str
) -> None:
    stream = create_stream(kinesalite_url, shards=2)
    bucket = new_bucket(moto_url)
    put_records(kinesalite_url, stream, [(f"k{i}", b"%d" % i) for i in range(20)])
    async with Consumer(
        stream, endpoint_url=kinesalite_url, poll_interval=POLL, get_records_limit=5
    ) as consumer:
        with pytest.raises(Broken, match="the sink broke"), anyio.fail_after(20):
            await consumer.pipe(FailingSink())
    # S3Sink, which has discard() (the pipe forwards revocations to it), with traffic.
    async with Consumer(stream, endpoint_url=kinesalite_url, poll_interval=POLL) as consumer:
        sink = S3Sink(bucket, max_bytes=1, endpoint_url=moto_url)
        await anyio.to_thread.run_sync(delete_bucket, moto_url, bucket)
        with pytest.raises(errors.ResourceNotFound, match=bucket), anyio.fail_after(20):
            await consumer.pipe(sink)


async def test_an_idle_pipe_checkpoints_what_the_sink_wrote_in_the_background(
    kinesalite_url: str, moto_url: str
) -> None:
    """The sink's timer writes the object after the last record came; with no traffic
    since, pipe() still collects that position (write([]) after an idle second) and
    checkpoints it, as a closed shard's SHARD_END must be for its children to start."""
    stream = create_stream(kinesalite_url, shards=1)
    bucket = new_bucket(moto_url)
    put_records(kinesalite_url, stream, [("k", b'{"i":0}'), ("k", b'{"i":1}')])
    sink = S3Sink(bucket, max_interval=0.3, stream=stream, endpoint_url=moto_url)
    async with Consumer(
        stream, app_name="archive", checkpointer=MemoryCheckpointer(),
        endpoint_url=kinesalite_url, poll_interval=POLL,
    ) as consumer, anyio.create_task_group() as tg:
        tg.start_soon(consumer.pipe, sink)
        await wait_for(lambda: list_keys(moto_url, bucket), what="the object")
        assert consumer.stats().records_delivered == 2
        await wait_until(lambda: consumer.stats().checkpoints_saved == 1, within=10)
        await consumer.aclose()
    assert consumer.stats().checkpoints_saved == 1  # the close found nothing left to store
