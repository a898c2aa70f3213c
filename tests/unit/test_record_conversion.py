"""The consumer's record conversion against the KCL's rules (AggregatorUtil.deaggregate):
an aggregate is dropped WHOLE when any sub-record's effective hash key (explicit hash
key, else MD5 of the partition key) falls outside the shard; one that fails the MD5
check is handed over raw. Checked against tests/support_kcl.py, the reference reader."""

from __future__ import annotations

import base64
import hashlib
import logging
from datetime import datetime, timezone
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from shardflow import Shard
from shardflow.consumer.record_conversion import to_records

from support_kcl import deaggregate as kcl_deaggregate

HALF = 2**127


def agg(records: list[tuple[str, bytes, str | None]]) -> bytes:
    """One KPL aggregate made by aws-kinesis-agg (the AWS library)."""
    aggregator = RecordAggregator()
    for key, data, ehk in records:
        assert aggregator.add_user_record(key, data, explicit_hash_key=ehk) is None
    return bytes(aggregator.clear_and_get().get_contents()[2])


def raw(seq: int, data: bytes, key: str = "outer") -> dict[str, Any]:
    return {
        "SequenceNumber": str(seq),
        "Data": data,
        "PartitionKey": key,
        "ApproximateArrivalTimestamp": datetime(2026, 1, 1, tzinfo=timezone.utc),
    }


