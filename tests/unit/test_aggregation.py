"""The KPL aggregated-record codec: format, exact sizes, round trips, garbage."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardflow.aggregation import (
    MAGIC,
    AggregateBuilder,
    aggregate,
    aggregated_size,
    deaggregate,
    is_aggregated,
)

Rec = tuple[str, "str | None", bytes]

# Keys drawn from a small pool too, so that duplicates (table dedup) are common.
keys = st.one_of(st.text(max_size=40), st.sampled_from(["a", "user-1", "ключ", "🔑", ""]))
hash_keys = st.one_of(
    st.none(),
    st.integers(min_value=0, max_value=2**128 - 1).map(str),
    st.sampled_from(["0", "170141183460469231731687303715884105728"]),
)
datas = st.one_of(st.binary(max_size=300), st.sampled_from([b"", b"\x00", b"x" * 5000]))
records = st.lists(st.tuples(keys, hash_keys, datas), min_size=1, max_size=60)


def frame(body: bytes) -> bytes:
    """A well-framed aggregate (magic, body, right MD5) around arbitrary protobuf bytes."""
    return MAGIC + body + hashlib.md5(body).digest()


def test_known_encoding() -> None:
    blob = aggregate([("a", None, b"x"), ("a", "5", b"")])
    body = (
        b"\x0a\x01a"  # partition_key_table: "a" (once)
        b"\x12\x015"  # explicit_hash_key_table: "5"
        b"\x1a\x05\x08\x00\x1a\x01x"  # record: pk 0, data "x"
        b"\x1a\x06\x08\x00\x10\x00\x1a\x00"  # record: pk 0, ehk 0, data ""
    )
    assert blob == frame(body)
    assert deaggregate(blob) == [("a", None, b"x"), ("a", "5", b"")]


@given(records)
def test_round_trip_and_exact_size(recs: list[Rec]) -> None:
    blob = aggregate(recs)
    assert deaggregate(blob) == recs
    assert len(blob) == aggregated_size(recs)
    assert is_aggregated(blob)


@given(records)
def test_builder_tracks_exact_size_record_by_record(recs: list[Rec]) -> None:
    builder = AggregateBuilder()
    for index, (pk, ehk, data) in enumerate(recs):
        predicted = builder.size_if_added(pk, ehk, data)
        assert builder.add(pk, ehk, data) == index
        assert builder.size == predicted
        assert len(builder) == index + 1
    blob = builder.build()
    assert len(blob) == builder.size
    assert blob == aggregate(recs)
    assert builder.partition_key == recs[0][0]


@given(records, st.integers(min_value=21, max_value=3000))
def test_try_add_respects_max_bytes_exactly(recs: list[Rec], max_bytes: int) -> None:
    builder = AggregateBuilder(max_bytes=max_bytes)
    accepted: list[Rec] = []
    for pk, ehk, data in recs:
        before = builder.size
        would_be = builder.size_if_added(pk, ehk, data)
        index = builder.try_add(pk, ehk, data)
        if would_be <= max_bytes:
            assert index == len(accepted)
            accepted.append((pk, ehk, data))
        else:
            assert index == -1
            assert builder.size == before  # nothing half-added
        assert builder.size <= max_bytes or not accepted
    if accepted:
        blob = builder.build()
        assert len(blob) <= max_bytes
        assert deaggregate(blob) == accepted


@given(records, st.integers(min_value=21, max_value=3000))
def test_add_all_adds_the_prefix_try_add_would(recs: list[Rec], max_bytes: int) -> None:
    keys = [pk for pk, _, _ in recs]
    datas = [data for _, _, data in recs]
    one_by_one = AggregateBuilder(max_bytes=max_bytes)
    expected = 0
    for pk, data in zip(keys, datas, strict=True):
        if one_by_one.try_add(pk, None, data) < 0:
            break
        expected += 1
    builder = AggregateBuilder(max_bytes=max_bytes)
    assert builder.add_all(keys, datas) == expected
    assert len(builder) == expected
    assert builder.size == one_by_one.size
    if expected:
        assert builder.build() == one_by_one.build()
        added = zip(keys[:expected], datas[:expected], strict=True)
        assert deaggregate(builder.build()) == [(k, None, d) for k, d in added]


def test_add_all_refuses_sequences_of_different_lengths_adding_nothing() -> None:
    builder = AggregateBuilder()
    with pytest.raises(ValueError, match="as many partition keys as datas, got 2 and 1"):
        builder.add_all(["a", "b"], [b"1"])
    assert len(builder) == 0


def test_add_all_keeps_the_records_before_a_bad_key() -> None:
    builder = AggregateBuilder()
    with pytest.raises(TypeError):
        builder.add_all(["a", 7, "c"], [b"1", b"2", b"3"])  # type: ignore[list-item]
    assert deaggregate(builder.build()) == [("a", None, b"1")]


def test_keys_are_deduplicated() -> None:
    recs = [("k", "1", b"a"), ("j", "1", b"b"), ("k", None, b"c"), ("k", "2", b"d")]
    builder = AggregateBuilder()
    for rec in recs:
        builder.add(*rec)
    blob = builder.build()
    body = blob[4:-16]
    assert body.count(b"\x0a\x01k") == 1
    assert body.count(b"\x12\x011") == 1
    assert deaggregate(blob) == recs


def test_builder_clear_and_reuse() -> None:
    builder = AggregateBuilder()
    builder.add("a", None, b"1")
    builder.clear()
    assert len(builder) == 0
    assert not builder
    assert builder.size == 20
    assert builder.partition_key is None
    assert builder.add("b", None, b"2") == 0
    assert deaggregate(builder.build()) == [("b", None, b"2")]


def test_bytes_like_data_is_accepted() -> None:
    blob = aggregate([("a", None, bytearray(b"xy")), ("a", None, memoryview(b"z"))])  # type: ignore[list-item]
    assert deaggregate(blob) == [("a", None, b"xy"), ("a", None, b"z")]
    assert deaggregate(bytearray(blob)) == [("a", None, b"xy"), ("a", None, b"z")]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "error"),
    [
        ((b"pk", None, b"x"), TypeError),
        (("pk", 5, b"x"), TypeError),
        (("pk", None, "text"), TypeError),
        (("\ud800", None, b"x"), UnicodeEncodeError),
    ],
)
def test_bad_values_raise_and_change_nothing(record: Rec, error: type[Exception]) -> None:
    builder = AggregateBuilder()
    builder.add("ok", None, b"1")
    with pytest.raises(error):
        builder.add(*record)
    with pytest.raises(error):
        builder.size_if_added(*record)
    assert len(builder) == 1
    assert deaggregate(builder.build()) == [("ok", None, b"1")]


def test_empty_aggregate_is_refused() -> None:
    with pytest.raises(ValueError, match="without records"):
        aggregate([])
    with pytest.raises(ValueError, match="without records"):
        AggregateBuilder().build()


@pytest.mark.parametrize("max_bytes", [20, 0, -1])
def test_max_bytes_is_validated(max_bytes: int) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        AggregateBuilder(max_bytes=max_bytes)


def test_large_varints_round_trip() -> None:
    # More than 127 and 4096 keys (multi-byte indexes), data over 16 KiB (3-byte length).
    recs: list[Rec] = [(f"k{i}", str(i), bytes([i % 256]) * (i % 7)) for i in range(5000)]
    recs.append(("big", None, b"\xab" * 20_000))
    blob = aggregate(recs)
    assert len(blob) == aggregated_size(recs)
    assert deaggregate(blob) == recs


# --- not an aggregate ---------------------------------------------------------------------


def test_plain_and_short_blobs_are_not_aggregates() -> None:
    for blob in (b"", b"hello", MAGIC, MAGIC + b"\x00" * 16, b'{"a": 1}'):
        assert deaggregate(blob) is None
    assert not is_aggregated(b"hello")
    assert not is_aggregated(MAGIC + hashlib.md5(b"").digest())  # no protobuf bytes at all


@given(st.binary(max_size=400))
def test_random_bytes_never_raise(blob: bytes) -> None:
    for candidate in (blob, MAGIC + blob):
        result = deaggregate(candidate)
        assert result is None or isinstance(result, list)


@given(st.binary(min_size=1, max_size=400))
def test_random_bodies_with_a_valid_frame_never_raise(body: bytes) -> None:
    result = deaggregate(frame(body))
    assert result is None or all(isinstance(r, tuple) and len(r) == 3 for r in result)


@given(records, st.data())
def test_truncated_aggregates_are_rejected(recs: list[Rec], data: st.DataObject) -> None:
    blob = aggregate(recs)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    assert deaggregate(blob[:cut]) is None


@given(records, st.data())
def test_any_corrupted_byte_is_rejected(recs: list[Rec], data: st.DataObject) -> None:
    blob = bytearray(aggregate(recs))
    where = data.draw(st.integers(min_value=4, max_value=len(blob) - 1))
    blob[where] ^= data.draw(st.integers(min_value=1, max_value=255))
    assert deaggregate(bytes(blob)) is None  # the MD5 no longer matches


@given(records, st.data())
def test_corrupted_body_with_fixed_md5_never_raises(recs: list[Rec], data: st.DataObject) -> None:
    body = bytearray(aggregate(recs)[4:-16])
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        where = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        body[where] = data.draw(st.integers(min_value=0, max_value=255))
    result = deaggregate(frame(bytes(body)))
    assert result is None or isinstance(result, list)


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a\x01a\x1a\x02\x08\x00",  # record without data (required)
        b"\x0a\x01a\x1a\x03\x1a\x01x",  # record without partition key index (required)
        b"\x0a\x01a\x1a\x05\x08\x01\x1a\x01x",  # partition key index out of range
        b"\x0a\x01a\x1a\x07\x08\x00\x10\x00\x1a\x01x",  # explicit hash key index, empty table
        b"\x0a\x01a\x1a\x09\x08\x00\x1a\x01x\x22\x02\x12\x00",  # tag without its key
        b"\x0a\x01a\x1a\x05\x08\x00\x1a\x02x",  # data runs past its record
        b"\x0a\x05a",  # table entry runs past the message
        b"\x00\x00",  # field number 0
        b"\x0c",  # end-group without a start
        b"\x0b" * 300,  # unterminated groups nested very deep
        b"\x0a\x01a\x1a\x0f\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x1a\x01x",  # > 64 bits
    ],
)
def test_malformed_protobuf_is_not_an_aggregate(body: bytes) -> None:
    assert deaggregate(frame(body)) is None


# A record with a non-canonical varint (pk index 0 in two bytes), data twice and pk index
# twice (the last of each wins), and a tag that has its key.
_ODD_RECORD = b"\x08\x80\x00\x1a\x01y\x1a\x01x\x08\x01\x22\x02\x0a\x00"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # fields in any order, key tables after the records
        (b"\x1a\x05\x1a\x01x\x08\x00\x0a\x01a", [("a", None, b"x")]),
        # unknown fields of every wire type, at both levels, and an unknown group
        (
            b"\x20\x05\x29" + b"\x00" * 8 + b"\x35\x00\x00\x00\x00\x3a\x01z\x43\x48\x01\x44"
            b"\x0a\x01a\x1a\x0c\x08\x00\x20\x07\x1a\x01x\x2d\x00\x00\x00\x00",
            [("a", None, b"x")],
        ),
        (
            b"\x0a\x01a\x0a\x01b\x1a" + bytes([len(_ODD_RECORD)]) + _ODD_RECORD,
            [("b", None, b"x")],
        ),
    ],
)
def test_protobuf_variants_are_accepted(body: bytes, expected: list[Rec]) -> None:
    assert deaggregate(frame(body)) == expected


def test_invalid_utf8_keys_are_replaced_like_java_protobuf() -> None:
    body = b"\x0a\x02\xff\xfe\x1a\x05\x08\x00\x1a\x01x"
    assert deaggregate(frame(body)) == [("\ufffd\ufffd", None, b"x")]


@settings(max_examples=50)
@given(st.lists(st.tuples(keys, datas), min_size=1, max_size=20))
def test_aggregated_size_matches_builder(recs: list[tuple[str, bytes]]) -> None:
    full = [(pk, None, data) for pk, data in recs]
    builder = AggregateBuilder()
    for rec in full:
        builder.add(*rec)
    assert aggregated_size(full) == builder.size == len(builder.build())


@given(st.lists(records, min_size=1, max_size=4))
def test_a_reused_builder_encodes_each_aggregate_afresh(chunks: list[list[Rec]]) -> None:
    builder = AggregateBuilder()
    for chunk in chunks:
        builder.clear()
        for rec in chunk:
            builder.add(*rec)
        assert builder.build() == aggregate(chunk)
        assert builder.partition_key == chunk[0][0]
