"""FaultProxy against real servers: every fault happens, is counted, and does what it says
to the upstream (faulted entries are not written, the rest and resets-after are)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest

from shardflow import KinesisLimits, errors
from shardflow._core import aws as _aws
from shardflow.testing import FaultProxy

from support import create_stream, list_shards, read_stream

THROTTLED = "ProvisionedThroughputExceededException"


@asynccontextmanager
async def kinesis_client(url: str) -> AsyncIterator[Any]:
    async with AsyncExitStack() as stack:
        yield await _aws.open_client(stack, "kinesis", endpoint_url=url, read_timeout=30.0)


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (the proxy's counts have no event to wait on), 10 s deadline."""
    with anyio.fail_after(10):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def entries(n: int, prefix: str = "r", key: str | None = None) -> list[dict[str, Any]]:
    return [
        {"Data": f"{prefix}-{i}".encode(), "PartitionKey": key or f"k{i % 17}"} for i in range(n)
    ]


def stored(url: str, stream: str) -> list[bytes]:
    return sorted(r["Data"] for r in read_stream(url, stream))


def key_in(shard: dict[str, Any]) -> str:
    """A partition key whose MD5 hash key falls in ``shard``'s range."""
    low = int(shard["HashKeyRange"]["StartingHashKey"])
    high = int(shard["HashKeyRange"]["EndingHashKey"])
    for i in range(100_000):
        key = f"key-{i}"
        if low <= int.from_bytes(hashlib.md5(key.encode()).digest(), "big") <= high:
            return key
    raise AssertionError("no key found")


# --- per-entry write faults -------------------------------------------------------------