def sent(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """boto3's records (what the KCL reference reads) as the service sends them (what
    shardflow reads): Data base64, arrival in epoch seconds."""
    return [
        {**r, "Data": base64.b64encode(r["Data"]).decode(),
         "ApproximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp()}
        for r in records
    ]


def md5(key: str) -> int:
    return int(hashlib.md5(key.encode()).hexdigest(), 16)


LOW = Shard("shardId-000000000000", 0, HALF - 1)
INSIDE = [k for k in (f"k{i}" for i in range(60)) if md5(k) < HALF][:5]
OUTSIDE = [k for k in (f"k{i}" for i in range(60)) if md5(k) >= HALF][:1]


def test_an_aggregate_with_one_key_outside_is_dropped_whole_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = agg([(k, k.encode(), None) for k in INSIDE])
    mixed = agg([(k, b"m" + k.encode(), None) for k in INSIDE[:2] + OUTSIDE + INSIDE[2:]])
    by_ehk = agg([("any", b"e1", str(HALF - 1)), ("any", b"e2", str(HALF))])
    records = [raw(1, good), raw(2, mixed), raw(3, b"plain"), raw(4, by_ehk)]
    with caplog.at_level(logging.WARNING, logger="shardflow.consumer"):
        out, dropped = to_records(LOW, sent(records), None)
    assert [(r.sequence_number, r.sub_sequence_number, r.data) for r in out] == [
        ("1", i, k.encode()) for i, k in enumerate(INSIDE)
    ] + [("3", None, b"plain")]
    assert dropped == len(INSIDE) + 1 + 2  # every sub-record of both dropped aggregates
    lines = [r for r in caplog.records if "dropped an aggregate" in r.getMessage()]
    assert len(lines) == 2
    assert all(r.levelno == logging.WARNING and LOW.shard_id in r.getMessage() for r in lines)
    assert "sequence number 2 " in lines[0].getMessage()
    # the same records as the KCL's rules give
    kcl = kcl_deaggregate(LOW.shard_id, records, LOW.starting_hash_key, LOW.ending_hash_key)
    assert [(r.sequence_number, r.data) for r in kcl] == [
        (r.sequence_number, r.data) for r in out
    ]


def test_an_aggregate_failing_the_md5_check_is_handed_over_raw() -> None:
    blob = bytearray(agg([(k, k.encode(), None) for k in INSIDE]))
    blob[-1] ^= 0xFF  # the MD5 no longer matches
    out, dropped = to_records(LOW, sent([raw(7, bytes(blob))]), None)
    assert [(r.data, r.sub_sequence_number) for r in out] == [(bytes(blob), None)]
    assert dropped == 0
    kcl = kcl_deaggregate(LOW.shard_id, [raw(7, bytes(blob))], 0, HALF - 1)
    assert [(r.data, r.aggregated) for r in kcl] == [(bytes(blob), False)]


def test_a_key_index_beyond_its_table_is_where_shardflow_and_the_kcl_differ() -> None:
    """An aggregate with a valid MD5 whose second sub-record points past the key table
    (only a broken producer writes one). The KCL (AggregatorUtil.deaggregate) logs the
    IndexOutOfBoundsException and keeps the sub-records before it, losing the rest;
    shardflow hands the whole blob over as plain data, losing nothing."""
    from shardflow.aggregation import MAGIC

    body = (
        b"\x0a\x01k"  # partition_key_table: ["k"]
        b"\x1a\x05\x08\x00\x1a\x01a"  # record: key index 0, data "a"
        b"\x1a\x05\x08\x01\x1a\x01b"  # record: key index 1, beyond the table
    )
    blob = MAGIC + body + hashlib.md5(body).digest()
    kcl = kcl_deaggregate(LOW.shard_id, [raw(9, blob)], 0, 2**128 - 1)
    assert [(r.aggregated, r.sub_sequence_number, r.data) for r in kcl] == [(True, 0, b"a")]
    out, dropped = to_records(Shard("shardId-000000000000", 0, 2**128 - 1), sent([raw(9, blob)]),
                              None)
    assert [(r.data, r.sub_sequence_number) for r in out] == [(blob, None)]
    assert dropped == 0


def test_a_record_is_an_immutable_value() -> None:
    """Record is a named tuple: compared and hashed by value, immutable, copied with
    _replace; rows (what readers buffer) become equal Records."""
    from dataclasses import FrozenInstanceError

    from shardflow import Record
    from shardflow.consumer.record_conversion import as_records, to_rows

    at = datetime(2026, 1, 1, tzinfo=timezone.utc)
    record = Record(b"x", "k", "17", None, "shardId-0", at)
    assert record.explicit_hash_key is None
    assert record.position == (17, -1)
    assert record == Record(b"x", "k", "17", None, "shardId-0", at)
    assert len({record, Record(b"x", "k", "17", None, "shardId-0", at)}) == 1
    with pytest.raises((AttributeError, FrozenInstanceError)):
        record.data = b"y"  # type: ignore[misc]
    assert record._replace(data=b"y").data == b"y"
    assert record.data == b"x"
    shard = Shard("shardId-0", 0, 2**128 - 1)
    raw = [{"Data": "eA==", "PartitionKey": "k", "SequenceNumber": "17",
            "ApproximateArrivalTimestamp": at.timestamp()}]
    rows, _ = to_rows(shard, raw, None)
    assert type(rows[0]) is tuple
    assert as_records(rows) == [record]
    assert type(as_records(rows)[0]) is Record


def test_buffered_rows_are_left_alone_by_the_garbage_collector() -> None:
    """What readers buffer (rows, plain and from aggregates) holds only atoms in a plain
    tuple, so CPython stops tracking each row at its first collection: a buffer of tens
    of thousands of records costs no full-collection scans (a Record, a tuple subclass,
    would stay tracked)."""
    import gc

    from shardflow.consumer.record_conversion import to_rows

    shard = Shard("shardId-0", 0, 2**128 - 1)
    at = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    blob = agg([(f"user-{i}", b'{"n":%d}' % i, None) for i in range(5)])
    raw = [
        {"Data": "eA==", "PartitionKey": "k", "SequenceNumber": "1",
         "ApproximateArrivalTimestamp": at},
        {"Data": base64.b64encode(blob).decode(), "PartitionKey": "k", "SequenceNumber": "2",
         "ApproximateArrivalTimestamp": at},
    ]
    rows, dropped = to_rows(shard, raw, None)
    assert dropped == 0
    assert len(rows) == 6
    gc.collect()
    assert [gc.is_tracked(row) for row in rows] == [False] * 6
