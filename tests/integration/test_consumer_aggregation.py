"""KPL aggregates (made by aws-kinesis-agg, the AWS library) come out deaggregated, with
sub-sequence numbers; checkpoints inside an aggregate resume right after the sub-record."""

from __future__ import annotations

from typing import Any

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from shardflow import Consumer, MemoryCheckpointer, Record, Shard
from shardflow.consumer import Checkpoint
from shardflow.shardmap import hash_key as key_hash

from support import create_stream, kinesis, list_shards
from support_consumer import POLL, collect, no_more
from support_kcl import after_checkpoint, read_with_kcl_rules


def aggregate(records: list[tuple[str, bytes, str | None]]) -> tuple[str, str | None, bytes]:
    """One KPL aggregate of (partition key, data, explicit hash key) with aws-kinesis-agg."""
    aggregator = RecordAggregator()
    for key, data, hash_key in records:
        assert aggregator.add_user_record(key, data, explicit_hash_key=hash_key) is None
    pk, ehk, blob = aggregator.clear_and_get().get_contents()
    return pk, ehk, blob


def put(url: str, name: str, pk: str, blob: bytes, ehk: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"StreamName": name, "PartitionKey": pk, "Data": blob}
    if ehk is not None:
        params["ExplicitHashKey"] = ehk
    result: dict[str, Any] = kinesis(url).put_record(**params)
    return result


def write_mixed(url: str, name: str) -> list[tuple[str, str, bytes, int | None, str | None]]:
    """Aggregates and plain records on one shard; returns what should come out, in order:
    (sequence number, partition key, data, sub-sequence number, explicit hash key)."""
    expected: list[tuple[str, str, bytes, int | None, str | None]] = []
    for n in range(3):
        subs = [
            (f"user-{i % 4}", f"agg{n}-{i}".encode(), "12345" if i == 2 else None)
            for i in range(10)
        ]
        pk, ehk, blob = aggregate(subs)
        seq = put(url, name, pk, blob, ehk)["SequenceNumber"]
        expected += [(seq, k, d, i, h) for i, (k, d, h) in enumerate(subs)]
        plain = f"plain-{n}".encode()
        seq = put(url, name, "plain-key", plain)["SequenceNumber"]
        expected.append((seq, "plain-key", plain, None, None))
    return expected


def as_tuple(record: Record) -> tuple[str, str, bytes, int | None, str | None]:
    return (
        record.sequence_number,
        record.partition_key,
        record.data,
        record.sub_sequence_number,
        record.explicit_hash_key,
    )


async def test_aggregates_are_deaggregated(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=1)
    expected = write_mixed(kinesis_url, name)
    async with Consumer(name, endpoint_url=kinesis_url, poll_interval=POLL) as consumer:
        got = await collect(consumer, len(expected))
        assert await no_more(consumer) == []
    assert [as_tuple(r) for r in got] == expected


async def test_a_damaged_aggregate_is_plain_data(kinesalite_url: str) -> None:
    name = create_stream(kinesalite_url, shards=1)
    pk, _, blob = aggregate([("k", b"one", None), ("k", b"two", None)])
    damaged = blob[:-1] + bytes([blob[-1] ^ 0xFF])  # the MD5 no longer matches
    put(kinesalite_url, name, pk, damaged)
    async with Consumer(name, endpoint_url=kinesalite_url, poll_interval=POLL) as consumer:
        [record] = await collect(consumer, 1)
    assert record.data == damaged
    assert record.sub_sequence_number is None


# Inside the 2nd aggregate (its 5th sub-record), and its last sub-record.
@pytest.mark.parametrize(("cut", "sub"), [(11 + 4, 4), (11 + 9, 9)])
async def test_resume_inside_an_aggregate(kinesis_url: str, cut: int, sub: int) -> None:
    name = create_stream(kinesis_url, shards=1)
    expected = write_mixed(kinesis_url, name)
    checkpointer = MemoryCheckpointer()
    async with Consumer(
        name, endpoint_url=kinesis_url, poll_interval=POLL, app_name="app",
        checkpointer=checkpointer,
    ) as consumer:
        got = await collect(consumer, cut + 3)
        await consumer.checkpoint(got[cut])
    [stored] = (await checkpointer.checkpoints("app", name)).values()
    assert stored == Checkpoint(got[cut].sequence_number, sub)
    async with Consumer(
        name, endpoint_url=kinesis_url, poll_interval=POLL, app_name="app",
        checkpointer=checkpointer,
    ) as consumer:
        rest = await collect(consumer, len(expected) - cut - 1)
        assert await no_more(consumer) == []
    assert [as_tuple(r) for r in rest] == expected[cut + 1 :]
    # what a KCL application restarted from that checkpoint processes: records at or
    # before it removed (ProcessTask / ExtendedSequenceNumber), i.e. from sub-sequence + 1
    kcl = after_checkpoint(
        await read_with_kcl_rules(kinesis_url, name),
        stored.sequence_number,
        stored.sub_sequence_number,
    )
    assert [(r.sequence_number, r.data) for r in kcl] == [
        (r.sequence_number, r.data) for r in rest
    ]


async def test_an_aggregate_with_a_sub_record_outside_its_shard_is_dropped_whole_as_the_kcl_does(
    kinesis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = create_stream(kinesis_url, shards=2)
    shards = sorted(
        (Shard.from_api(s) for s in list_shards(kinesis_url, name)),
        key=lambda s: s.starting_hash_key,
    )
    low = shards[0]
    keys = [f"user-{i}" for i in range(40)]
    inside = [k for k in keys if low.contains(key_hash(k))]
    outside = [k for k in keys if not low.contains(key_hash(k))]
    assert inside
    assert outside
    # An aggregate of keys the lower shard holds, then one that mixes in keys it does not
    # (a producer with a stale shard map), both landing on the lower shard: the KCL
    # (AggregatorUtil.deaggregate) keeps the first and drops the second whole.
    pk, _, kept = aggregate([(k, k.encode(), None) for k in inside])
    put(kinesis_url, name, pk, kept, ehk=str(low.starting_hash_key))
    pk, _, mixed = aggregate([(k, b"mixed:" + k.encode(), None) for k in keys])
    dropped = put(kinesis_url, name, pk, mixed, ehk=str(low.starting_hash_key))
    async with Consumer(name, endpoint_url=kinesis_url, poll_interval=POLL) as consumer:
        got = await collect(consumer, len(inside))
        assert await no_more(consumer) == []
        assert consumer.stats().out_of_range_dropped == len(keys)
    assert [r.data for r in got] == [k.encode() for k in inside]
    assert {r.shard_id for r in got} == {low.shard_id}
    warnings = [r.getMessage() for r in caplog.records if "dropped an aggregate" in r.getMessage()]
    assert len(warnings) == 1  # once per aggregate, naming the shard and sequence number
    assert low.shard_id in warnings[0]
    assert dropped["SequenceNumber"] in warnings[0]
