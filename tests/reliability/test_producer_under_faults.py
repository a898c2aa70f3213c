"""The producer through FaultProxy with the fault mix of issue 9 (seeded): 10 % of
PutRecords entries throttled, 2 % of requests answered 5xx, 1 % of requests reset after
the upstream applied them. Every accepted record must be in the stream (read back with
boto3, aggregates opened); extra copies may only come from the resets after apply (at
most ``reset_after_entries``, each on a record whose attempts include the reset); with
``ordered=True`` each key's first occurrences are in put order.

tests/integration/test_producer_faults.py covers each fault alone; this is the mix, on
several shards, long enough for every kind of fault to happen a few times.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

import pytest

from shardflow import KinesisLimits, Producer, PutResult
from shardflow.testing import FaultProxy

from support import create_stream
from support_reliability import (
    faults,
    first_occurrences,
    out_of_order,
    read_user_records,
    report,
    tally,
)

pytestmark = pytest.mark.slow

RESET = "EndpointUnreachable"  # how the client sees a connection reset
ROUND = 1500  # records per round; rounds go on until every fault kind happened enough
MAX_ROUNDS = 12
KEYS = 97
# Small requests: many of them, so request-level faults (2 %, 1 %) happen often enough.
LIMITS = KinesisLimits(max_batch_records=25)
# Aggregated, ~30 records fill a 512-byte aggregate: one aggregate per request.
AGGREGATE_LIMITS = KinesisLimits(max_batch_records=1, max_record_bytes=512)


def payload(key: int, n: int) -> bytes:
    return b"user-%d:%d" % (key, n)


@pytest.mark.parametrize(
    ("server", "ordered", "aggregate", "minimum"),
    [
        pytest.param("kinesalite", False, False, 3, id="kinesalite"),
        pytest.param("kinesalite", True, False, 3, id="kinesalite-ordered"),
        pytest.param("kinesalite", False, True, 2, id="kinesalite-aggregate"),
        pytest.param("moto", True, False, 1, id="moto-ordered"),
    ],
)
async def test_every_accepted_record_survives_the_fault_mix(
    request: pytest.FixtureRequest, server: str, ordered: bool, aggregate: bool, minimum: int
) -> None:
    url: str = request.getfixturevalue(f"{server}_url")
    name = create_stream(url, shards=4)
    sent: list[bytes] = []
    futures: list[asyncio.Future[PutResult]] = []
    counter: dict[int, int] = defaultdict(int)
    async with FaultProxy(
        url, seed=2024, throttle_fraction=0.10, error_5xx_fraction=0.02,
        reset_after_fraction=0.01,
    ) as proxy:
        async with Producer(
            name, endpoint_url=proxy.url, linger=0.01, ordered=ordered, aggregate=aggregate,
            limits=AGGREGATE_LIMITS if aggregate else LIMITS, record_ttl=120,
        ) as producer:
            for rounds in range(1, MAX_ROUNDS + 1):
                for i in range(ROUND):
                    key = (i * 7919 + rounds) % KEYS
                    data = payload(key, counter[key])
                    counter[key] += 1
                    sent.append(data)
                    futures.append(await producer.put(data, partition_key=f"user-{key}"))
                await producer.flush()
                counts = proxy.counts
                if min(counts["errors_5xx"], counts["resets_after"]) >= minimum:
                    break
            results = await asyncio.gather(*futures)  # raises if any delivery failed
            stats = producer.stats()
        counts = dict(proxy.counts)

    records, aggregates = await read_user_records(url, name)
    got = tally(sent, [r.data for r in records])
    reset_records = {
        data for data, result in zip(sent, results, strict=True)
        if any(a.error_code == RESET for a in result.attempts)
    }
    attempts = sum(len(r.attempts) for r in results)
    per_record = max(Counter((r.shard_id, r.sequence_number) for r in records).values())
    report(
        f"producer under faults ({server}, ordered={ordered}, aggregate={aggregate})",
        records=len(sent), rounds=rounds, requests=stats.requests, attempts=attempts,
        faults=f"[{faults(counts)}]", stream_records=len(records), aggregates=aggregates,
        duplicates=got.duplicates, lost=len(got.missing),
    )
    # The mix really happened.
    assert counts["throttled_entries"] >= max(5, 0.03 * counts["put_entries"])  # 10 % asked
    assert counts["errors_5xx"] >= minimum
    assert counts["resets_after"] >= minimum
    assert counts["resets_before"] == counts["internal_failure_entries"] == 0
    # Nothing accepted is missing, nothing else is there.
    assert not got.missing
    assert not got.unexpected
    # Copies come only from resets after apply: no more than the records those resets
    # wrote (Kinesis records; each holds up to `per_record` user records), and only
    # records whose sender saw a reset.
    assert got.duplicates <= counts["reset_after_entries"] * per_record
    assert got.repeated <= reset_records
    # Each result names a record that is in the stream.
    landed = {(r.shard_id, r.sequence_number) for r in records}
    assert {(r.shard_id, r.sequence_number) for r in results} <= landed
    if ordered:
        # One key, one shard (no resharding here): the stream order of a key's first
        # copies is its put order.
        assert out_of_order(first_occurrences([r.data for r in records])) == []