async def test_faulted_entries_are_not_written_and_the_rest_are(kinesis_url: str) -> None:
    stream = create_stream(kinesis_url, shards=2)
    batch = entries(300)
    async with (
        FaultProxy(
            kinesis_url, seed=11, throttle_fraction=0.3, internal_failure_fraction=0.1
        ) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        answer = await client.put_records(StreamName=stream, Records=batch)
    records = answer["Records"]
    assert len(records) == len(batch)
    codes = [r.get("ErrorCode") for r in records]
    failed = [i for i, code in enumerate(codes) if code]
    assert answer["FailedRecordCount"] == len(failed)
    assert codes.count(THROTTLED) > 0
    assert codes.count("InternalFailure") > 0
    assert set(codes) <= {None, THROTTLED, "InternalFailure"}
    for r in records:
        if r.get("ErrorCode") == THROTTLED:
            assert r["ErrorMessage"].startswith("Rate exceeded for")
        elif r.get("ErrorCode"):
            assert r["ErrorMessage"] == "Internal service failure."
        else:
            assert r["SequenceNumber"]
            assert r["ShardId"].startswith("shardId-")
    written = {batch[i]["Data"] for i in range(len(batch)) if not codes[i]}
    assert stored(kinesis_url, stream) == sorted(written)
    counts = proxy.counts
    assert counts["put_entries"] == 300
    assert counts["throttled_entries"] == codes.count(THROTTLED)
    assert counts["internal_failure_entries"] == codes.count("InternalFailure")
    assert counts["written_entries"] == len(written)
    assert counts["forwarded"] == 1


async def test_a_fully_faulted_batch_is_not_forwarded(moto_url: str) -> None:
    stream = create_stream(moto_url)
    async with (
        FaultProxy(moto_url, throttle_fraction=1.0) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        answer = await client.put_records(StreamName=stream, Records=entries(20))
    assert answer["FailedRecordCount"] == 20
    assert {r["ErrorCode"] for r in answer["Records"]} == {THROTTLED}
    assert proxy.counts["forwarded"] == 0
    assert proxy.counts["throttled_entries"] == 20
    assert stored(moto_url, stream) == []


async def test_put_record_fails_as_a_whole(moto_url: str) -> None:
    stream = create_stream(moto_url)
    async with (
        FaultProxy(moto_url, throttle_fraction=1.0) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        put = {"StreamName": stream, "PartitionKey": "k"}
        with pytest.raises(errors.ThroughputExceeded):
            await _aws.call(client, "put_record", Data=b"a", **put)
        proxy.configure(throttle_fraction=0.0, internal_failure_fraction=1.0)
        with pytest.raises(errors.InternalFailure):
            await _aws.call(client, "put_record", Data=b"b", **put)
        proxy.configure(internal_failure_fraction=0.0)
        await _aws.call(client, "put_record", Data=b"c", **put)
    assert stored(moto_url, stream) == [b"c"]
    assert proxy.counts["throttled_entries"] == 1
    assert proxy.counts["internal_failure_entries"] == 1
    assert proxy.counts["written_entries"] == 1


async def test_big_bodies_are_rewritten_intact(moto_url: str) -> None:
    stream = create_stream(moto_url)
    batch = [{"Data": bytes([i]) * 1_000_000, "PartitionKey": f"k{i}"} for i in range(5)]
    async with (
        FaultProxy(moto_url, seed=2, throttle_fraction=0.4) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        answer = await client.put_records(StreamName=stream, Records=batch)
    ok = [batch[i]["Data"] for i, r in enumerate(answer["Records"]) if "SequenceNumber" in r]
    assert 0 < len(ok) < 5
    assert stored(moto_url, stream) == sorted(ok)


async def test_streams_named_by_arn_are_faulted_and_limited(moto_url: str) -> None:
    stream = create_stream(moto_url)
    arn = f"arn:aws:kinesis:us-east-1:123456789012:stream/{stream}"
    limits = KinesisLimits(shard_write_records_per_s=10)
    async with (
        FaultProxy(moto_url, enforce_write_limits=True, limits=limits) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        answer = await client.put_records(StreamARN=arn, Records=entries(15))
    assert answer["FailedRecordCount"] == 5
    assert proxy.counts["write_limited_entries"] == 5
    assert len(stored(moto_url, stream)) == 10


async def test_upstream_errors_pass_through_unchanged(moto_url: str) -> None:
    async with (
        FaultProxy(moto_url, throttle_fraction=0.5, enforce_write_limits=True) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        with pytest.raises(errors.StreamNotFound):
            await _aws.call(client, "put_records", StreamName="missing", Records=entries(50))
        with pytest.raises(errors.StreamNotFound):
            await _aws.call(client, "describe_stream_summary", StreamName="missing")
    assert proxy.counts["upstream_errors"] == 2


# --- request-level faults ---------------------------------------------------------------


async def test_5xx_are_answered_without_forwarding(moto_url: str) -> None:
    stream = create_stream(moto_url)
    seen: set[type[Exception]] = set()
    async with (
        FaultProxy(moto_url, seed=3, error_5xx_fraction=1.0) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        for _ in range(12):
            with pytest.raises((errors.InternalFailure, errors.ServiceUnavailable)) as caught:
                await _aws.call(client, "put_records", StreamName=stream, Records=entries(3))
            seen.add(type(caught.value))
        # Control-plane calls are not faulted by default.
        await _aws.call(client, "describe_stream_summary", StreamName=stream)
    assert seen == {errors.InternalFailure, errors.ServiceUnavailable}
    assert proxy.counts["errors_5xx"] == 12
    assert proxy.counts["forwarded"] == 1
    assert stored(moto_url, stream) == []


async def test_reset_before_is_not_applied(kinesis_url: str) -> None:
    stream = create_stream(kinesis_url)
    async with (
        FaultProxy(kinesis_url, reset_before_fraction=1.0) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        with pytest.raises(errors.EndpointUnreachable):
            await _aws.call(client, "put_records", StreamName=stream, Records=entries(5))
        proxy.configure(reset_before_fraction=0.0)
        await _aws.call(client, "put_records", StreamName=stream, Records=entries(2, "ok"))
    assert stored(kinesis_url, stream) == [b"ok-0", b"ok-1"]
    assert proxy.counts["resets_before"] == 1


async def test_reset_after_is_applied_upstream(kinesis_url: str) -> None:
    stream = create_stream(kinesis_url)
    batch = entries(40)
    async with (
        FaultProxy(kinesis_url, seed=5, reset_after_fraction=1.0, throttle_fraction=0.25) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        with pytest.raises(errors.EndpointUnreachable):
            await _aws.call(client, "put_records", StreamName=stream, Records=batch)
    counts = proxy.counts
    assert counts["resets_after"] == 1
    assert 0 < counts["reset_after_entries"] < 40
    assert counts["reset_after_entries"] == 40 - counts["throttled_entries"]
    assert len(stored(kinesis_url, stream)) == counts["reset_after_entries"]


async def test_operations_select_what_request_faults_apply_to(moto_url: str) -> None:
    stream = create_stream(moto_url)
    async with (
        FaultProxy(moto_url, error_5xx_fraction=1.0, operations={"ListShards"}) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        with pytest.raises((errors.InternalFailure, errors.ServiceUnavailable)):
            await _aws.call(client, "list_shards", StreamName=stream)
        await _aws.call(client, "put_records", StreamName=stream, Records=entries(1))
        proxy.configure(operations={"*"})
        with pytest.raises((errors.InternalFailure, errors.ServiceUnavailable)):
            await _aws.call(client, "describe_stream_summary", StreamName=stream)
    assert proxy.counts["errors_5xx"] == 2
    assert len(stored(moto_url, stream)) == 1


# --- stall, latency and closing ---------------------------------------------------------


async def test_stall_holds_requests_until_turned_off(moto_url: str) -> None:
    stream = create_stream(moto_url)
    async with (
        FaultProxy(moto_url, stall=True) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        task = asyncio.create_task(
            _aws.call(client, "put_records", StreamName=stream, Records=entries(3))
        )
        await wait_until(lambda: proxy.counts["stalled"] == 1)
        await asyncio.sleep(0.1)  # give a wrongly released request the chance to finish
        assert not task.done()
        assert proxy.counts["forwarded"] == 0
        proxy.configure(stall=False)
        with anyio.fail_after(10):
            answer = await task
    assert answer["FailedRecordCount"] == 0
    assert len(stored(moto_url, stream)) == 3


async def test_close_releases_stalled_and_delayed_requests(moto_url: str) -> None:
    stream = create_stream(moto_url)
    proxy = await FaultProxy(moto_url, stall=True).start()
    async with kinesis_client(proxy.url) as client:
        stalled = asyncio.create_task(
            _aws.call(client, "put_records", StreamName=stream, Records=entries(1))
        )
        await wait_until(lambda: proxy.counts["stalled"] == 1)
        proxy.configure(stall=False, latency=3600.0)
        delayed = asyncio.create_task(
            _aws.call(client, "put_records", StreamName=stream, Records=entries(1))
        )
        await wait_until(lambda: proxy.counts["delayed"] == 2)
        with anyio.fail_after(10):
            await proxy.aclose()
            await proxy.aclose()  # idempotent
        for task in (stalled, delayed):
            with anyio.fail_after(10), pytest.raises(errors.EndpointUnreachable):
                await task
    assert stored(moto_url, stream) == []


async def test_a_cancelled_client_does_not_keep_the_proxy_open(moto_url: str) -> None:
    stream = create_stream(moto_url)
    async with kinesis_client(moto_url):
        pass
    proxy = await FaultProxy(moto_url, latency=3600.0).start()
    async with kinesis_client(proxy.url) as client:
        with anyio.move_on_after(0.2) as scope:
            await client.put_records(StreamName=stream, Records=entries(1))
        assert scope.cancelled_caught
    assert proxy.counts["delayed"] == 1
    with anyio.fail_after(10):
        await proxy.aclose()
    assert stored(moto_url, stream) == []


# --- write limits -----------------------------------------------------------------------


async def test_write_limits_throttle_a_burst_to_one_shard_only(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=2)
    hot, fresh = (key_in(s) for s in list_shards(moto_url, stream))
    async with (
        FaultProxy(moto_url, enforce_write_limits=True) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        started = time.monotonic()
        answers = await asyncio.gather(
            *(
                client.put_records(StreamName=stream, Records=entries(500, f"hot{j}", hot))
                for j in range(4)
            )
        )
        elapsed = time.monotonic() - started
        cool = await client.put_records(StreamName=stream, Records=entries(500, "fresh", fresh))
    accepted = sum(500 - a["FailedRecordCount"] for a in answers)
    codes = {r.get("ErrorCode") for a in answers for r in a["Records"]}
    assert codes == {None, THROTTLED}
    # A full bucket holds one second's worth; it refills at 1000 records/s.
    assert 1000 <= accepted <= 1000 + 1000 * elapsed + 1
    assert cool["FailedRecordCount"] == 0
    counts = proxy.counts
    assert counts["write_limited_entries"] == counts["throttled_entries"] == 2000 - accepted
    in_stream = read_stream(moto_url, stream)
    assert sum(r["PartitionKey"] == hot for r in in_stream) == accepted
    assert sum(r["PartitionKey"] == fresh for r in in_stream) == 500


async def test_write_limits_count_bytes_of_data_and_key(moto_url: str) -> None:
    stream = create_stream(moto_url)
    limits = KinesisLimits(shard_write_bytes_per_s=10_000)
    batch = [{"Data": bytes(998), "PartitionKey": f"{i:02d}"} for i in range(20)]  # 1000 B
    async with (
        FaultProxy(moto_url, enforce_write_limits=True, limits=limits) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        answer = await client.put_records(StreamName=stream, Records=batch)
    ok = [i for i, r in enumerate(answer["Records"]) if "SequenceNumber" in r]
    # Entries are admitted in order while the bucket holds their size.
    assert ok == list(range(len(ok)))
    assert 10 <= len(ok) <= 11
    assert proxy.counts["write_limited_entries"] == 20 - len(ok)


async def test_explicit_hash_keys_route_the_budget(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=2)
    first, second = list_shards(moto_url, stream)
    limits = KinesisLimits(shard_write_records_per_s=5)
    batch = [
        {
            "Data": b"x",
            "PartitionKey": "same",
            "ExplicitHashKey": shard["HashKeyRange"]["StartingHashKey"],
        }
        for shard in (first, second)
        for _ in range(8)
    ]
    async with (
        FaultProxy(moto_url, enforce_write_limits=True, limits=limits) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        answer = await client.put_records(StreamName=stream, Records=batch)
    shards = [r.get("ShardId") for r in answer["Records"]]
    assert shards[:5] == [first["ShardId"]] * 5
    assert shards[8:13] == [second["ShardId"]] * 5
    assert answer["FailedRecordCount"] == 6
    assert proxy.counts["write_limited_entries"] == 6


async def test_shard_map_follows_a_split(kinesalite_url: str) -> None:
    stream = create_stream(kinesalite_url)
    (parent,) = list_shards(kinesalite_url, stream)
    async with (
        FaultProxy(kinesalite_url, enforce_write_limits=True) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        await client.put_records(StreamName=stream, Records=entries(10))
        assert proxy.counts["shard_map_refreshes"] == 1
        await client.split_shard(
            StreamName=stream,
            ShardToSplit=parent["ShardId"],
            NewStartingHashKey=str(2**127),
        )
        await wait_until_active(client, stream)
        # The split went through the proxy: the next put maps entries to the children.
        answer = await client.put_records(StreamName=stream, Records=entries(10))
        assert proxy.counts["shard_map_refreshes"] == 2
        assert parent["ShardId"] not in {r["ShardId"] for r in answer["Records"]}
        await client.put_records(StreamName=stream, Records=entries(10))
        assert proxy.counts["shard_map_refreshes"] == 2
    assert proxy.counts["write_limited_entries"] == 0


async def wait_until_active(client: Any, stream: str) -> None:
    with anyio.fail_after(30):
        while True:
            summary = await client.describe_stream_summary(StreamName=stream)
            if summary["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE":
                return
            await asyncio.sleep(0.05)


async def test_an_entry_on_an_unexpected_shard_refreshes_the_map(kinesalite_url: str) -> None:
    stream = create_stream(kinesalite_url)
    (parent,) = list_shards(kinesalite_url, stream)
    async with (
        FaultProxy(kinesalite_url, enforce_write_limits=True) as proxy,
        kinesis_client(proxy.url) as client,
        kinesis_client(kinesalite_url) as direct,
    ):
        await client.put_records(StreamName=stream, Records=entries(10))
        await direct.split_shard(  # behind the proxy's back
            StreamName=stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(2**127)
        )
        await wait_until_active(direct, stream)
        await client.put_records(StreamName=stream, Records=entries(10))  # lands on children
        await client.put_records(StreamName=stream, Records=entries(10))
        assert proxy.counts["shard_map_refreshes"] == 2


# --- reads ------------------------------------------------------------------------------


async def iterator_for(client: Any, stream: str, shard_id: str) -> str:
    answer = await client.get_shard_iterator(
        StreamName=stream, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
    )
    return str(answer["ShardIterator"])


async def test_expired_iterators_and_read_throttling(kinesis_url: str) -> None:
    stream = create_stream(kinesis_url)
    (shard,) = list_shards(kinesis_url, stream)
    async with (
        FaultProxy(kinesis_url, expire_iterator_fraction=1.0) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        await client.put_records(StreamName=stream, Records=entries(3))
        expired = await iterator_for(client, stream, shard["ShardId"])
        with pytest.raises(errors.ExpiredIterator):
            await _aws.call(client, "get_records", ShardIterator=expired)
        proxy.configure(expire_iterator_fraction=0.0, read_throttle_fraction=1.0)
        # Once expired, an iterator stays expired (as on AWS): the reader needs a new one.
        with pytest.raises(errors.ExpiredIterator):
            await _aws.call(client, "get_records", ShardIterator=expired)
        iterator = await iterator_for(client, stream, shard["ShardId"])
        with pytest.raises(errors.ThroughputExceeded) as caught:
            await _aws.call(client, "get_records", ShardIterator=iterator)
        assert shard["ShardId"] in str(caught.value)
        proxy.configure(read_throttle_fraction=0.0)
        page = await _aws.call(client, "get_records", ShardIterator=iterator)
    assert sorted(r["Data"] for r in page["Records"]) == [b"r-0", b"r-1", b"r-2"]
    counts = proxy.counts
    assert (counts["expired_iterators"], counts["read_throttled"]) == (2, 1)
    assert (counts["get_records"], counts["read_records"]) == (4, 3)


async def test_read_limits_pace_calls_per_shard(moto_url: str) -> None:
    stream = create_stream(moto_url, shards=2)
    first, second = (s["ShardId"] for s in list_shards(moto_url, stream))
    async with (
        FaultProxy(moto_url, enforce_read_limits=True) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        hot = await iterator_for(client, stream, first)
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(_aws.call(client, "get_records", ShardIterator=hot) for _ in range(12)),
            return_exceptions=True,
        )
        elapsed = time.monotonic() - started
        cool = await iterator_for(client, stream, second)
        await _aws.call(client, "get_records", ShardIterator=cool)
    admitted = sum(not isinstance(o, BaseException) for o in outcomes)
    assert all(isinstance(o, dict | errors.ThroughputExceeded) for o in outcomes)
    assert 5 <= admitted <= 5 + 5 * elapsed + 1
    assert proxy.counts["read_limited"] == 12 - admitted


async def test_read_limits_charge_bytes_read(moto_url: str) -> None:
    stream = create_stream(moto_url)
    (shard,) = list_shards(moto_url, stream)
    limits = KinesisLimits(shard_read_bytes_per_s=1000)
    async with (
        FaultProxy(moto_url, enforce_read_limits=True, limits=limits) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        await client.put_records(
            StreamName=stream, Records=[{"Data": bytes(1000), "PartitionKey": "k"}] * 4
        )
        iterator = await iterator_for(client, stream, shard["ShardId"])
        page = await _aws.call(client, "get_records", ShardIterator=iterator)
        assert len(page["Records"]) == 4
        # 4000 bytes read against 1000/s: the shard is in debt for about 3 s.
        with pytest.raises(errors.ThroughputExceeded):
            await _aws.call(client, "get_records", ShardIterator=page["NextShardIterator"])
    assert proxy.counts["read_limited"] == 1


# --- determinism ------------------------------------------------------------------------


async def fault_pattern(url: str, stream: str, seed: int) -> list[object]:
    pattern: list[object] = []
    async with (
        FaultProxy(
            url,
            seed=seed,
            throttle_fraction=0.2,
            internal_failure_fraction=0.1,
            error_5xx_fraction=0.3,
        ) as proxy,
        kinesis_client(proxy.url) as client,
    ):
        for _ in range(6):
            try:
                answer = await _aws.call(
                    client, "put_records", StreamName=stream, Records=entries(30)
                )
            except errors.AWSError as exc:
                pattern.append(exc.code)
            else:
                pattern.append(tuple(r.get("ErrorCode") for r in answer["Records"]))
    return pattern


async def test_a_seed_reproduces_the_fault_pattern(moto_url: str) -> None:
    stream = create_stream(moto_url)
    first = await fault_pattern(moto_url, stream, seed=42)
    assert first == await fault_pattern(moto_url, stream, seed=42)
    assert first != await fault_pattern(moto_url, stream, seed=43)
    assert any(isinstance(p, str) for p in first)
    assert any(isinstance(p, tuple) and any(p) for p in first)


# --- the wire format --------------------------------------------------------------------


async def test_errors_are_shaped_like_aws(moto_url: str) -> None:
    import aiohttp
    import orjson

    stream = create_stream(moto_url)
    body = orjson.dumps(
        {"StreamName": stream, "Data": base64.b64encode(b"x").decode(), "PartitionKey": "k"}
    )
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Kinesis_20131202.PutRecord",
        "Authorization": "AWS4-HMAC-SHA256 "
        "Credential=test/20240101/us-east-1/kinesis/aws4_request, "
        "SignedHeaders=host, Signature=0",
        "X-Amz-Date": "20240101T000000Z",
    }
    async with (
        FaultProxy(moto_url, throttle_fraction=1.0) as proxy,
        aiohttp.ClientSession() as session,
    ):
        async with session.post(proxy.url, data=body, headers=headers) as resp:
            assert resp.status == 400
            assert resp.headers["Content-Type"] == "application/x-amz-json-1.1"
            assert resp.headers["x-amzn-ErrorType"].split(":")[0] == THROTTLED
            doc = orjson.loads(await resp.read())
        assert doc["__type"] == THROTTLED
        assert doc["message"].startswith("Rate exceeded")
        proxy.configure(throttle_fraction=0.0, error_5xx_fraction=1.0, seed=0)
        statuses = set()
        for _ in range(10):
            async with session.post(proxy.url, data=body, headers=headers) as resp:
                doc = orjson.loads(await resp.read())
                error_type = resp.headers["x-amzn-ErrorType"].split(":")[0]
                statuses.add((resp.status, doc["__type"], error_type))
        proxy.configure(error_5xx_fraction=0.0)
        async with session.post(proxy.url, data=body, headers=headers) as resp:
            assert resp.status == 200
            assert orjson.loads(await resp.read())["SequenceNumber"]
    assert statuses == {
        (500, "InternalFailure", "InternalFailure"),
        (503, "ServiceUnavailable", "ServiceUnavailable"),
    }
