"""Producer delivery semantics against a scripted endpoint over real HTTP.

Batching, request limits, per-entry retries, request-level retries, record_ttl, ordering
under partial failures, and the signature of the hand-built requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import defaultdict
from typing import Any

import anyio
import pytest

from shardflow import KinesisLimits, Producer, PutResult, errors

from support_producer import ScriptedKinesis, verify_sigv4

THROTTLED = "ProvisionedThroughputExceededException"


async def test_requests_carry_a_valid_sigv4_signature() -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0) as producer,
    ):
        for i in range(20):
            await producer.put({"i": i}, partition_key=f"k{i}")
        await producer.flush()
    assert kinesis.requests
    assert all(r.signature_ok for r in kinesis.requests)


def test_signature_check_rejects_a_tampered_request() -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import ReadOnlyCredentials

    url = "http://127.0.0.1:1234/"
    request = AWSRequest(method="POST", url=url, data=b'{"a":1}', headers={"X-Amz-Target": "x"})
    SigV4Auth(ReadOnlyCredentials("testing", "testing", None), "kinesis", "us-east-1").add_auth(
        request
    )
    headers = dict(request.headers.items())
    assert verify_sigv4("POST", url, headers, b'{"a":1}', "us-east-1")
    assert not verify_sigv4("POST", url, headers, b'{"a":2}', "us-east-1")
    assert not verify_sigv4("POST", url, headers, b'{"a":1}', "eu-west-1")


async def test_every_request_respects_the_batch_limits() -> None:
    limits = KinesisLimits(max_batch_records=7, max_batch_bytes=1000, max_record_bytes=600)
    rng = random.Random(3)
    payloads = [bytes([65 + i % 26]) * rng.randint(0, 590) for i in range(120)]
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, limits=limits, max_queue_bytes=10_000, linger=0.05
        ) as producer,
    ):
        futures = [await producer.put(p, partition_key=f"k{i}") for i, p in enumerate(payloads)]
        results = await asyncio.gather(*futures)
    assert len(results) == len(payloads)
    assert all(len(r.entries) <= 7 for r in kinesis.requests)
    assert all(r.data_bytes <= 1000 for r in kinesis.requests)
    assert sorted(e.data for e in kinesis.accepted) == sorted(payloads)
    # batches were packed, not sent one by one
    assert len(kinesis.requests) < len(payloads) / 2


async def test_only_failed_entries_are_retried_and_attempts_recorded() -> None:
    seen: set[str] = set()

    def throttle_first_try_of_every_third(_req: int, _i: int, entry: dict[str, Any]):
        data = entry["Data"]
        if data in seen:
            return None
        seen.add(data)
        if entry["PartitionKey"].endswith(("0", "3", "6")):
            return (THROTTLED, "Rate exceeded for shard")
        return None

    async with (
        ScriptedKinesis("s", entry_error=throttle_first_try_of_every_third) as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0.02) as producer,
    ):
        futures = [await producer.put({"n": i}, partition_key=f"k{i}") for i in range(200)]
        results: list[PutResult] = await asyncio.gather(*futures)
        stats = producer.stats()
    sent = [e["Data"] for r in kinesis.requests for e in r.entries]
    assert len(kinesis.accepted) == 200  # each record written exactly once
    retried = [i for i in range(200) if str(i).endswith(("0", "3", "6"))]
    assert len(sent) == 200 + len(retried)  # only failed entries went again
    for i, result in enumerate(results):
        codes = [a.error_code for a in result.attempts]
        assert codes == ([THROTTLED, None] if i in retried else [None])
        assert result.attempts[-1].ok
        assert result.attempts[0].error_message in (None, "Rate exceeded for shard")
        assert result.sub_sequence_number is None
    by_seq = {e.sequence_number: e for e in kinesis.accepted}
    for i, result in enumerate(results):
        assert by_seq[result.sequence_number].shard_id == result.shard_id
        assert by_seq[result.sequence_number].partition_key == f"k{i}"
    assert stats.delivered == 200
    assert stats.retried == len(retried)
    assert stats.failed == 0


@pytest.mark.parametrize("aggregate", [False, True])
async def test_a_result_is_a_plain_put_result_value(aggregate: bool) -> None:
    """What a delivery resolves to is an ordinary frozen PutResult: equal and hashed as
    one built by hand, immutable, a new equal value on each read."""
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0, aggregate=aggregate) as producer,
    ):
        futures = [await producer.put({"i": i}, partition_key=f"k{i}") for i in range(5)]
        results: list[PutResult] = await asyncio.gather(*futures)
    for future, result in zip(futures, results, strict=True):
        assert type(result) is PutResult
        by_hand = PutResult(
            result.shard_id, result.sequence_number, result.sub_sequence_number, result.attempts
        )
        assert result == by_hand
        assert hash(result) == hash(by_hand)
        assert future.result() == result
        assert future.result() is not result
        with pytest.raises(dataclasses.FrozenInstanceError):
            result.shard_id = "x"  # type: ignore[misc]
    assert {r.sequence_number for r in results} <= {e.sequence_number for e in kinesis.accepted}
    assert all(r.shard_id.startswith("shardId-") and r.attempts[-1].ok for r in results)


async def test_non_retriable_entry_error_fails_only_that_record_at_once() -> None:
    def reject_k5(_req: int, _i: int, entry: dict[str, Any]):
        if entry["PartitionKey"] == "k5":
            return ("KMSAccessDeniedException", "no key for you")
        return None

    async with (
        ScriptedKinesis("s", entry_error=reject_k5) as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0) as producer,
    ):
        futures = [await producer.put(b"x", partition_key=f"k{i}") for i in range(10)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    failed = outcomes[5]
    assert isinstance(failed, errors.DeliveryFailed)
    assert [a.error_code for a in failed.attempts] == ["KMSAccessDeniedException"]
    assert failed.error_code == "KMSAccessDeniedException"
    assert isinstance(failed.cause, errors.KMSError)
    assert all(isinstance(o, PutResult) for i, o in enumerate(outcomes) if i != 5)
    assert len(kinesis.accepted) == 9
    assert len(kinesis.requests) == 1  # not retried


async def test_request_level_5xx_is_retried_and_recorded() -> None:
    def two_outages(number: int):
        return (
            (500, "InternalFailure")
            if number == 0
            else (503, "ServiceUnavailable")
            if (number == 1)
            else None
        )

    async with (
        ScriptedKinesis("s", request_error=two_outages) as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0) as producer,
    ):
        result = await producer.put_and_wait(b"hello", partition_key="k")
    assert [a.error_code for a in result.attempts] == [
        "InternalFailure",
        "ServiceUnavailable",
        None,
    ]
    starts = [a.started_at for a in result.attempts]
    assert starts == sorted(starts)
    assert all(a.duration >= 0 for a in result.attempts)
    assert [e.data for e in kinesis.accepted] == [b"hello"]


async def test_request_level_access_denied_fails_the_batch_at_once() -> None:
    async with (
        ScriptedKinesis("s", request_error=lambda _n: (400, "AccessDeniedException")) as k,
        Producer("s", endpoint_url=k.url, linger=0.05) as producer,
    ):
        futures = [await producer.put(b"x", partition_key=f"k{i}") for i in range(5)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, errors.DeliveryFailed) for o in outcomes)
    assert all(isinstance(o.cause, errors.AccessDenied) for o in outcomes)  # type: ignore[union-attr]
    assert len(k.requests) == 1


async def test_record_ttl_bounds_the_retries() -> None:
    async with (
        ScriptedKinesis("s", entry_error=lambda *_: (THROTTLED, "slow down")) as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0, record_ttl=0.8) as producer,
    ):
        delivery = await producer.put(b"x", partition_key="k")
        with pytest.raises(errors.DeliveryFailed) as info:
            await delivery
    attempts = info.value.attempts
    assert len(attempts) >= 2
    assert {a.error_code for a in attempts} == {THROTTLED}
    assert len(kinesis.requests) == len(attempts)
    assert isinstance(info.value.cause, errors.ThroughputExceeded)


async def test_ordered_keeps_per_key_order_under_partial_failures() -> None:
    rng = random.Random(11)

    def flaky(_req: int, _i: int, _entry: dict[str, Any]):
        roll = rng.random()
        if roll < 0.25:
            return (THROTTLED, "Rate exceeded")
        if roll < 0.3:
            return ("InternalFailure", "oops")
        return None

    keys = [f"user-{i}" for i in range(20)]
    async with (
        ScriptedKinesis("s", entry_error=flaky) as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, ordered=True, linger=0.01, max_in_flight=4
        ) as producer,
    ):
        futures = []
        for n in range(40):
            for key in keys:
                futures.append(await producer.put({"k": key, "n": n}, partition_key=key))
        await asyncio.gather(*futures)
        assert producer.stats().retried > 0
    by_key: dict[str, list[int]] = defaultdict(list)
    for entry in kinesis.accepted:
        by_key[entry.partition_key].append(int(entry.data.split(b'"n":')[1].rstrip(b"}")))
    assert set(by_key) == set(keys)
    for key in keys:
        assert by_key[key] == list(range(40)), key
    for request in kinesis.requests:
        request_keys = [e["PartitionKey"] for e in request.entries]
        assert len(request_keys) == len(set(request_keys))


async def test_unordered_mixes_keys_freely_and_delivers_everything() -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0.01) as producer,
    ):
        futures = [await producer.put(b"%d" % i, partition_key="hot") for i in range(1200)]
        await asyncio.gather(*futures)
    assert [e.data for e in kinesis.accepted] == [b"%d" % i for i in range(1200)]
    assert max(len(r.entries) for r in kinesis.requests) == 500


async def test_a_full_batch_goes_without_waiting_for_linger() -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=3600) as producer,
    ):
        futures = [await producer.put(b"x", partition_key=f"k{i}") for i in range(500)]
        with anyio.fail_after(20):  # a hang guard, far below the linger
            await asyncio.gather(*futures)
    assert len(kinesis.requests) == 1


async def test_flush_sends_at_once_and_waits_for_every_record() -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=3600) as producer,
    ):
        futures = [await producer.put(b"x", partition_key=f"k{i}") for i in range(30)]
        with anyio.fail_after(20):
            await producer.flush()
        assert all(f.done() for f in futures)
        assert producer.stats().queued == 0
        await producer.flush()  # nothing pending: returns at once
    assert len(kinesis.accepted) == 30


async def test_explicit_hash_key_is_sent() -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0) as producer,
    ):
        await producer.put_and_wait(b"a", partition_key="k", explicit_hash_key=2**128 - 1)
        await producer.put_and_wait(b"b", partition_key="k", explicit_hash_key="0")
        await producer.put_and_wait(b"c", partition_key="k")
    assert [e.explicit_hash_key for e in kinesis.accepted] == [str(2**128 - 1), "0", None]


async def test_a_missing_stream_fails_fast_after_a_start_that_reaches_nothing() -> None:
    # the producer starts without reaching the endpoint; the first answer (the stream
    # does not exist) fails what waits at once and every later put
    async with ScriptedKinesis("s") as kinesis:
        with anyio.fail_after(20):
            async with Producer("other", endpoint_url=kinesis.url, record_ttl=60) as producer:
                with pytest.raises(errors.DeliveryFailed) as failed:
                    await producer.put_and_wait(b"x", partition_key="k")
                assert isinstance(failed.value.cause, errors.StreamNotFound)
                with pytest.raises(errors.StreamNotFound, match=r"'other'.*us-east-1.*127\.0"):
                    await producer.put(b"y", partition_key="k")
                with pytest.raises(errors.StreamNotFound):
                    producer.put_nowait(b"y", partition_key="k")
        assert kinesis.requests == []  # nothing was sent


async def test_stats_count_what_happened() -> None:
    calls = {"n": 0}

    def first_throttled(_req: int, index: int, _entry: dict[str, Any]):
        calls["n"] += 1
        return (THROTTLED, "x") if calls["n"] == 1 else None

    async with (
        ScriptedKinesis("s", entry_error=first_throttled) as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0) as producer,
    ):
        await producer.put_and_wait(b"x", partition_key="a")
        stats = producer.stats()
    assert stats.delivered == 1
    assert stats.retried == 1
    assert stats.requests == 2
    assert stats.queued == stats.in_flight == stats.waiting == 0
    assert len(kinesis.requests) == 2


async def test_refreshable_credentials_are_refreshed_before_signing() -> None:
    from datetime import datetime, timedelta, timezone

    from aiobotocore.credentials import AioRefreshableCredentials

    import support_producer

    issued: list[str] = []

    async def refresh() -> dict[str, Any]:
        key = f"temp-key-{len(issued)}"
        issued.append(key)
        support_producer.SECRET[key] = f"secret-{key}"
        soon = datetime.now(timezone.utc) + timedelta(seconds=60)  # inside the refresh window
        return {
            "access_key": key,
            "secret_key": f"secret-{key}",
            "token": f"token-{key}",
            "expiry_time": soon.isoformat(),
        }

    class Source:
        def botocore_credentials(self) -> Any:
            return AioRefreshableCredentials.create_from_metadata(
                {
                    "access_key": "stale",
                    "secret_key": "stale",
                    "token": "stale",
                    "expiry_time": datetime.now(timezone.utc).isoformat(),
                },
                refresh,
                "test",
            )

    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, credentials=Source(), linger=0) as producer,
    ):
        for i in range(3):
            await producer.put_and_wait(b"x", partition_key=f"k{i}")
    assert len(issued) >= 3  # the control-plane call and each PutRecords refreshed
    puts = kinesis.requests
    assert [r.access_key for r in puts] == issued[-3:]
    assert all(r.signature_ok for r in puts)
    assert [r.security_token for r in puts] == [f"token-{k}" for k in issued[-3:]]


async def test_failures_are_logged_once_per_batch_not_per_unawaited_future(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import gc
    import logging

    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    try:
        with caplog.at_level(logging.WARNING, logger="shardflow.producer"):
            async with (
                ScriptedKinesis("s", entry_error=lambda *_: ("KMSDisabledException", "off")) as k,
                Producer("s", endpoint_url=k.url, linger=0.05) as producer,
            ):
                for i in range(20):
                    await producer.put(b"x", partition_key=f"k{i}")  # futures dropped
                await producer.flush()
                assert producer.stats().failed == 20
            gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert not [c for c in seen if "never retrieved" in str(c.get("message"))]
    warnings = [r for r in caplog.records if "not delivered" in r.getMessage()]
    assert 1 <= len(warnings) < 20


@pytest.mark.parametrize(
    ("aggregate", "ordered"), [(False, False), (True, False), (True, True)],
    ids=["plain", "aggregated", "ordered-aggregated"],
)
async def test_str_is_sent_as_utf8_dicts_and_lists_as_json_bytes_as_is(
    aggregate: bool, ordered: bool
) -> None:
    # a str is sent as its UTF-8 bytes, as boto3 sends it: put(json.dumps(event)) stores
    # the JSON document, not a JSON string literal
    from shardflow.aggregation import deaggregate

    values: list[Any] = ['{"a": 1}', "é✓", {"a": 1}, [1, "x"], b"\x00raw", bytearray(b"ba")]
    expected = [b'{"a": 1}', "é✓".encode(), b'{"a":1}', b'[1,"x"]', b"\x00raw", b"ba"]
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, aggregate=aggregate, ordered=ordered, linger=0.05
        ) as producer,
    ):
        for _ in range(2):  # the first put of a key takes the general path, then the fast one
            for value in values:
                await producer.put(value, partition_key="k")
        await producer.flush()
        with pytest.raises(errors.SerializationError):
            await producer.put("\ud800", partition_key="k")  # a lone surrogate
    sent: list[bytes] = []
    for entry in kinesis.accepted:
        subs = deaggregate(entry.data)
        sent += [entry.data] if subs is None else [data for _, _, data in subs]
    assert sent == expected * 2


async def test_failures_of_unawaited_puts_log_one_line_per_batch(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import gc

    def rejected(_req: int, _index: int, _entry: dict[str, Any]) -> tuple[str, str]:
        return ("KMSAccessDeniedException", "no key")  # not retriable

    async with (
        ScriptedKinesis("s", entry_error=rejected) as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0.05) as producer,
    ):
        for i in range(50):
            await producer.put(b"%d" % i, partition_key=f"key-{i}")  # never awaited
        await producer.flush()
    gc.collect()  # an unretrieved future exception would log as it is collected
    lines = [r.getMessage() for r in caplog.records]
    failed = [line for line in lines if "not delivered" in line]
    assert len(failed) == len(kinesis.requests)  # one per batch, not one per record
    assert failed[0].startswith("stream s: ")
    assert "[KMSAccessDeniedException]" in failed[0]
    assert "first partition key 'key-" in failed[0]
    total = sum(int(line.split(": ", 1)[1].split(" record(s)")[0]) for line in failed)
    assert total == 50
    assert not [line for line in lines if "never retrieved" in line]
