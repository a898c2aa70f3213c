"""lambda_records: a Lambda Kinesis event -> shardflow Records.

The event shape is AWS's: the sample event of the Lambda Developer Guide ("Using Lambda
to process records from Amazon Kinesis Data Streams", example Kinesis record event).
Lambda hands the function raw records: a KPL aggregate is one record with base64 data.
"""

from __future__ import annotations

import base64
import copy
import logging
from datetime import datetime, timezone
from typing import Any

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from shardflow import Record, Shard, lambda_records
from shardflow.shardmap import hash_key

# The example event of the AWS Lambda Developer Guide, as documented.
AWS_SAMPLE_EVENT: dict[str, Any] = {
    "Records": [
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "1",
                "sequenceNumber": "49590338271490256608559692538361571095921575989136588898",
                "data": "SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg==",
                "approximateArrivalTimestamp": 1545084650.987,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": "shardId-000000000006:"
            "49590338271490256608559692538361571095921575989136588898",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
            "awsRegion": "us-east-2",
            "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
        },
        {
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "1",
                "sequenceNumber": "49590338271490256608559692540925702759324208523137515618",
                "data": "VGhpcyBpcyBvbmx5IGEgdGVzdC4=",
                "approximateArrivalTimestamp": 1545084711.166,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": "shardId-000000000006:"
            "49590338271490256608559692540925702759324208523137515618",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-role",
            "awsRegion": "us-east-2",
            "eventSourceARN": "arn:aws:kinesis:us-east-2:123456789012:stream/lambda-stream",
        },
    ]
}

FULL = (0, 2**128 - 1)


def test_the_aws_sample_event() -> None:
    first, second = lambda_records(AWS_SAMPLE_EVENT)
    assert first == Record(
        data=b"Hello, this is a test.",
        partition_key="1",
        sequence_number="49590338271490256608559692538361571095921575989136588898",
        sub_sequence_number=None,
        shard_id="shardId-000000000006",
        arrival_time=datetime(2018, 12, 17, 22, 10, 50, 987000, tzinfo=timezone.utc),
    )
    assert second.data == b"This is only a test."
    assert second.sequence_number == "49590338271490256608559692540925702759324208523137515618"
    assert second.arrival_time.tzinfo is timezone.utc
    assert abs(second.arrival_time.timestamp() - 1545084711.166) < 1e-6
    assert lambda_records(AWS_SAMPLE_EVENT["Records"]) == [first, second]  # the list works too


def kpl(subs: list[tuple[str, bytes, str | None]]) -> bytes:
    """A KPL aggregate built by aws-kinesis-agg (the AWS library)."""
    aggregator = RecordAggregator()
    for key, data, ehk in subs:
        assert aggregator.add_user_record(key, data, explicit_hash_key=ehk) is None
    _, _, blob = aggregator.clear_and_get().get_contents()
    assert isinstance(blob, bytes)
    return blob


def event_of(*blobs: bytes, shard: str = "shardId-000000000000") -> dict[str, Any]:
    """A Lambda event in the documented shape holding ``blobs`` as its records' data."""
    records = []
    for n, blob in enumerate(blobs):
        item = copy.deepcopy(AWS_SAMPLE_EVENT["Records"][0])
        seq = str(49590338271490256608559692538361571095921575989136588898 + n)
        item["kinesis"].update(
            sequenceNumber=seq, data=base64.b64encode(blob).decode(), partitionKey="outer"
        )
        item["eventID"] = f"{shard}:{seq}"
        records.append(item)
    return {"Records": records}


def test_an_aggregate_is_unpacked_with_sub_sequence_numbers() -> None:
    subs = [("a", b"one", None), ("b", b"two", "42"), ("a", b"three", None)]
    out = lambda_records(event_of(b"plain", kpl(subs), b"after"))
    assert [(r.partition_key, r.data, r.sub_sequence_number, r.explicit_hash_key) for r in out] == [
        ("outer", b"plain", None, None),
        ("a", b"one", 0, None),
        ("b", b"two", 1, "42"),
        ("a", b"three", 2, None),
        ("outer", b"after", None, None),
    ]
    assert out[1].sequence_number == out[2].sequence_number == out[3].sequence_number
    assert [r.position for r in out] == sorted(r.position for r in out)
    assert {r.shard_id for r in out} == {"shardId-000000000000"}


