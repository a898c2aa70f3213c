"""The consumer through FaultProxy with every read fault at once, on several shards, with
records (plain and KPL aggregates) written while it reads, and a stop and resume from
SQLite checkpoints in the middle: every record delivered, none repeated, per-key order.

tests/integration/test_consumer_faults.py proves each fault kind alone on data written
beforehand (expired iterators; read throttling with transport errors; read limits).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from shardflow import Consumer, Record, SQLiteCheckpointer
from shardflow.testing import FaultProxy

from support import create_stream, kinesis
from support_consumer import POLL, assert_per_key_order, no_more, numbered, put_records, wait_until
from support_reliability import faults, report, tally

pytestmark = pytest.mark.slow

KEYS = 24
PHASE = 700  # plain records per phase, three phases
AGGREGATES = 6  # per phase, of 10 sub-records each


def phase_items(phase: int) -> tuple[list[tuple[str, bytes]], list[list[tuple[str, bytes]]]]:
    """Plain records and aggregates (same key inside each) of one phase; data
    ``r:<key>:<i>`` with ``i`` increasing per key across phases."""
    plain = [(key, b"r:%s:%d" % (key.encode(), phase * 10_000 + int(data.rsplit(b":", 1)[1])))
             for key, data in numbered(PHASE, keys=KEYS)]
    aggregates = [
        [(f"agg-{a}", b"r:agg-%d:%d" % (a, phase * 100 + i)) for i in range(10)]
        for a in range(AGGREGATES)
    ]
    return plain, aggregates


def write_phase(url: str, stream: str, phase: int) -> list[bytes]:
    plain, aggregates = phase_items(phase)
    client = kinesis(url)
    half = len(plain) // 2
    put_records(url, stream, plain[:half])
    for subs in aggregates:
        aggregator = RecordAggregator()
        for key, data in subs:
            assert aggregator.add_user_record(key, data) is None
        pk, _, blob = aggregator.clear_and_get().get_contents()
        client.put_record(StreamName=stream, PartitionKey=pk, Data=blob)
    put_records(url, stream, plain[half:])
    return [d for _, d in plain] + [d for subs in aggregates for _, d in subs]


async def test_every_record_once_under_all_read_faults_across_a_restart(
    kinesalite_url: str, tmp_path: Path
) -> None:
    url = kinesalite_url
    name = create_stream(url, shards=4)
    checkpointer = SQLiteCheckpointer(tmp_path / "checkpoints.db")
    sent: list[bytes] = []
    first: list[Record] = []
    second: list[Record] = []
    options = dict(
        endpoint_url="", poll_interval=POLL, app_name="app", checkpointer=checkpointer,
        get_records_limit=40, max_buffer_records=80, resync_interval=1.0,
    )

    async def read(consumer: Consumer, into: list[Record], stop_at: int | None) -> None:
        async for record in consumer:
            into.append(record)
            await consumer.checkpoint(record)
            if stop_at is not None and len(into) >= stop_at:
                return

    async with FaultProxy(
        url, seed=99, expire_iterator_fraction=0.15, read_throttle_fraction=0.15,
        enforce_read_limits=True, error_5xx_fraction=0.03, reset_before_fraction=0.02,
        reset_after_fraction=0.02, operations={"*"},
    ) as proxy:
        options["endpoint_url"] = proxy.url
        sent += await anyio.to_thread.run_sync(write_phase, url, name, 0)
        async with Consumer(name, **options) as consumer, anyio.create_task_group() as tg:
            stop_at = int(PHASE * 1.4)
            tg.start_soon(read, consumer, first, stop_at)
            sent += await anyio.to_thread.run_sync(write_phase, url, name, 1)
            await wait_until(lambda: len(first) >= stop_at, within=60)
            stats_first = consumer.stats()
        # Stopped in the middle: records buffered but not delivered are not checkpointed.
        sent += await anyio.to_thread.run_sync(write_phase, url, name, 2)
        async with Consumer(name, **options) as consumer, anyio.create_task_group() as tg:
            tg.start_soon(read, consumer, second, None)
            await wait_until(lambda: len(first) + len(second) >= len(sent), within=90)
            assert await no_more(consumer) == []
            tg.cancel_scope.cancel()
            stats_second = consumer.stats()
        counts = dict(proxy.counts)

    got = tally(sent, [r.data for r in first + second])
    report(
        "consumer under read faults with a restart (kinesalite, 4 shards)",
        records=len(sent), first_run=len(first), second_run=len(second),
        faults=f"[{faults(counts)}]",
        iterators_renewed=stats_first.iterators_renewed + stats_second.iterators_renewed,
        throttled_seen=stats_first.throttled + stats_second.throttled,
        retries=stats_first.retries + stats_second.retries,
        repeats=got.duplicates, lost=len(got.missing),
    )
    assert counts["expired_iterators"] > 0
    assert counts["read_throttled"] > 0
    assert counts["errors_5xx"] + counts["resets_before"] + counts["resets_after"] > 0
    assert not got.missing
    assert not got.unexpected
    assert got.duplicates == 0
    assert_per_key_order(first + second)
    assert any(r.sub_sequence_number is not None for r in first + second)
