"""KPL aggregation in the producer, against the scripted endpoint: packing per predicted
shard, per-record results, retries of whole aggregates, resharding, ordering."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
from collections import defaultdict
from typing import Any

import anyio
import pytest

from shardflow import Producer, PutResult, errors
from shardflow.aggregation import deaggregate
from shardflow.producer import WRONG_SHARD

from support_producer import Entry, ScriptedKinesis

THROTTLED = "ProvisionedThroughputExceededException"


def hash_of(key: str, ehk: str | None = None) -> int:
    return int(ehk) if ehk is not None else int(hashlib.md5(key.encode()).hexdigest(), 16)


def unpack(entry: Entry) -> list[tuple[str, str | None, bytes]] | None:
    """The sub-records of a written entry, or None for a plain record."""
    return deaggregate(entry.data)


def located(kinesis: ScriptedKinesis) -> dict[tuple[str, int | None], tuple[str, bytes]]:
    """(sequence number, sub-sequence number or None) -> (partition key, data)."""
    out: dict[tuple[str, int | None], tuple[str, bytes]] = {}
    for entry in kinesis.accepted:
        subs = unpack(entry)
        if subs is None:
            out[(entry.sequence_number, None)] = (entry.partition_key, entry.data)
        else:
            for index, (key, _, data) in enumerate(subs):
                out[(entry.sequence_number, index)] = (key, data)
    return out


def assert_aggregates_within_their_shards(kinesis: ScriptedKinesis) -> None:
    """Every aggregate holds only records of the shard it landed on (what the KCL keeps)."""
    ranges = kinesis.ranges()
    for entry in kinesis.accepted:
        subs = unpack(entry)
        if subs is None:
            continue
        low, high = ranges[entry.shard_id]
        for key, ehk, _ in subs:
            assert low <= hash_of(key, ehk) <= high, (entry.shard_id, key)


async def test_records_are_packed_per_shard_and_results_point_inside_aggregates() -> None:
    events = [(f"user-{i % 50}", b"event-%d" % i) for i in range(2000)]
    async with (
        ScriptedKinesis("s", shards=3) as kinesis,
        Producer("s", endpoint_url=kinesis.url, aggregate=True, linger=0.05) as producer,
    ):
        futures = [await producer.put(data, partition_key=key) for key, data in events]
        results: list[PutResult] = await asyncio.gather(*futures)
        stats = producer.stats()
    aggregates = [e for e in kinesis.accepted if unpack(e) is not None]
    assert aggregates  # packed, not sent one by one
    assert len(kinesis.accepted) < len(events) / 20
    assert stats.kinesis_records == len(kinesis.accepted)
    assert stats.delivered == len(events)
    assert_aggregates_within_their_shards(kinesis)
    for entry in aggregates:  # the outer record lands on its shard by explicit hash key
        assert entry.explicit_hash_key is not None
        assert entry.partition_key == unpack(entry)[0][0]  # type: ignore[index]
    where = located(kinesis)
    assert len(where) == len(events)  # every record written exactly once
    by_seq = {e.sequence_number: e for e in kinesis.accepted}
    for (key, data), result in zip(events, results, strict=True):
        assert where[(result.sequence_number, result.sub_sequence_number)] == (key, data)
        assert by_seq[result.sequence_number].shard_id == result.shard_id
        assert [a.error_code for a in result.attempts] == [None]


async def test_large_and_lone_records_go_on_their_own() -> None:
    async with (
        ScriptedKinesis("s", shards=2) as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, aggregate=True, max_aggregate_bytes=1000, linger=0
        ) as producer,
    ):
        big = await producer.put_and_wait(b"x" * 1200, partition_key="big")
        lone = await producer.put_and_wait(b"alone", partition_key="k")
        small = [await producer.put(b"s%d" % i, partition_key="k") for i in range(100)]
        await producer.flush()
    assert big.sub_sequence_number is None
    assert lone.sub_sequence_number is None
    plain = {e.data: e for e in kinesis.accepted if unpack(e) is None}
    assert plain[b"x" * 1200].partition_key == "big"
    assert plain[b"alone"].partition_key == "k"
    assert plain[b"alone"].explicit_hash_key is None  # sent as the user's own record
    # the small ones were packed within the limit: data + partition key (what AWS counts)
    aggregates = [e for e in kinesis.accepted if unpack(e) is not None]
    assert len(aggregates) >= 100 * 3 // 1000
    for entry in aggregates:
        assert len(entry.data) + len(entry.partition_key.encode()) <= 1000
    assert (
        sum(len(unpack(e) or ()) for e in aggregates)
        + sum(f.result().sub_sequence_number is None for f in small)
        == 100
    )


async def test_a_failed_aggregate_is_retried_whole_and_every_record_keeps_its_attempts() -> None:
    throttled: set[str] = set()

    def throttle_first_try(_req: int, _i: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        if entry["Data"] in throttled:
            return None
        throttled.add(entry["Data"])
        return (THROTTLED, "Rate exceeded for shard")

    async with (
        ScriptedKinesis("s", shards=2, entry_error=throttle_first_try) as kinesis,
        Producer("s", endpoint_url=kinesis.url, aggregate=True, linger=0.05) as producer,
    ):
        futures = [await producer.put(b"%d" % i, partition_key=f"k{i % 7}") for i in range(300)]
        results: list[PutResult] = await asyncio.gather(*futures)
        stats = producer.stats()
    sent = [e["Data"] for r in kinesis.requests for e in r.entries]
    assert len(sent) == 2 * len(kinesis.accepted)  # each entry once throttled, once written
    assert {base64.b64decode(d) for d in sent} == {e.data for e in kinesis.accepted}
    for result in results:
        assert [a.error_code for a in result.attempts] == [THROTTLED, None]
    assert stats.retried == 300
    assert stats.delivered == 300
    assert len(located(kinesis)) == 300


async def test_a_rejected_aggregate_fails_every_record_in_it() -> None:
    def reject(_req: int, _i: int, entry: dict[str, Any]) -> tuple[str, str] | None:
        subs = deaggregate(base64.b64decode(entry["Data"]))
        if subs and any(key == "poison" for key, _, _ in subs):
            return ("KMSAccessDeniedException", "no key")
        return None

    async with (
        ScriptedKinesis("s", shards=1, entry_error=reject) as kinesis,
        Producer("s", endpoint_url=kinesis.url, aggregate=True, linger=0.05) as producer,
    ):
        futures = [await producer.put(b"%d" % i, partition_key="k") for i in range(20)]
        futures.append(await producer.put(b"bad", partition_key="poison"))
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, errors.DeliveryFailed) for o in outcomes)
    for outcome in outcomes:
        assert isinstance(outcome, errors.DeliveryFailed)
        assert [a.error_code for a in outcome.attempts] == ["KMSAccessDeniedException"]
    assert kinesis.accepted == []
    assert len(kinesis.requests) == 1


async def test_explicit_hash_keys_are_kept_inside_aggregates() -> None:
    async with (
        ScriptedKinesis("s", shards=4) as kinesis,
        Producer("s", endpoint_url=kinesis.url, aggregate=True, linger=0.05) as producer,
    ):
        low, high = kinesis.shard_range(2)
        futures = [
            await producer.put(b"%d" % i, partition_key=f"k{i}", explicit_hash_key=low + i)
            for i in range(10)
        ]
        futures.append(await producer.put(b"top", partition_key="k", explicit_hash_key=high))
        results = await asyncio.gather(*futures)
        for bad in ("-1", "01", "1e3", str(2**128), 2**128, "", " 5"):
            with pytest.raises(errors.InvalidHashKey):
                await producer.put(b"x", partition_key="k", explicit_hash_key=bad)
    assert {r.shard_id for r in results} == {kinesis.shard_id(2)}
    assert_aggregates_within_their_shards(kinesis)
    subs = [s for e in kinesis.accepted for s in unpack(e) or ()]
    assert sorted(int(ehk) for _, ehk, _ in subs if ehk) == [*range(low, low + 10), high]


async def test_ordered_aggregates_keep_per_key_order_under_failures() -> None:
    rng = random.Random(5)

    def flaky(_req: int, _i: int, _entry: dict[str, Any]) -> tuple[str, str] | None:
        roll = rng.random()
        if roll < 0.3:
            return (THROTTLED, "Rate exceeded")
        if roll < 0.35:
            return ("InternalFailure", "oops")
        return None

    keys = [f"user-{i}" for i in range(12)]
    async with (
        ScriptedKinesis("s", shards=3, entry_error=flaky) as kinesis,
        Producer(
            "s",
            endpoint_url=kinesis.url,
            aggregate=True,
            ordered=True,
            linger=0.01,
            max_in_flight=4,
            max_aggregate_bytes=200,
        ) as producer,
    ):
        futures = []
        for n in range(60):
            for key in keys:
                futures.append(await producer.put(b"%s:%d" % (key.encode(), n), partition_key=key))
            await asyncio.sleep(0.001)
        await asyncio.gather(*futures)
        assert producer.stats().retried > 0
    by_key: dict[str, list[int]] = defaultdict(list)
    shared = 0
    for entry in kinesis.accepted:  # in write order; sub-records in aggregate order
        subs = unpack(entry) or [(entry.partition_key, None, entry.data)]
        counts: dict[str, int] = defaultdict(int)
        for key, _, data in subs:
            by_key[key].append(int(data.split(b":")[1]))
            counts[key] += 1
        shared += any(c > 1 for c in counts.values())
    assert dict(by_key) == {key: list(range(60)) for key in keys}
    assert shared  # same-key records did share aggregates


async def test_a_split_sends_again_every_record_of_an_aggregate_that_landed_outside() -> None:
    async with (
        ScriptedKinesis("s", shards=2) as kinesis,
        Producer("s", endpoint_url=kinesis.url, aggregate=True, linger=0.02) as producer,
    ):
        first = [await producer.put(b"a%d" % i, partition_key=f"u{i}") for i in range(400)]
        await producer.flush()
        kinesis.reshard(4)  # each shard split in two: the map is stale
        second = [await producer.put(b"b%d" % i, partition_key=f"u{i}") for i in range(400)]
        results: list[PutResult] = await asyncio.gather(*first, *second)
        third = [await producer.put(b"c%d" % i, partition_key=f"u{i}") for i in range(400)]
        results += await asyncio.gather(*third)
        stats = producer.stats()
    assert stats.shard_map_refreshes >= 1
    assert kinesis.list_shards_calls >= 2
    assert stats.misrouted > 0
    wrong = [r for r in results if any(a.error_code == WRONG_SHARD for a in r.attempts)]
    assert wrong  # aggregates packed for the old shards were sent again
    for result in wrong:
        assert result.attempts[-1].ok
    # each result points at a copy a KCL consumer keeps (AggregatorUtil drops an
    # aggregate whole when any sub-record hashes outside its shard): an aggregate that
    # holds this record, on a shard whose range holds every one of its records
    by_seq = {e.sequence_number: e for e in kinesis.accepted}
    where = located(kinesis)
    outside = misplaced(kinesis)
    assert outside  # some aggregates did land where the KCL drops them
    for i, result in enumerate(results):
        assert result.sequence_number not in outside
        key, data = where[(result.sequence_number, result.sub_sequence_number)]
        assert (key, data) == (f"u{i % 400}", b"abc"[i // 400 : i // 400 + 1] + b"%d" % (i % 400))
    # every record of a misplaced aggregate was sent again, none delivered there
    wrong_data = {where[(r.sequence_number, r.sub_sequence_number)][1] for r in wrong}
    for entry in kinesis.accepted:
        if entry.sequence_number in outside:
            assert {data for _, _, data in unpack(entry) or ()} <= wrong_data
    # after the refresh, aggregates are packed for the new shards
    new_ids = {kinesis.shard_id(i) for i in range(4)}
    third_seqs = {f.result().sequence_number for f in third}
    assert {by_seq[s].shard_id for s in third_seqs} <= new_ids
    assert_aggregates_within_their_shards_after(kinesis, third_seqs)


def misplaced(kinesis: ScriptedKinesis) -> set[str]:
    """Sequence numbers of the aggregates written on a shard whose range does not hold
    every one of their records."""
    ranges = kinesis.ranges()
    out: set[str] = set()
    for entry in kinesis.accepted:
        low, high = ranges[entry.shard_id]
        if any(not low <= hash_of(key, ehk) <= high for key, ehk, _ in unpack(entry) or ()):
            out.add(entry.sequence_number)
    return out


def assert_aggregates_within_their_shards_after(kinesis: ScriptedKinesis, seqs: set[str]) -> None:
    ranges = kinesis.ranges()
    for entry in kinesis.accepted:
        if entry.sequence_number in seqs:
            low, high = ranges[entry.shard_id]
            for key, ehk, _ in unpack(entry) or ():
                assert low <= hash_of(key, ehk) <= high


async def test_a_merge_delivers_what_landed_on_the_wider_shard_without_sending_it_again() -> None:
    async with (
        ScriptedKinesis("s", shards=4) as kinesis,
        Producer("s", endpoint_url=kinesis.url, aggregate=True, linger=0.02) as producer,
    ):
        await producer.put_and_wait(b"warm", partition_key="w")
        kinesis.reshard(2)  # pairs of shards merged: each new shard holds two old ranges
        futures = [await producer.put(b"%d" % i, partition_key=f"u{i}") for i in range(400)]
        results: list[PutResult] = await asyncio.gather(*futures)
        stats = producer.stats()
    assert stats.misrouted > 0
    assert all(r.attempts[-1].ok and len(r.attempts) == 1 for r in results)
    assert len(located(kinesis)) == 401  # nothing written twice
    assert_aggregates_within_their_shards(kinesis)


async def test_the_shard_map_is_loaded_only_when_needed() -> None:
    async with ScriptedKinesis("s") as kinesis:
        async with Producer("s", endpoint_url=kinesis.url, rate_limit=None) as producer:
            await producer.put_and_wait(b"x", partition_key="k")
        assert kinesis.list_shards_calls == 0
        # (loaded in the background once the producer started: a put waits for it)
        async with Producer(
            "s", endpoint_url=kinesis.url, rate_limit=None, aggregate=True
        ) as producer:
            await producer.put_and_wait(b"x", partition_key="k")
        assert kinesis.list_shards_calls == 1
        async with Producer("s", endpoint_url=kinesis.url) as producer:  # rate_limit=1.0
            await producer.put_and_wait(b"x", partition_key="k")
        assert kinesis.list_shards_calls == 2


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (35, ValueError), ("50k", TypeError), (True, TypeError)]
)
def test_max_aggregate_bytes_is_validated(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="max_aggregate_bytes"):
        Producer("s", aggregate=True, max_aggregate_bytes=value)


async def test_close_with_a_stalled_endpoint_fails_aggregated_records() -> None:
    async with ScriptedKinesis("s", stall=True) as kinesis:
        producer = Producer("s", endpoint_url=kinesis.url, aggregate=True, linger=0, record_ttl=60)
        async with producer:
            futures = [await producer.put(b"x", partition_key=f"k{i}") for i in range(50)]
            with anyio.fail_after(20):
                await producer.aclose(grace=0.2)
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert all(isinstance(o, errors.DeliveryFailed) for o in outcomes)
        assert producer.stats().queued == 0
        kinesis.release()


async def test_without_a_fresh_map_misrouted_aggregates_wait_then_fail_at_their_ttl(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with (
        ScriptedKinesis("s", shards=2) as kinesis,
        Producer(
            "s", endpoint_url=kinesis.url, aggregate=True, linger=0.01, record_ttl=1.5
        ) as producer,
    ):
        await producer.put_and_wait(b"warm", partition_key="w")  # the first map is loaded
        kinesis.list_shards_error = "InternalFailure"  # no refresh will succeed
        kinesis.reshard(4)
        futures = [await producer.put(b"%d" % i, partition_key=f"u{i}") for i in range(100)]
        with anyio.fail_after(20):
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
        assert producer.stats().waiting == 0
        kinesis.list_shards_error = None
        with anyio.fail_after(20):  # the producer recovers once ListShards answers again
            result = await producer.put_and_wait(b"after", partition_key="u1")
    failed = [o for o in outcomes if isinstance(o, errors.DeliveryFailed)]
    delivered = [o for o in outcomes if isinstance(o, PutResult)]
    assert failed  # landed outside their new shard: never reported as delivered
    for failure in failed:
        assert [a.error_code for a in failure.attempts] == [WRONG_SHARD]
    # what landed on a shard that holds all its records was delivered at once
    for outcome in delivered:
        assert [a.error_code for a in outcome.attempts] == [None]
    assert result.shard_id in {kinesis.shard_id(i) for i in range(4)}
    assert "could not refresh the shard map" in caplog.text
