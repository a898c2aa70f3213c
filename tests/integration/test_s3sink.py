"""S3Sink against moto's S3 over HTTP; objects are read back with boto3."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import anyio
import orjson
import pytest

from shardflow import Record, errors
from shardflow.sinks import S3Sink

from support_sinks import (
    T0,
    all_lines,
    etags,
    list_keys,
    make_record,
    make_records,
    new_bucket,
    read_lines,
    read_object,
    s3,
    seq,
    wait_for,
)

SHARD = "shardId-000000000000"


async def test_key_layout_uses_utc_hour_of_first_arrival(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    tokyo = timezone(timedelta(hours=9))
    # 2024-03-05 07:59:59.900 in Tokyo is 2024-03-04 22:59:59.900 UTC.
    first_at = datetime(2024, 3, 5, 7, 59, 59, 900_000, tzinfo=tokyo)
    records = [
        make_record(1, at=first_at),
        make_record(2, at=first_at + timedelta(milliseconds=50)),
    ]
    async with S3Sink(bucket, prefix="logs/", stream="clicks", endpoint_url=moto_url) as sink:
        assert await sink.write(records) == {}
    assert list_keys(moto_url, bucket) == [
        f"logs/2024/03/04/22/clicks-{SHARD}-{seq(1)}-{seq(2)}.ndjson.gz"
    ]


async def test_key_names_with_arn_stream_aggregates_and_no_prefix(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/app-events"
    records = [make_record(5, sub=0), make_record(5, sub=1), make_record(6)]
    async with S3Sink(bucket, stream=arn, compression=None, endpoint_url=moto_url) as sink:
        await sink.write(records)
    assert list_keys(moto_url, bucket) == [
        f"2024/03/05/07/app-events-{SHARD}-{seq(5)}_0-{seq(6)}.ndjson"
    ]
    async with S3Sink(bucket, prefix="raw", endpoint_url=moto_url) as sink:  # no stream
        await sink.write([make_record(9)])
    assert f"raw/2024/03/05/07/{SHARD}-{seq(9)}-{seq(9)}.ndjson.gz" in list_keys(moto_url, bucket)


async def test_content_is_ndjson_json_as_is_and_envelopes(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    big = b'{"id": 123456789012345678901234567890,\n "tags": ["a", "b"]}\n'
    records = [
        make_record(1, data=b'{"event":"click","n":1}'),
        make_record(2, data=big),
        make_record(3, data=b"\x00\xffnot json"),
        make_record(4, data=b"plain text line\n"),
        make_record(5, data=b"42"),
    ]
    async with S3Sink(bucket, stream="s", endpoint_url=moto_url) as sink:
        await sink.write(records)
    (key,) = list_keys(moto_url, bucket)
    raw = read_object(moto_url, bucket, key)
    lines = raw.split(b"\n")
    assert lines[0] == b'{"event":"click","n":1}'
    # the big integer is kept byte for byte, the line break became a space
    assert lines[1] == b'{"id": 123456789012345678901234567890,  "tags": ["a", "b"]}'
    assert lines[4] == b"42"
    assert lines[5] == b""
    envelope = orjson.loads(lines[2])
    assert base64.b64decode(envelope["data_base64"]) == b"\x00\xffnot json"
    assert envelope["sequence_number"] == seq(3)
    assert envelope["partition_key"] == records[2].partition_key
    assert envelope["shard_id"] == SHARD
    assert envelope["sub_sequence_number"] is None
    assert envelope["arrival_time"] == "2024-03-05T07:15:00.003000Z"
    assert base64.b64decode(orjson.loads(lines[3])["data_base64"]) == b"plain text line\n"
    head = s3(moto_url).head_object(Bucket=bucket, Key=key)
    assert head["ContentType"] == "application/gzip"
    assert head["Metadata"] == {"records": "5"}


async def test_size_cuts_objects_and_reports_their_last_record(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(10)
    line = len(orjson.dumps({"n": 0, "shard": SHARD})) + 1
    async with S3Sink(bucket, max_bytes=3 * line, endpoint_url=moto_url) as sink:
        durable = await sink.write(records[:7])
        # objects are cut after the record that reaches max_bytes: [0-2], [3-5]; 6 waits
        assert durable == {SHARD: records[5]}
        assert sink.stats().buffered_records == 1
        assert await sink.write(records[7:]) == {SHARD: records[8]}
        final = await sink.aclose()
    assert final == {SHARD: records[9]}
    assert len(list_keys(moto_url, bucket)) == 4
    assert [line["n"] for _, line in all_lines(moto_url, bucket)] == list(range(10))


async def test_batches_split_anywhere_give_the_same_objects(moto_url: str) -> None:
    records = make_records(40)
    keys = []
    for cuts in ([40], [1, 39], [13, 13, 14], [1] * 40):
        bucket = new_bucket(moto_url)
        async with S3Sink(bucket, max_bytes=300, endpoint_url=moto_url) as sink:
            i = 0
            for n in cuts:
                await sink.write(records[i : i + n])
                i += n
        keys.append([k.rsplit("/", 1)[1] for k in list_keys(moto_url, bucket)])
    assert len(keys[0]) > 3
    assert all(k == keys[0] for k in keys)


async def test_arrival_time_span_and_hour_cut_objects(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    start = datetime(2024, 3, 5, 7, 59, 0, tzinfo=timezone.utc)
    at = [start + timedelta(seconds=s) for s in (0, 5, 10, 11, 30, 59.5, 60.0, 61.0)]
    records = [make_record(i, at=t) for i, t in enumerate(at)]
    async with S3Sink(bucket, max_interval=10.0, endpoint_url=moto_url) as sink:
        await sink.write(records)
    names = [k.split("/", 4)[4] for k in list_keys(moto_url, bucket)]
    firsts_lasts = sorted(
        (int(n.split("-")[2]) - int(seq(0)), int(n.split("-")[3].split(".")[0]) - int(seq(0)))
        for n in names
    )
    # [0,5] (10 s after 0 starts anew), [10,11], [30], [59.5], then a new UTC hour: [60,61]
    assert firsts_lasts == [(0, 1), (2, 3), (4, 4), (5, 5), (6, 7)]
    hours = sorted(k.split("/")[3] for k in list_keys(moto_url, bucket))
    assert hours == ["07", "07", "07", "07", "08"]


async def test_interval_timer_writes_an_idle_shard(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(3)
    async with S3Sink(bucket, max_interval=0.2, endpoint_url=moto_url) as sink:
        assert await sink.write(records) == {}
        await wait_for(lambda: list_keys(moto_url, bucket), what="the timer's object")
        # the timer's progress is reported by the next call
        assert await sink.write([]) == {SHARD: records[2]}
        assert sink.stats().objects == 1


async def test_shards_get_separate_objects(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    a = make_records(5, shard="shardId-000000000001")
    b = make_records(5, shard="shardId-000000000002", start=100)
    mixed = [r for pair in zip(a, b, strict=True) for r in pair]
    async with S3Sink(bucket, endpoint_url=moto_url) as sink:
        await sink.write(mixed)
        durable = await sink.flush()
    assert durable == {"shardId-000000000001": a[-1], "shardId-000000000002": b[-1]}
    keys = list_keys(moto_url, bucket)
    assert len(keys) == 2
    for key in keys:
        shard = key.split("/")[-1].rsplit("-", 2)[0]
        assert {line["shard"] for line in read_lines(moto_url, bucket, key)} == {shard}


async def test_replay_rewrites_the_same_objects(moto_url: str) -> None:
    """Cuts by the timer or flush() depend on timing, yet a replay reproduces them."""
    bucket = new_bucket(moto_url)
    records = make_records(30)

    async def first_run() -> None:
        async with S3Sink(bucket, stream="s", max_bytes=400, endpoint_url=moto_url) as sink:
            await sink.write(records[:4])
            await sink.flush()  # a cut the content does not explain
            await sink.write(records[4:17])
            await sink.flush()
            await sink.write(records[17:])

    await first_run()
    before = etags(moto_url, bucket)
    assert len(before) > 4

    async def replay(start: int, batch: int) -> None:
        async with S3Sink(bucket, stream="s", max_bytes=400, endpoint_url=moto_url) as sink:
            for i in range(start, len(records), batch):
                await sink.write(records[i : i + batch])

    await replay(0, 30)  # from the beginning, in one batch
    assert etags(moto_url, bucket) == before
    await replay(4, 1)  # from a reported checkpoint (record 3 ended an object), one by one
    assert etags(moto_url, bucket) == before
    await first_run()
    assert etags(moto_url, bucket) == before


async def test_replay_continues_with_new_objects_after_the_old_ones(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(20)
    async with S3Sink(bucket, endpoint_url=moto_url) as sink:
        await sink.write(records[:5])
        assert await sink.flush() == {SHARD: records[4]}
    async with S3Sink(bucket, endpoint_url=moto_url) as sink:
        durable = await sink.write(records)  # replays 0-4, then new records
        assert durable == {SHARD: records[4]}
        assert await sink.aclose() == {SHARD: records[19]}
    keys = list_keys(moto_url, bucket)
    assert [k.rsplit("/", 1)[1].split("-", 2)[2] for k in keys] == [
        f"{seq(0)}-{seq(4)}.ndjson.gz",
        f"{seq(5)}-{seq(19)}.ndjson.gz",
    ]


async def test_close_during_a_rewrite_keeps_the_earlier_object(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(10)
    async with S3Sink(bucket, endpoint_url=moto_url) as sink:
        await sink.write(records)
    before = etags(moto_url, bucket)
    async with S3Sink(bucket, endpoint_url=moto_url) as sink:
        assert await sink.write(records[:6]) == {}
        # records 0-5 are in the earlier object already: not cut short, not reported
        assert await sink.flush() == {}
        assert await sink.aclose() == {}
    assert etags(moto_url, bucket) == before


async def test_duplicates_within_a_run_are_skipped(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(6)
    async with S3Sink(bucket, endpoint_url=moto_url) as sink:
        await sink.write(records[:4])
        await sink.write(records[2:])  # 2 and 3 again
        assert sink.stats().duplicates_skipped == 2
    assert [line["n"] for _, line in all_lines(moto_url, bucket)] == list(range(6))


async def test_missing_bucket_is_resource_not_found(moto_url: str) -> None:
    sink = S3Sink("no-such-bucket-here", endpoint_url=moto_url)
    with pytest.raises(errors.ResourceNotFound, match="no-such-bucket-here"):
        async with sink:
            pass
    with pytest.raises(errors.SinkClosed):
        await sink.write([])


async def test_bucket_gone_mid_run_loses_nothing_accepted(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    client = s3(moto_url)
    records = make_records(4)
    async with S3Sink(bucket, max_bytes=1, endpoint_url=moto_url) as sink:
        await sink.write(records[:1])
        (key,) = await anyio.to_thread.run_sync(list_keys, moto_url, bucket)
        await anyio.to_thread.run_sync(lambda: client.delete_object(Bucket=bucket, Key=key))
        await anyio.to_thread.run_sync(lambda: client.delete_bucket(Bucket=bucket))
        with pytest.raises(errors.ResourceNotFound, match=bucket):
            await sink.write(records[1:3])  # accepted, but the objects cannot be stored
        assert sink.stats().pending_objects == 2
        with pytest.raises(errors.ResourceNotFound):
            await sink.write(records[3:])  # pending objects first: this batch is refused
        assert sink.stats().pending_objects == 2
        client.create_bucket(Bucket=bucket)
        assert await sink.write(records[3:]) == {SHARD: records[3]}
    assert [line["n"] for _, line in all_lines(moto_url, bucket)] == [1, 2, 3]


async def test_lifecycle_errors(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    sink = S3Sink(bucket, endpoint_url=moto_url)
    with pytest.raises(RuntimeError, match="async with"):
        await sink.write([])
    async with sink:
        with pytest.raises(RuntimeError, match="once"):
            await sink.__aenter__()
        with pytest.raises(TypeError, match="Records"):
            await sink.write([{"n": 1}])  # type: ignore[list-item]
    assert await sink.aclose() == {}
    with pytest.raises(errors.SinkClosed):
        await sink.write(make_records(1))
    assert list_keys(moto_url, bucket) == []


async def test_bad_record_rejects_the_whole_batch(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    good = make_records(2)
    bad = Record(b"{}", "k", "not-a-number", None, SHARD, T0)
    async with S3Sink(bucket, endpoint_url=moto_url) as sink:
        with pytest.raises(ValueError, match="sequence number"):
            await sink.write([*good, bad])
        assert sink.stats().buffered_records == 0
        await sink.write(good)
    assert [line["n"] for _, line in all_lines(moto_url, bucket)] == [0, 1]


async def test_injected_client_stays_open(moto_url: str) -> None:
    from contextlib import AsyncExitStack

    from shardflow._core import aws as _aws

    bucket = new_bucket(moto_url)
    async with AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "s3", endpoint_url=moto_url)
        async with S3Sink(bucket, client=client) as sink:
            await sink.write(make_records(2))
        # still usable after the sink closed
        listed = await _aws.call(client, "list_objects_v2", service="s3", Bucket=bucket)
        assert len(listed["Contents"]) == 1


async def test_cancelled_close_still_writes(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    records = make_records(5)
    sink = S3Sink(bucket, endpoint_url=moto_url)
    with anyio.CancelScope() as scope:
        async with sink:
            await sink.write(records)
            scope.cancel()
            await anyio.sleep(1)  # cancelled here; the exit still flushes, shielded
    assert scope.cancelled_caught
    assert [line["n"] for _, line in all_lines(moto_url, bucket)] == list(range(5))
