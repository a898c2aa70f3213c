"""The PutRecords fast path's pure parts: entry encoding, bodies, answers and errors."""

from __future__ import annotations

import base64

import orjson
import pytest

from shardflow import errors
from shardflow._core.signed import response_error
from shardflow.producer._transport import encode_entry, parse_response, request_body


def test_entries_and_body_are_the_json_botocore_would_send() -> None:
    first = encode_entry(b"\x00\xffdata", orjson.dumps('k"ey'))
    second = encode_entry(b"", orjson.dumps("é"), "340282366920938463463374607431768211455")
    body = orjson.loads(request_body({"StreamName": "logs"}, [first, second]))
    assert body == {
        "StreamName": "logs",
        "Records": [
            {"Data": base64.b64encode(b"\x00\xffdata").decode(), "PartitionKey": 'k"ey'},
            {
                "Data": "",
                "PartitionKey": "é",
                "ExplicitHashKey": "340282366920938463463374607431768211455",
            },
        ],
    }


@pytest.mark.parametrize(
    ("status", "raw", "header", "cls", "code"),
    [
        (
            400,
            b'{"__type":"com.amazonaws.kinesis.v20131202#ResourceNotFoundException",'
            b'"message":"Stream logs not found"}',
            None,
            errors.StreamNotFound,
            "ResourceNotFoundException",
        ),
        (
            400,
            b"",
            "AccessDeniedException:http://internal.amazon.com/coral/",
            errors.AccessDenied,
            "AccessDeniedException",
        ),
        (500, b'{"__type":"InternalFailure"}', None, errors.InternalFailure, "InternalFailure"),
        (503, b"<html>busy</html>", None, errors.ServiceUnavailable, "HTTP503"),
        (502, b"", None, errors.ServiceUnavailable, "HTTP502"),
        (
            400,
            b'{"__type":"ValidationException","Message":"bad"}',
            None,
            errors.InvalidArgument,
            "ValidationException",
        ),
        (400, b"not json", None, errors.AWSError, "HTTP400"),
    ],
)
def test_error_answers_map_through_aws_error_table(
    status: int, raw: bytes, header: str | None, cls: type[errors.AWSError], code: str
) -> None:
    err = response_error("PutRecords", status, raw, header)
    assert type(err) is cls
    assert err.code == code
    assert err.operation == "PutRecords"
    assert err.retriable == (status >= 500)


def test_answers_must_have_one_result_per_entry() -> None:
    good = b'{"FailedRecordCount":0,"Records":[{"ShardId":"s","SequenceNumber":"1"}]}'
    assert parse_response(good, 1) == [{"ShardId": "s", "SequenceNumber": "1"}]
    for bad in (good, b"{}", b"[1]", b"garbage"):
        with pytest.raises(errors.ServiceUnavailable) as info:
            parse_response(bad, 2)
        assert info.value.retriable
