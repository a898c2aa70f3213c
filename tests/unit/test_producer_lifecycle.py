"""Producer input validation, backpressure, cancellation and close, over real HTTP."""

from __future__ import annotations

import asyncio
import math
import sys
from typing import Any

import anyio
import pytest

from shardflow import KinesisLimits, Producer, PutResult, errors
from shardflow.producer import RECORD_OVERHEAD

from support_producer import ScriptedKinesis

if sys.version_info >= (3, 11):
    from builtins import BaseExceptionGroup
else:  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

SMALL = KinesisLimits(max_record_bytes=1000)


async def wait_until(condition: Any, within: float = 10.0) -> None:
    """Poll ``condition`` until it holds; fail after ``within`` seconds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - polling server state with a deadline
            await asyncio.sleep(0.01)


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"partition_key": ""}, errors.InvalidPartitionKey),
        ({"partition_key": "k" * 257}, errors.InvalidPartitionKey),
        ({"partition_key": 42}, errors.InvalidPartitionKey),
        ({"partition_key": "\ud800"}, errors.InvalidPartitionKey),
        ({"partition_key": ["k"]}, errors.InvalidPartitionKey),  # unhashable
        ({"partition_key": {"k": 1}}, errors.InvalidPartitionKey),
        # AWS counts UTF-16 code units: 129 astral characters are 258
        ({"partition_key": "\U0001f600" * 129}, errors.InvalidPartitionKey),
        ({"partition_key": "k", "explicit_hash_key": "-1"}, errors.InvalidHashKey),
        ({"partition_key": "k", "explicit_hash_key": str(2**128)}, errors.InvalidHashKey),
        ({"partition_key": "k", "explicit_hash_key": "12a"}, errors.InvalidHashKey),
        ({"partition_key": "k", "explicit_hash_key": 1.5}, errors.InvalidHashKey),
        ({"partition_key": "k", "explicit_hash_key": -3}, errors.InvalidHashKey),
        ({"partition_key": "k", "explicit_hash_key": "007"}, errors.InvalidHashKey),
        ({"partition_key": "k", "explicit_hash_key": True}, errors.InvalidHashKey),
    ],
)
async def test_bad_keys_fail_at_put(kwargs: dict[str, Any], error: type[Exception]) -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0) as producer,
    ):
        with pytest.raises(error):
            await producer.put(b"x", **kwargs)
        with pytest.raises(error):
            producer.put_nowait(b"x", **kwargs)
        good = await producer.put_and_wait(b"ok", partition_key="k")
        assert producer.stats().queued == 0
    assert isinstance(good, PutResult)
    assert [e.data for e in kinesis.accepted] == [b"ok"]


async def test_a_key_of_256_utf16_units_is_accepted() -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0) as producer,
    ):
        key = "\U0001f600" * 128
        result = await producer.put_and_wait(b"x", partition_key=key)
    assert result.sequence_number
    assert [e.partition_key for e in kinesis.accepted] == [key]


async def test_bad_records_fail_at_put_and_never_affect_others() -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, limits=SMALL, max_queue_bytes=10_000, linger=0.05
        ) as producer,
    ):
        before = await producer.put(b"a", partition_key="k")
        with pytest.raises(errors.RecordTooLarge):
            await producer.put(b"x" * 999, partition_key="kk")  # 999 + 2 > 1000
        with pytest.raises(errors.SerializationError):
            await producer.put(object(), partition_key="k")
        with pytest.raises(TypeError):  # SerializationError is a TypeError
            await producer.put({1: {2}}, partition_key="k")
        with pytest.raises(ValueError, match="max_record_bytes"):
            producer.put_nowait("é" * 600, partition_key="k")  # 1200 UTF-8 bytes
        edge = await producer.put(b"x" * 999, partition_key="k")  # exactly 1000
        after = await producer.put({"json": [1, 2]}, partition_key="k")
        results = await asyncio.gather(before, edge, after)
    assert [r.shard_id for r in results]
    assert [e.data for e in kinesis.accepted] == [b"a", b"x" * 999, b'{"json":[1,2]}']


async def test_bytes_like_are_sent_as_is_str_as_utf8_and_values_as_json() -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0) as producer,
    ):
        for obj in (b"raw", bytearray(b"ba"), memoryview(b"mv"), "text", 7, [1, None]):
            await producer.put_and_wait(obj, partition_key="k")
    assert [e.data for e in kinesis.accepted] == [
        b"raw",
        b"ba",
        b"mv",
        b"text",  # a str as its UTF-8 bytes (DESIGN, issue 17 item 3)
        b"7",
        b"[1,null]",
    ]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_queue_records": 0}, ValueError),
        ({"max_queue_records": 1.5}, TypeError),
        ({"max_queue_bytes": 1000}, ValueError),
        ({"linger": -1}, ValueError),
        ({"linger": "1"}, TypeError),
        ({"max_in_flight": 0}, ValueError),
        ({"record_ttl": 0}, ValueError),
        ({"record_ttl": float("nan")}, ValueError),
        ({"rate_limit": 0}, ValueError),
        ({"rate_limit": 1.5}, ValueError),
        ({"rate_limit": True}, TypeError),
        ({"aggregate": "yes"}, TypeError),
        ({"ordered": 1}, TypeError),
        ({"limits": {"max_batch_records": 5}}, TypeError),
        ({"client": object(), "endpoint_url": "http://127.0.0.1:1"}, ValueError),
        ({"endpoint_url": 5}, TypeError),
        ({"endpoint_url": "localhost:4567"}, ValueError),
        ({"region_name": 1.5}, TypeError),
        ({"aggregate": True, "max_aggregate_bytes": 10}, ValueError),
        ({"credentials": "secret"}, TypeError),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Producer("s", **kwargs)


def test_stream_must_be_a_name_or_kinesis_arn() -> None:
    with pytest.raises(ValueError, match="ARN"):
        Producer("arn:aws:s3:::bucket")
    Producer("arn:aws:kinesis:us-east-1:123456789012:stream/logs")
    Producer("logs", rate_limit=None, aggregate=True, max_aggregate_bytes=1000)


async def test_put_before_start_and_after_close_is_refused() -> None:
    producer = Producer("s")
    with pytest.raises(errors.ProducerClosed):
        producer.put_nowait(b"x", partition_key="k")
    async with ScriptedKinesis("s") as kinesis:
        async with Producer("s", endpoint_url=kinesis.url) as producer:
            pending = await producer.put(b"x", partition_key="k")
        assert (await pending).shard_id  # accepted before close: delivered at close
        with pytest.raises(errors.ProducerClosed):
            await producer.put(b"x", partition_key="k")
        await producer.aclose()  # idempotent
        await producer.aclose()


# --- backpressure and a stalled endpoint ------------------------------------------------


async def test_stalled_endpoint_fills_the_queue_and_put_waits() -> None:
    async with (
        ScriptedKinesis("s", stall=True) as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, max_queue_records=50, linger=0, record_ttl=60
        ) as producer,
    ):
        futures = [await producer.put(b"x", partition_key=f"k{i}") for i in range(50)]
        with pytest.raises(errors.QueueFull):
            producer.put_nowait(b"y", partition_key="k")
        # put waits; cancelled, it leaves nothing behind
        with anyio.move_on_after(0.3) as scope:
            await producer.put(b"y", partition_key="k")
        assert scope.cancelled_caught
        assert producer.stats().queued == 50
        # a waiting put goes through once the endpoint answers
        waiter = asyncio.ensure_future(producer.put(b"z", partition_key="k"))
        await wait_until(lambda: len(kinesis.requests) >= 1)
        assert not waiter.done()
        kinesis.release()
        with anyio.fail_after(20):
            late = await waiter
            await asyncio.gather(*futures, late)
    assert sorted(e.data for e in kinesis.accepted) == [b"x"] * 50 + [b"z"]


async def test_queue_is_bounded_in_bytes_too() -> None:
    async with (
        ScriptedKinesis("s", stall=True) as kinesis,
        Producer(
            "s",
            endpoint_url=kinesis.url,
            limits=SMALL,
            max_queue_bytes=8000,
            linger=0,
            record_ttl=60,
        ) as producer,
    ):
        accepted = 0
        while True:
            try:
                producer.put_nowait(b"x" * 900, partition_key="k")
            except errors.QueueFull:
                break
            accepted += 1
            assert accepted < 100
        stats = producer.stats()
        assert stats.queued == accepted
        assert stats.queued_bytes <= 8000
        per_record = stats.queued_bytes // accepted
        assert per_record > 1200 + RECORD_OVERHEAD  # base64 of 900 bytes, key, bookkeeping
        assert accepted == 8000 // per_record  # stopped by bytes, far below the record bound
        kinesis.release()
        await producer.flush()
        assert producer.stats().queued_bytes == 0


async def test_close_with_a_stalled_endpoint_does_not_hang_and_fails_the_rest() -> None:
    async with ScriptedKinesis("s", stall=True) as kinesis:
        producer = Producer("s", endpoint_url=kinesis.url, linger=0, record_ttl=60)
        async with producer:
            futures = [await producer.put(b"x", partition_key=f"k{i}") for i in range(30)]
            await wait_until(lambda: len(kinesis.requests) >= 1)
            with anyio.fail_after(20):
                await producer.aclose(grace=0.2)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(o, errors.DeliveryFailed) for o in outcomes)
        assert producer.stats().queued == 0


async def test_stalled_records_fail_after_record_ttl() -> None:
    async with (
        ScriptedKinesis("s", stall=True) as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, linger=0, record_ttl=0.5, max_in_flight=1
        ) as producer,
    ):
        first = await producer.put(b"x", partition_key="a")
        await wait_until(lambda: len(kinesis.requests) == 1)
        queued = await producer.put(b"y", partition_key="b")  # waits for the slot
        with anyio.fail_after(20):
            outcomes = await asyncio.gather(first, queued, return_exceptions=True)
        assert all(isinstance(o, errors.DeliveryFailed) for o in outcomes)
        first_failure, second_failure = outcomes
        assert isinstance(first_failure, errors.DeliveryFailed)
        assert isinstance(second_failure, errors.DeliveryFailed)
        assert [a.error_code for a in first_failure.attempts] == ["RequestTimeout"]
        # the second got the slot when the first timed out, with its TTL nearly spent
        assert {a.error_code for a in second_failure.attempts} <= {"RequestTimeout"}
        assert producer.stats().queued == 0
        kinesis.release()


async def test_closing_wakes_a_waiting_put_with_producer_closed() -> None:
    async with (
        ScriptedKinesis("s", stall=True) as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, max_queue_records=1, linger=0, record_ttl=60
        ) as producer,
    ):
        await producer.put(b"x", partition_key="k")
        waiter = asyncio.ensure_future(producer.put(b"y", partition_key="k"))
        await asyncio.sleep(0)
        await producer.aclose(grace=0)
        with pytest.raises(errors.ProducerClosed):
            await waiter


async def test_cancelling_the_enclosing_scope_fails_pending_records_and_cleans_up() -> None:
    async with ScriptedKinesis("s", stall=True) as kinesis:
        producer = Producer("s", endpoint_url=kinesis.url, linger=0, record_ttl=60)
        futures = []
        with anyio.move_on_after(0.5):
            async with producer:
                for i in range(10):
                    futures.append(await producer.put(b"x", partition_key=f"k{i}"))
                await anyio.sleep(60)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(o, errors.DeliveryFailed) for o in outcomes)
        assert producer.stats().queued == 0
        with pytest.raises(errors.ProducerClosed):
            producer.put_nowait(b"x", partition_key="k")


class _BuggyTracerProvider:
    """A TracerProvider whose tracer raises: the sender calls it after every request, so
    a bug there crashes the sender (no internal is patched)."""

    def get_tracer(self, *_args: object) -> object:
        return self

    def start_span(self, *_args: object, **_kwargs: object) -> None:
        raise RuntimeError("bug in the sender")


async def test_a_crashing_sender_fails_every_pending_delivery() -> None:
    pytest.importorskip("opentelemetry")
    async with ScriptedKinesis("s") as kinesis:
        producer = Producer(
            "s", endpoint_url=kinesis.url, linger=0, tracer_provider=_BuggyTracerProvider()
        )
        futures = []
        with pytest.raises(BaseExceptionGroup) as info:  # noqa: PT012
            async with producer:
                for i in range(5):
                    futures.append(await producer.put(b"x", partition_key=f"k{i}"))
                await anyio.sleep(30)
        assert info.group_contains(RuntimeError, match="bug in the sender")
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, errors.DeliveryFailed)
        assert isinstance(outcome.cause, RuntimeError)


async def test_no_task_is_left_behind() -> None:
    before = asyncio.all_tasks()
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0) as producer,
    ):
        await producer.put_and_wait(b"x", partition_key="k")
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()


def test_largest_record_must_fit_the_byte_bound() -> None:
    limits = KinesisLimits(max_record_bytes=3000)
    need = 4 * math.ceil(3000 / 3) + RECORD_OVERHEAD
    with pytest.raises(ValueError, match="max_queue_bytes"):
        Producer("s", limits=limits, max_queue_bytes=need)
    Producer("s", limits=limits, max_queue_bytes=need + 64)  # + the JSON punctuation


async def test_errors_in_the_body_propagate_unwrapped() -> None:
    async with ScriptedKinesis("s") as kinesis:
        with pytest.raises(KeyError):  # noqa: PT012
            async with Producer("s", endpoint_url=kinesis.url, linger=0) as producer:
                delivery = await producer.put(b"x", partition_key="k")
                raise KeyError("mine")
        assert (await delivery).sequence_number  # still delivered on the way out


async def test_ordered_records_expire_in_queue_without_disturbing_their_key() -> None:
    async with (
        ScriptedKinesis("s", stall=True) as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, ordered=True, linger=0.4, record_ttl=0.6
        ) as producer,
    ):
        head = await producer.put(b"a1", partition_key="a")
        behind = await producer.put(b"a2", partition_key="a")  # waits behind its head
        await asyncio.sleep(0.35)
        other = await producer.put(b"b1", partition_key="b")  # keeps the request open longer
        await wait_until(lambda: len(kinesis.requests) == 1)
        with anyio.fail_after(20):
            failure = await asyncio.gather(behind, return_exceptions=True)
        assert isinstance(failure[0], errors.DeliveryFailed)
        assert failure[0].attempts == ()  # expired in the queue, never sent
        assert not head.done()  # its head is still in flight, untouched
        with anyio.fail_after(20):
            outcomes = await asyncio.gather(head, other, return_exceptions=True)
        assert all(isinstance(o, errors.DeliveryFailed) for o in outcomes), outcomes
        kinesis.release()
        with anyio.fail_after(20):
            result = await producer.put_and_wait(b"a3", partition_key="a")
        assert result.sequence_number
        assert producer.stats().queued == 0


async def test_a_record_larger_than_a_request_goes_in_a_request_of_its_own() -> None:
    # a stream may allow records (MaxRecordSizeInKiB, up to 10 MiB) larger than the
    # default request limit (5 MiB): such a record is sent alone
    limits = KinesisLimits(max_record_bytes=2000, max_batch_bytes=1500)
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, limits=limits, linger=0.05) as producer,
    ):
        with pytest.raises(errors.RecordTooLarge, match="max_record_bytes"):
            await producer.put(b"x" * 2000, partition_key="k")  # 2001 bytes
        futures = [await producer.put(b"s%d" % i, partition_key="k") for i in range(3)]
        futures.append(await producer.put(b"x" * 1999, partition_key="k"))  # 2000: alone
        futures += [await producer.put(b"t%d" % i, partition_key="k") for i in range(3)]
        await asyncio.gather(*futures)
    assert 2000 in [r.data_bytes for r in kinesis.requests]
    for request in kinesis.requests:
        assert request.data_bytes <= 1500 or len(request.entries) == 1
    assert sorted(len(e.data) for e in kinesis.accepted) == [2] * 6 + [1999]
