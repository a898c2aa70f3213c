"""S3Sink under faults (FaultProxy in front of moto's S3), cancellation, and pipe()."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack

import anyio
import anyio.lowlevel
import pytest

from shardflow import Record, errors
from shardflow._core import aws as _aws
from shardflow.sinks import S3Sink, pipe
from shardflow.testing import FaultProxy

from support_sinks import all_lines, etags, list_keys, make_records, new_bucket, s3, wait_for

SHARD = "shardId-000000000000"


async def test_server_errors_are_retried(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(60)
    async with (
        FaultProxy(moto_url, seed=3, error_5xx_fraction=0.4, operations={"*"}) as proxy,
        AsyncExitStack() as stack,
    ):
        client = await _aws.open_client(stack, "s3", endpoint_url=proxy.url)
        async with S3Sink(bucket, max_bytes=200, client=client) as sink:
            for i in range(0, 60, 7):
                await sink.write(records[i : i + 7])
        assert proxy.counts["errors_5xx"] > 0
    assert [line["n"] for _, line in all_lines(moto_url, bucket)] == list(range(60))


async def test_cancelled_write_keeps_accepted_records(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(6)
    async with FaultProxy(moto_url, operations={"*"}) as proxy, AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "s3", endpoint_url=proxy.url)
        async with S3Sink(bucket, max_bytes=1, client=client) as sink:
            assert await sink.write(records[:1]) == {SHARD: records[0]}
            proxy.configure(stall=True)
            with anyio.move_on_after(0.3) as scope:
                await sink.write(records[1:4])  # accepted, then stuck writing
            assert scope.cancelled_caught
            stats = sink.stats()
            assert (stats.objects, stats.pending_objects) == (1, 3)
            proxy.configure(stall=False)
            # resending is harmless: these are duplicates now
            durable = await sink.write(records[1:5])
            assert durable == {SHARD: records[4]}
            assert sink.stats().duplicates_skipped == 3
    assert [line["n"] for _, line in all_lines(moto_url, bucket)] == [0, 1, 2, 3, 4]


async def test_cancelled_while_listing_accepts_nothing(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(3)
    async with FaultProxy(moto_url, operations={"*"}) as proxy, AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "s3", endpoint_url=proxy.url)
        async with S3Sink(bucket, client=client) as sink:
            proxy.configure(stall=True)
            with anyio.move_on_after(0.3) as scope:
                await sink.write(records)  # the replay check (a LIST) hangs
            assert scope.cancelled_caught
            assert sink.stats().buffered_records == 0
            proxy.configure(stall=False)
            await sink.write(records)
            assert sink.stats().duplicates_skipped == 0
    assert [line["n"] for _, line in all_lines(moto_url, bucket)] == [0, 1, 2]


async def test_timer_retries_failed_objects(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(3)
    async with FaultProxy(moto_url, operations={"*"}) as proxy, AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "s3", endpoint_url=proxy.url)
        async with S3Sink(bucket, max_interval=0.1, client=client) as sink:
            await sink.write(records)
            proxy.configure(error_5xx_fraction=1.0)
            await wait_for(lambda: proxy.counts["errors_5xx"] >= 6, what="failing puts")
            assert list_keys(moto_url, bucket) == []
            proxy.configure(error_5xx_fraction=0.0)
            await wait_for(lambda: list_keys(moto_url, bucket), what="the retried object")
            assert await sink.write([]) == {SHARD: records[2]}


async def test_close_gives_up_after_close_timeout(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    async with FaultProxy(moto_url, operations={"*"}) as proxy, AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "s3", endpoint_url=proxy.url)
        sink = S3Sink(bucket, client=client, close_timeout=0.3)
        async with sink:
            await sink.write(make_records(2))
            proxy.configure(stall=True)
            with pytest.raises(errors.DeliveryFailed, match="not written"):
                await sink.aclose()
        assert sink.stats().buffered_records + sink.stats().pending_objects > 0
        proxy.configure(stall=False)
    assert list_keys(moto_url, bucket) == []


async def batches_of(records: Sequence[Record], size: int) -> AsyncIterator[Sequence[Record]]:
    for i in range(0, len(records), size):
        yield records[i : i + size]
        await anyio.lowlevel.checkpoint()


async def test_pipe_checkpoints_only_durable_records(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    a = make_records(50, shard="shardId-000000000001")
    b = make_records(30, shard="shardId-000000000002", start=500)
    mixed = [r for pair in zip(a, b, strict=False) for r in pair] + a[30:]
    checkpoints: list[Record] = []

    async def checkpoint(record: Record) -> None:
        # everything up to the checkpoint is in S3 at the time it is taken
        stored = {line["n"] for _, line in all_lines(moto_url, bucket)}
        shard = [r for r in mixed if r.shard_id == record.shard_id]
        upto = [r.json()["n"] for r in shard if r.position <= record.position]
        assert set(upto) <= stored
        checkpoints.append(record)

    sink = S3Sink(bucket, max_bytes=400, endpoint_url=moto_url)
    await pipe(batches_of(mixed, 9), sink, checkpoint)
    assert len(checkpoints) > 4
    last = {}
    for record in checkpoints:  # per shard strictly forward
        assert record.position > last.get(record.shard_id, (0, 0))
        last[record.shard_id] = record.position
    assert last == {"shardId-000000000001": a[-1].position, "shardId-000000000002": b[-1].position}
    assert sorted(line["n"] for _, line in all_lines(moto_url, bucket)) == sorted(
        r.json()["n"] for r in mixed
    )


async def test_pipe_closes_the_sink_when_cancelled(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(10)
    checkpoints: list[Record] = []

    async def endless(scope: anyio.CancelScope) -> AsyncIterator[Sequence[Record]]:
        yield records
        scope.cancel()  # asked for more: the sink accepted the records
        await anyio.sleep_forever()
        yield []  # pragma: no cover

    async def checkpoint(record: Record) -> None:
        checkpoints.append(record)

    with anyio.CancelScope() as scope:
        await pipe(endless(scope), S3Sink(bucket, endpoint_url=moto_url), checkpoint)
    assert scope.cancelled_caught
    assert checkpoints == [records[-1]]
    assert len(etags(moto_url, bucket)) == 1


async def test_pipe_raises_a_sink_error(moto_url: str) -> None:
    async def checkpoint(record: Record) -> None:
        raise AssertionError("nothing is durable")

    with pytest.raises(errors.ResourceNotFound):
        await pipe(
            batches_of(make_records(3), 1),
            S3Sink("no-such-bucket-for-pipe", endpoint_url=moto_url),
            checkpoint,
        )


def empty_and_delete(url: str, bucket: str) -> None:
    client = s3(url)
    for key in list_keys(url, bucket):
        client.delete_object(Bucket=bucket, Key=key)
    client.delete_bucket(Bucket=bucket)


async def test_an_idle_pipe_raises_what_the_sinks_timer_cannot_get_past(moto_url: str) -> None:
    """No batch comes after the bucket is gone: the timer's failure to write what the sink
    holds is permanent (NoSuchBucket), the sink's failed() returns it, pipe() raises it."""
    bucket = new_bucket(moto_url)
    records = make_records(3)
    checkpoints: list[Record] = []

    async def idle_after_two_batches() -> AsyncIterator[Sequence[Record]]:
        yield records[:1]
        await wait_for(lambda: list_keys(moto_url, bucket), what="the first object")
        await anyio.to_thread.run_sync(empty_and_delete, moto_url, bucket)
        yield records[1:]  # same hour: no listing, so write() buffers them and returns
        await anyio.sleep_forever()
        yield []  # pragma: no cover

    async def checkpoint(record: Record) -> None:
        checkpoints.append(record)

    sink = S3Sink(bucket, max_interval=0.2, endpoint_url=moto_url)
    with pytest.raises(errors.ResourceNotFound, match=bucket), anyio.fail_after(10):
        await pipe(idle_after_two_batches(), sink, checkpoint)
    assert checkpoints == records[:1]


async def test_the_sink_writes_again_once_the_cause_is_gone(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(3)
    async with S3Sink(bucket, max_interval=0.2, endpoint_url=moto_url) as sink:
        await sink.write(records[:1])
        await wait_for(lambda: list_keys(moto_url, bucket), what="the first object")
        await anyio.to_thread.run_sync(empty_and_delete, moto_url, bucket)
        assert await sink.write(records[1:]) == {SHARD: records[0]}  # the rest is buffered
        with anyio.fail_after(10):
            failure = await sink.failed()
        assert isinstance(failure, errors.ResourceNotFound)
        assert sink.stats().pending_objects == 1
        await anyio.to_thread.run_sync(lambda: s3(moto_url).create_bucket(Bucket=bucket))
        assert await sink.flush() == {SHARD: records[-1]}
        with anyio.move_on_after(0.3) as scope:  # recovered: failed() waits again
            await sink.failed()
        assert scope.cancelled_caught
    assert [line["n"] for _, line in all_lines(moto_url, bucket)] == [1, 2]
