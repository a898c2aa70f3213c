"""Interop with aws-kinesis-agg, the AWS Python library for the KPL aggregation format,
and a differential check of the hand-written parser against the protobuf runtime."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from aws_kinesis_agg import deaggregator
from aws_kinesis_agg.aggregator import RecordAggregator
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st

from shardflow.aggregation import MAGIC, aggregate, deaggregate

Rec = tuple[str, "str | None", bytes]

keys = st.one_of(st.text(min_size=1, max_size=30), st.sampled_from(["a", "user-1", "ключ", "🔑"]))
hash_keys = st.integers(min_value=0, max_value=2**128 - 1).map(str)
datas = st.binary(max_size=300)
# aws-kinesis-agg's deaggregator reads explicit_hash_key_index without checking that it is
# present, so a mix of records with and without one is compared on keys and data only.
plain_records = st.lists(st.tuples(keys, st.none(), datas), min_size=1, max_size=40)
hashed_records = st.lists(st.tuples(keys, hash_keys, datas), min_size=1, max_size=40)
mixed_records = st.lists(
    st.tuples(keys, st.one_of(st.none(), hash_keys), datas), min_size=1, max_size=40
)


def their_deaggregate(blob: bytes) -> list[Rec]:
    boto3_record = {
        "Data": blob,
        "PartitionKey": "outer",
        "SequenceNumber": "1",
        "ApproximateArrivalTimestamp": 0,
    }
    out = []
    for item in deaggregator.iter_deaggregate_records([boto3_record], data_format="Boto3"):
        kinesis = item["kinesis"]
        assert kinesis.get("aggregated") is True, "aws-kinesis-agg did not see an aggregate"
        out.append(
            (kinesis["partitionKey"], kinesis["explicitHashKey"], base64.b64decode(kinesis["data"]))
        )
    return out


def their_aggregate(recs: list[Rec]) -> bytes:
    aggregator = RecordAggregator(max_size=1024 * 1024)
    for pk, ehk, data in recs:
        assert aggregator.add_user_record(pk, data, ehk) is None  # never full here
    agg = aggregator.clear_and_get()
    assert agg is not None
    _, _, blob = agg.get_contents()
    assert isinstance(blob, bytes)
    return blob


@given(st.one_of(plain_records, hashed_records))
def test_ours_deaggregates_exactly_with_aws_kinesis_agg(recs: list[Rec]) -> None:
    assert their_deaggregate(aggregate(recs)) == recs


@given(mixed_records)
def test_ours_with_mixed_hash_keys_deaggregates_with_aws_kinesis_agg(recs: list[Rec]) -> None:
    theirs = their_deaggregate(aggregate(recs))
    assert [(pk, data) for pk, _, data in theirs] == [(pk, data) for pk, _, data in recs]
    for (_, ehk, _), (_, their_ehk, _) in zip(recs, theirs, strict=True):
        if ehk is not None:
            assert their_ehk == ehk


@given(st.one_of(plain_records, hashed_records, mixed_records))
def test_aws_kinesis_agg_aggregates_deaggregate_exactly_with_ours(recs: list[Rec]) -> None:
    assert deaggregate(their_aggregate(recs)) == recs


@given(st.one_of(plain_records, hashed_records, mixed_records))
def test_encoding_is_byte_identical_to_aws_kinesis_agg(recs: list[Rec]) -> None:
    assert aggregate(recs) == their_aggregate(recs)


# --- differential parsing against the protobuf runtime ------------------------------------


def reference_parse(body: bytes) -> list[Rec] | None:
    """What a strict KPL consumer (protobuf runtime + required-field checks) decodes."""
    # deaggregator loads the library's generated protobuf module (messages_pb2).
    message: Any = deaggregator.messages_pb2.AggregatedRecord()
    try:
        message.ParseFromString(body)
    except DecodeError:
        return None
    # upb hands invalid UTF-8 back as bytes; Java protobuf replaces it, as shardflow does.
    pks = [_text(key) for key in message.partition_key_table]
    ehks = [_text(key) for key in message.explicit_hash_key_table]
    out: list[Rec] = []
    for record in message.records:
        # proto2 required fields; the upb runtime does not check them, Java's does.
        if not (record.HasField("partition_key_index") and record.HasField("data")):
            return None
        if not all(tag.HasField("key") for tag in record.tags):
            return None
        if record.partition_key_index >= len(pks):
            return None
        ehk = None
        if record.HasField("explicit_hash_key_index"):
            if record.explicit_hash_key_index >= len(ehks):
                return None
            ehk = ehks[record.explicit_hash_key_index]
        out.append((pks[record.partition_key_index], ehk, record.data))
    return out


def _text(key: str | bytes) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# Protobuf-shaped input, mostly well formed: known fields with small indexes, unknown fields
# of every wire type, now and then the wrong wire type or a few random bytes.
def varint_field(number: int) -> st.SearchStrategy[bytes]:
    values = st.one_of(st.integers(min_value=0, max_value=3), st.integers(0, 2**64 - 1))
    return values.map(lambda value: varint(number << 3) + varint(value))


def bytes_field(number: int, payload: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return payload.map(lambda p: varint(number << 3 | 2) + varint(len(p)) + p)


text = st.one_of(st.text(max_size=6).map(str.encode), st.binary(max_size=4))
unknown_field = st.one_of(
    varint_field(9),
    bytes_field(9, st.binary(max_size=4)),
    st.just(b"\x4d\x00\x00\x00\x00"),  # fixed32
    st.just(b"\x49" + bytes(8)),  # fixed64
    st.just(b"\x4b\x50\x01\x4c"),  # a group holding a varint
    st.binary(min_size=1, max_size=2),
)
tag_message = st.lists(
    st.one_of(bytes_field(1, text), bytes_field(2, text), unknown_field), max_size=3
).map(b"".join)
any_record = st.lists(
    st.one_of(
        varint_field(1),
        varint_field(2),
        bytes_field(3, st.binary(max_size=6)),
        bytes_field(4, tag_message),
        unknown_field,
    ),
    max_size=6,
).map(b"".join)
small_index = st.integers(min_value=0, max_value=2)
likely_record = st.builds(
    lambda pk, data, extra: pk + data + extra,
    small_index.map(lambda i: b"\x08" + varint(i)),
    bytes_field(3, st.binary(max_size=6)),
    st.lists(
        st.one_of(
            small_index.map(lambda i: b"\x10" + varint(i)),
            bytes_field(4, tag_message),
            unknown_field,
        ),
        max_size=2,
    ).map(b"".join),
)
record_message = st.one_of(any_record, likely_record, likely_record)
protobuf_garbage = st.lists(
    st.one_of(
        bytes_field(1, text),
        bytes_field(2, text),
        bytes_field(3, record_message),
        bytes_field(3, record_message),
        unknown_field,
    ),
    max_size=8,
).map(b"".join)


@given(protobuf_garbage)
def test_parser_agrees_with_the_protobuf_runtime(body: bytes) -> None:
    framed = MAGIC + body + hashlib.md5(body).digest()
    expected = reference_parse(body) if body else None
    assert deaggregate(framed) == expected
