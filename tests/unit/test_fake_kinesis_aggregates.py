"""The fake's cheap aggregate counting agrees with full deaggregation, and finds the
sub-records a KCL consumer would drop (hash key outside the aggregate's shard)."""

from __future__ import annotations

import hashlib

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from shardflow.aggregation import MAGIC, aggregate, deaggregate

import support_bench  # noqa: F401  (puts the repository root on sys.path)
from benchmarks.fake_kinesis.aggregates import count_user_records
from benchmarks.fake_kinesis.streams import Stream

STREAM = Stream("agg", 4, False, 1)
QUARTER = 2**126


def shard_by_md5(key: str, ehk: str | None = None) -> int:
    """An independent referee: MD5 of the key, or the explicit hash key, over 4 even shards."""
    value = int(ehk) if ehk is not None else int.from_bytes(
        hashlib.md5(key.encode()).digest(), "big")
    return value // QUARTER


def keys_on(shard: int, count: int) -> list[str]:
    found = [k for k in (f"user-{i}" for i in range(10_000)) if shard_by_md5(k) == shard]
    return found[:count]


def wrap(message: bytes) -> bytes:
    return MAGIC + message + hashlib.md5(message).digest()


def test_one_shard_aggregate_counts_every_sub_record() -> None:
    keys = keys_on(2, 40)
    blob = aggregate([(keys[i % 40], None, b"x" * (i % 300)) for i in range(500)])
    assert count_user_records(blob, 2, STREAM.shard_of) == (500, 0)
    assert len(deaggregate(blob) or []) == 500


def test_sub_records_outside_the_shard_are_counted_exactly() -> None:
    records = [(f"user-{i}", None, b"{}") for i in range(300)]
    blob = aggregate(records)
    expected = sum(shard_by_md5(k) != 1 for k, _, _ in records)
    assert 0 < expected < 300
    assert count_user_records(blob, 1, STREAM.shard_of) == (300, expected)


def test_explicit_hash_keys_route_sub_records() -> None:
    keys = keys_on(0, 3)
    inside = str(3 * QUARTER + 5)  # shard 3, whatever the partition key says
    agg = RecordAggregator()
    for i in range(30):
        agg.add_user_record(keys[i % 3], b"d", explicit_hash_key=inside if i % 2 else None)
    _, _, blob = agg.clear_and_get().get_contents()
    assert count_user_records(blob, 3, STREAM.shard_of) == (30, 15)
    assert count_user_records(blob, 0, STREAM.shard_of) == (30, 15)


@pytest.mark.parametrize("case", ["plain", "bad md5", "truncated", "magic only", "empty"])
def test_anything_but_a_valid_aggregate_is_one_user_record(case: str) -> None:
    good = aggregate([("k", None, b"a"), ("k", None, b"b")])
    blob = {
        "plain": b'{"not": "an aggregate"}',
        "bad md5": good[:-1] + bytes([good[-1] ^ 1]),
        "truncated": wrap(good[4:-16][:-3]),
        "magic only": MAGIC,
        "empty": wrap(b""),
    }[case]
    assert count_user_records(blob, shard_by_md5("k"), STREAM.shard_of) == (1, 0)


def test_unusual_layouts_are_decided_by_full_deaggregation() -> None:
    key = keys_on(0, 1)[0]
    message = aggregate([(key, None, b"a"), (key, None, b"b")])[4:-16]
    # An unknown varint field (number 9) after the records: valid protobuf.
    blob = wrap(message + b"\x48\x01")
    assert len(deaggregate(blob) or []) == 2
    assert count_user_records(blob, 0, STREAM.shard_of) == (2, 0)