def test_data_that_fails_the_md5_check_is_plain_data() -> None:
    blob = bytearray(kpl([("a", b"one", None)]))
    blob[-1] ^= 1  # the KCL treats a bad digest as a plain record
    (record,) = lambda_records(event_of(bytes(blob)))
    assert record.data == bytes(blob)
    assert record.sub_sequence_number is None


def halves() -> tuple[Shard, Shard]:
    middle = 2**127
    return (
        Shard("shardId-000000000000", 0, middle - 1),
        Shard("shardId-000000000001", middle, 2**128 - 1),
    )


def test_with_shards_an_aggregate_straddling_the_range_is_dropped_whole(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # AggregatorUtil.deaggregate (KCL 2.x/3.x): when one sub-record's effective hash key is
    # outside [startingHashKey, endingHashKey], the records of that aggregate already
    # taken are removed and the rest skipped: the whole aggregate is dropped.
    low, high = halves()
    inside = [k for k in (f"k{i}" for i in range(100)) if low.contains(hash_key(k))][:3]
    straddling = kpl(
        [(inside[0], b"x0", None), (inside[1], b"x1", None), ("e", b"x2", str(2**127))]
    )
    fitting = kpl([(key, key.encode(), None) for key in inside])
    event = event_of(straddling, fitting, b"plain")
    with caplog.at_level(logging.INFO, logger="shardflow.lambda"):
        kept = lambda_records(event, shards=[low, high])
    assert [(r.data, r.sub_sequence_number) for r in kept] == [
        (inside[0].encode(), 0),
        (inside[1].encode(), 1),
        (inside[2].encode(), 2),
        (b"plain", None),
    ]
    assert "dropped 1 aggregates (3 user records)" in caplog.text
    # Without shards nothing is known about the range: every sub-record is returned.
    assert len(lambda_records(event)) == 7
    # The other half's shard: the fitting aggregate is dropped as well.
    other = event_of(straddling, fitting, shard=high.shard_id)
    assert lambda_records(other, shards=[low, high]) == []


def test_records_of_a_shard_not_listed_are_kept(caplog: pytest.LogCaptureFixture) -> None:
    low, _ = halves()
    event = event_of(kpl([("a", b"1", str(2**128 - 1))]), shard="shardId-000000000009")
    with caplog.at_level(logging.WARNING, logger="shardflow.lambda"):
        (record,) = lambda_records(event, shards=[low])
    assert record.data == b"1"
    assert "shardId-000000000009" in caplog.text


def broken(**changes: Any) -> dict[str, Any]:
    event = copy.deepcopy(AWS_SAMPLE_EVENT)
    item = event["Records"][1]
    for path, value in changes.items():
        owner = item["kinesis"] if path in item.get("kinesis", ()) else item
        if value is None:
            del owner[path]
        else:
            owner[path] = value
    return event


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (broken(data="not base64!"), r"Records\[1\]: kinesis.data is not base64"),
        (broken(sequenceNumber=None), r"Records\[1\]: kinesis.sequenceNumber is missing"),
        (broken(partitionKey=None), r"Records\[1\]: kinesis.partitionKey is missing"),
        (broken(eventID="shardId-000000000006"), r"Records\[1\]: eventID .* is not"),
        (broken(eventID="shardId-000000000006:1"), r"Records\[1\]: eventID .* is not"),
        (broken(approximateArrivalTimestamp="1545084711"), r"approximateArrivalTimestamp"),
        (broken(approximateArrivalTimestamp=1e300), r"approximateArrivalTimestamp is out of"),
        (broken(kinesis=None, eventSource="aws:sqs"), r"not a Kinesis record .*aws:sqs"),
        ({"records": []}, r"no 'Records' list"),
        ({"Records": [None]}, r"Records\[0\] is not an object"),
    ],
)
def test_a_malformed_event_is_a_clear_value_error(event: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lambda_records(event)


@pytest.mark.parametrize("event", ["Records", b"", 42, None])
def test_an_event_of_the_wrong_type_is_a_type_error(event: Any) -> None:
    with pytest.raises(TypeError, match="lambda_records"):
        lambda_records(event)


def test_shards_must_be_shard_values() -> None:
    with pytest.raises(TypeError, match="Shard"):
        lambda_records(AWS_SAMPLE_EVENT, shards=[("shardId-000000000006", 0, 1)])  # type: ignore[list-item]


def test_an_empty_batch() -> None:
    assert lambda_records({"Records": []}) == []
