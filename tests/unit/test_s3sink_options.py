"""S3Sink without a server: options, line encoding, lifecycle errors."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from shardflow import Record, S3Sink, errors
from shardflow.sinks import Sink, encode_record

from support_sinks import T0, make_record


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"bucket": ""}, ValueError, "bucket"),
        ({"bucket": "a/b"}, ValueError, "bucket"),
        ({"max_bytes": 0}, ValueError, "max_bytes"),
        ({"max_bytes": 6 * 1024**3}, ValueError, "max_bytes"),
        ({"max_bytes": 1.5}, TypeError, "max_bytes"),
        ({"max_bytes": True}, TypeError, "max_bytes"),
        ({"max_interval": 0}, ValueError, "max_interval"),
        ({"max_interval": float("nan")}, ValueError, "max_interval"),
        ({"compression": "zstd"}, ValueError, "compression"),
        ({"close_timeout": -1}, ValueError, "close_timeout"),
        ({"stream": "arn:aws:s3:::x"}, ValueError, "ARN"),
        ({"prefix": 3}, TypeError, "prefix"),
    ],
)
def test_options_are_validated(kwargs: dict[str, Any], exc: type, match: str) -> None:
    bucket = kwargs.pop("bucket", "bucket")
    with pytest.raises(exc, match=match):
        S3Sink(bucket, **kwargs)


def test_prefix_is_normalised_and_repr_is_safe() -> None:
    assert S3Sink("b", prefix="logs").prefix == "logs/"
    assert S3Sink("b", prefix="logs/").prefix == "logs/"
    assert S3Sink("b", prefix="").prefix == ""
    assert S3Sink("b", prefix="/").prefix == ""

    class Secret:
        def botocore_credentials(self) -> Any:
            return "AKIA-SECRET"

        def __repr__(self) -> str:
            return "AKIA-SECRET"

    sink = S3Sink("b", credentials=Secret())
    assert "SECRET" not in repr(sink)
    assert isinstance(sink, Sink)


async def test_write_before_start_and_after_close() -> None:
    sink = S3Sink("b")
    with pytest.raises(RuntimeError, match="async with"):
        await sink.write([])
    assert await sink.aclose() == {}
    with pytest.raises(errors.SinkClosed):
        await sink.write([])
    with pytest.raises(errors.SinkClosed):
        await sink.flush()


def test_json_data_is_written_as_is() -> None:
    assert encode_record(make_record(1, data=b'{"a": 1}')) == b'{"a": 1}\n'
    assert encode_record(make_record(1, data=b"  [1, 2]\r\n")) == b"[1, 2]\n"
    assert encode_record(make_record(1, data=b'{"a":\r\n 1}\n')) == b'{"a":   1}\n'
    assert encode_record(make_record(1, data=b'"text"')) == b'"text"\n'
    big = b'{"n": 123456789012345678901234567890}'
    assert encode_record(make_record(1, data=big)) == big + b"\n"


@pytest.mark.parametrize("data", [b"", b"hello", b"\xff\xfe", b'{"a": 1} x', b'"a\nb"', b"NaN"])
def test_other_data_gets_an_envelope(data: bytes) -> None:
    record = Record(
        data=data,
        partition_key="pk",
        sequence_number="42",
        sub_sequence_number=3,
        shard_id="shardId-000000000007",
        arrival_time=datetime(2024, 1, 2, 3, 4, 5, 678_000, tzinfo=timezone(timedelta(hours=-5))),
        explicit_hash_key="123",
    )
    line = encode_record(record)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert orjson.loads(line) == {
        "data_base64": base64.b64encode(data).decode(),
        "partition_key": "pk",
        "sequence_number": "42",
        "sub_sequence_number": 3,
        "shard_id": "shardId-000000000007",
        "arrival_time": "2024-01-02T08:04:05.678000Z",
        "explicit_hash_key": "123",
    }


def test_naive_arrival_time_is_utc() -> None:
    record = make_record(1, data=b"\x00", at=T0.replace(tzinfo=None))
    assert orjson.loads(encode_record(record))["arrival_time"] == "2024-03-05T07:15:00Z"


def test_non_bytes_data_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="bytes"):
        encode_record(make_record(1, data="text"))  # type: ignore[arg-type]
