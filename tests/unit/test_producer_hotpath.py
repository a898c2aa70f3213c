"""The producer's fastest cases (one path for every record), against the scripted
endpoint: results read from the answer only when asked for, aggregates packed at put()
time (more records than the shared positions, records that expire inside an aggregate),
cancelled deliveries, flush epochs, and the byte-count check of a PutRecords answer."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import anyio
import orjson
import pytest

from shardflow import Producer, PutResult, errors
from shardflow.aggregation import deaggregate
from shardflow.producer._transport import all_written_raw

from support_producer import ScriptedKinesis

THROTTLED = "ProvisionedThroughputExceededException"


async def wait_until(condition: Any, within: float = 20.0) -> None:
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - polling a plain condition
            await asyncio.sleep(0.01)


def where(kinesis: ScriptedKinesis) -> dict[tuple[str, str, int | None], bytes]:
    """(shard id, sequence number, sub-sequence number or None) -> data, as written."""
    out: dict[tuple[str, str, int | None], bytes] = {}
    for entry in kinesis.accepted:
        subs = deaggregate(entry.data)
        if subs is None:
            out[(entry.shard_id, entry.sequence_number, None)] = entry.data
        else:
            for index, (_, _, data) in enumerate(subs):
                out[(entry.shard_id, entry.sequence_number, index)] = data
    return out


def point(result: PutResult) -> tuple[str, str, int | None]:
    return (result.shard_id, result.sequence_number, result.sub_sequence_number)


@pytest.mark.parametrize("rate_limit", [None, 1.0], ids=["no-map", "paced"])
@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregate"])
async def test_every_result_points_at_its_own_record(
    aggregate: bool, rate_limit: float | None
) -> None:
    events = [({"n": i, "pad": "x" * (i % 300)}, f"user-{i % 37}") for i in range(3000)]
    async with (
        ScriptedKinesis("s", shards=3) as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, aggregate=aggregate, rate_limit=rate_limit, linger=0.01
        ) as producer,
    ):
        futures = [await producer.put(event, partition_key=key) for event, key in events]
        await producer.flush()
        results = [f.result() for f in futures]
    written = where(kinesis)
    assert len(written) == len(events)
    for (event, _), result in zip(events, results, strict=True):
        assert orjson.loads(written[point(result)]) == event
        assert [a.error_code for a in result.attempts] == [None]
    if aggregate:  # (sub-sequence numbers locate records inside aggregates, checked above)
        assert len(kinesis.accepted) < len(events) / 10
    # read twice: an equal value
    assert futures[5].result() == results[5]


async def test_results_of_plain_records_match_the_answer_after_retries() -> None:
    def entry_error(number: int, index: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        return (THROTTLED, "slow down") if number == 0 and index % 2 else None

    async with (
        ScriptedKinesis("s", entry_error=entry_error) as kinesis,
        Producer("s", endpoint_url=kinesis.url, rate_limit=None, linger=0.01) as producer,
    ):
        futures = [await producer.put(b"r%d" % i, partition_key=f"k{i}") for i in range(40)]
        await producer.flush()
    written = where(kinesis)
    for i, future in enumerate(futures):
        result = future.result()
        assert written[point(result)] == b"r%d" % i
        codes = [a.error_code for a in result.attempts]
        assert codes == ([THROTTLED, None] if i % 2 else [None])


@pytest.mark.parametrize("aggregate", [False, True], ids=["plain", "aggregate"])
async def test_a_cancelled_delivery_stays_cancelled(aggregate: bool) -> None:
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer("s", endpoint_url=kinesis.url, aggregate=aggregate, linger=0.05) as producer,
    ):
        futures = [await producer.put(b"r%d" % i, partition_key=f"k{i % 5}") for i in range(20)]
        futures[3].cancel()
        await producer.flush()
    assert futures[3].cancelled()
    with pytest.raises(asyncio.CancelledError):
        futures[3].result()
    written = where(kinesis)
    assert sorted(written.values()) == sorted(b"r%d" % i for i in range(20))  # still sent
    assert all(written[point(f.result())] == b"r%d" % i for i, f in enumerate(futures) if i != 3)


async def test_an_aggregate_of_more_records_than_the_shared_positions() -> None:
    count = 12_000  # more records in one aggregate than positions(): sub indexes from range()
    async with (
        ScriptedKinesis("s", shards=1) as kinesis,
        Producer(
            "s",
            endpoint_url=kinesis.url,
            aggregate=True,
            max_aggregate_bytes=500_000,
            linger=5,
            max_queue_records=8 * count,  # no batch before the flush
        ) as producer,
    ):
        futures = [await producer.put(b"%d" % i, partition_key="one") for i in range(count)]
        await producer.flush()
    assert len(kinesis.accepted) == 1
    subs = deaggregate(kinesis.accepted[0].data)
    assert subs is not None
    assert [data for _, _, data in subs] == [b"%d" % i for i in range(count)]
    assert [f.result().sub_sequence_number for f in futures] == list(range(count))


async def test_records_that_expire_inside_an_aggregate_fail_and_the_others_go() -> None:
    ttl = 2.0
    async with (
        ScriptedKinesis("s") as kinesis,
        Producer(
            "s",
            endpoint_url=kinesis.url,
            aggregate=True,
            linger=ttl * 5,  # nothing leaves the open aggregate before the flush
            record_ttl=ttl,
        ) as producer,
    ):
        older = [await producer.put(b"old-%d" % i, partition_key=f"k{i}") for i in range(30)]
        await asyncio.sleep(ttl / 2)
        newer = [await producer.put(b"new-%d" % i, partition_key=f"k{i}") for i in range(30)]
        # the older ones expire in the aggregate they share with the newer ones
        await wait_until(lambda: all(f.done() for f in older), within=ttl * 4)
        assert not any(f.done() for f in newer)
        assert kinesis.requests == []
        await producer.flush()
    for future in older:
        error = future.exception()
        assert isinstance(error, errors.DeliveryFailed)
        assert "record_ttl" in str(error)
    written = where(kinesis)
    assert sorted(written.values()) == sorted(b"new-%d" % i for i in range(30))
    for i, future in enumerate(newer):
        assert written[point(future.result())] == b"new-%d" % i


async def test_a_flush_waits_only_for_what_was_put_before_it() -> None:
    slow: set[str] = set()

    def entry_error(number: int, index: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        # the later records are throttled until the earlier flush returned
        if base64.b64decode(entry["Data"]).startswith(b"later") and not slow:
            return (THROTTLED, "slow down")
        return None

    async with (
        ScriptedKinesis("s", entry_error=entry_error) as kinesis,
        Producer("s", endpoint_url=kinesis.url, linger=0.01, rate_limit=None) as producer,
    ):
        earlier = [await producer.put(b"earlier-%d" % i, partition_key=f"k{i}") for i in range(20)]
        flushing = asyncio.ensure_future(producer.flush())
        await asyncio.sleep(0)
        later = [await producer.put(b"later-%d" % i, partition_key=f"k{i}") for i in range(20)]
        await flushing
        assert all(f.done() for f in earlier)
        assert not all(f.done() for f in later)  # still throttled: not waited for
        slow.add("go")
        await producer.flush()
        assert all(f.result() for f in later)
    assert len(kinesis.accepted) == 40


def entries_answer(n: int, **extra: Any) -> bytes:
    records = [{"SequenceNumber": f"{i:056d}", "ShardId": "shardId-000000000000"} for i in range(n)]
    return orjson.dumps({"FailedRecordCount": 0, "Records": records, **extra})


def test_an_answer_is_trusted_at_a_glance_only_when_every_entry_was_written() -> None:
    assert all_written_raw(entries_answer(3), 3)
    assert all_written_raw(entries_answer(3, EncryptionType="NONE"), 3)
    assert not all_written_raw(entries_answer(3), 4)  # one missing
    for cut in (1, 2, 3, 40):
        assert not all_written_raw(entries_answer(3)[:-cut], 3)  # cut short
    failed = orjson.loads(entries_answer(3))
    failed["Records"][1] = {"ErrorCode": THROTTLED, "ErrorMessage": "slow down"}
    failed["FailedRecordCount"] = 1
    assert not all_written_raw(orjson.dumps(failed), 3)
    assert not all_written_raw(b"", 0)
