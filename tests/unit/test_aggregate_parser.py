"""The two parsers of a KPL aggregate's protobuf agree: protobuf's C parser (upb, the
``protobuf`` extra, installed with the dev extra) answers only where its answer is the
Python parser's, and hands every other message over.

The rules both follow are protobuf's wire format (proto2, the KPL's ``messages.proto``),
which the KCL's ``AggregatorUtil.deaggregate`` applies through Java's
``AggregatedRecord.parseFrom``: any field order, unknown fields (groups included)
skipped, non-canonical varints, the last value of a repeated scalar wins, required fields
(a record's ``partition_key_index`` and ``data``, a tag's ``key``) enforced. A proto2
``string`` that is not valid UTF-8 is read as protobuf-java's generated getter reads it,
``ByteString.toStringUtf8()``, i.e. ``new String(bytes, UTF_8)``, which the JDK documents
as replacing malformed input with U+FFFD; how many U+FFFD a surrogate becomes is
Python's count (the Unicode "maximal subpart" practice), not checked against a JVM.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow._core.aggregate_parser import parse_aggregated_record, parse_in_python, parse_upb
from shardflow._core.protobuf import encode_varint
from shardflow.aggregation import aggregate

Records = list[tuple[str, "str | None", bytes]]


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field."""
    return bytes([tag]) + encode_varint(len(payload)) + payload


def _record(*fields: bytes) -> bytes:
    return _field(0x1A, b"".join(fields))


def _python(body: bytes) -> Records | None:
    """The Python parser's answer, its errors as None (as ``deaggregate`` maps them)."""
    try:
        return parse_in_python(body, 0, len(body))
    except (IndexError, ValueError):
        return None


K, J = _field(0x0A, b"k"), _field(0x0A, b"j")
EHK = _field(0x12, b"170141183460469231731687303715884105728")
P0, P1, DATA, EHK0 = b"\x08\x00", b"\x08\x01", _field(0x1A, b"data"), b"\x10\x00"
KD = [("k", None, b"data")]

# (body, what the Python parser answers, whether upb answers it too)
CASES = {
    "plain": (K + _record(P0, DATA), KD, True),
    "tables after the records": (_record(P1, DATA) + K + J, [("j", None, b"data")], True),
    "unknown varint fields": (K + b"\x28\x05" + _record(P0, DATA, b"\x38\x07"), KD, True),
    "unknown fixed64 and fixed32 fields": (
        K + _record(P0, b"\x29" + bytes(8), b"\x3d" + bytes(4), DATA),
        KD,
        True,
    ),
    "an unknown group": (K + _record(P0, b"\x2b\x08\x01\x2c", DATA), KD, True),
    "a non-canonical varint": (K + _record(b"\x08\x80\x00", DATA), KD, True),
    "a non-canonical tag": (K + b"\x9a\x00" + encode_varint(len(P0 + DATA)) + P0 + DATA, KD, True),
    "a repeated key index: the last wins": (
        K + J + _record(P0, P1, DATA),
        [("j", None, b"data")],
        True,
    ),
    "repeated data: the last wins": (
        K + _record(P0, DATA, _field(0x1A, b"other")),
        [("k", None, b"other")],
        True,
    ),
    "a tag with its key": (K + _record(P0, DATA, _field(0x22, K + _field(0x12, b"v"))), KD, True),
    "an explicit hash key": (
        K + EHK + _record(P0, EHK0, DATA),
        [("k", "170141183460469231731687303715884105728", b"data")],
        True,
    ),
    "field 2 with another wire type is unknown": (
        K + _record(P0, _field(0x12, b"zz"), DATA),
        KD,
        True,
    ),
    "no records": (b"", [], True),
    "a tag without its key": (K + _record(P0, DATA, _field(0x22, _field(0x12, b"v"))), None, False),
    "a key that is not UTF-8": (
        _field(0x0A, b"\xff") + _record(P0, DATA),
        [("\ufffd", None, b"data")],
        False,
    ),
    "a UTF-8 surrogate in a key": (
        _field(0x0A, b"\xed\xa0\x80") + _record(P0, DATA),
        [("\ufffd" * 3, None, b"data")],
        False,
    ),
    "a key index beyond its table": (K + _record(P1, DATA), None, False),
    "a hash key index beyond its table": (K + _record(P0, EHK0, DATA), None, False),
    "a hash key index of 2**64 - 1": (
        K + EHK + _record(P0, b"\x10" + encode_varint(2**64 - 1), DATA),
        None,
        False,
    ),
    "a record without data": (K + _record(P0), None, False),
    "a record without its key index": (K + _record(DATA), None, False),
    "a truncated message": ((K + _record(P0, DATA))[:-1], None, False),
    "field number 0": (K + b"\x00\x00" + _record(P0, DATA), None, False),
    "wire type 6": (K + b"\x0e" + _record(P0, DATA), None, False),
    "an end-group without its start": (K + _record(P0, b"\x2c", DATA), None, False),
    "groups nested 99 deep": (K + _record(P0, b"\x2b" * 99 + b"\x2c" * 99, DATA), KD, True),
    "groups nested 101 deep": (K + _record(P0, b"\x2b" * 101 + b"\x2c" * 101, DATA), None, False),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_rule(case: str) -> None:
    body, expected, by_upb = CASES[case]
    assert _python(body) == expected
    by_c = parse_upb(body, 0, len(body))
    assert by_c == (expected if by_upb else None)
    if expected is not None:
        assert parse_aggregated_record(body, 0, len(body)) == expected


@pytest.mark.parametrize("depth", [98, 99, 100, 101, 102])
def test_upb_answers_as_the_python_parser_around_the_group_depth_limit(depth: int) -> None:
    body = K + _record(P0, b"\x2b" * depth + b"\x2c" * depth, DATA)
    by_c = parse_upb(body, 0, len(body))
    assert by_c is None or by_c == _python(body)


keys = st.one_of(st.text(max_size=30), st.sampled_from(["a", "user-1", "ключ", "🔑", ""]))
hash_keys = st.one_of(st.none(), st.integers(min_value=0, max_value=2**128 - 1).map(str))
records = st.lists(st.tuples(keys, hash_keys, st.binary(max_size=200)), min_size=1, max_size=40)


@given(records)
def test_upb_reads_every_aggregate_the_encoder_writes(recs: Records) -> None:
    blob = aggregate(recs)
    end = len(blob) - 16
    assert parse_upb(blob, 4, end) == recs
    assert parse_in_python(blob, 4, end) == recs


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(
    records,
    st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=4),
    st.integers(min_value=0),
)
def test_upb_answers_only_as_the_python_parser_does(
    recs: Records, flips: list[tuple[int, int]], cut: int
) -> None:
    """Damaged messages: bytes changed, the end cut off."""
    body = bytearray(aggregate(recs)[4:-16])
    for at, value in flips:
        body[at % len(body)] = value
    damaged = bytes(body[: len(body) - cut % 8])
    by_c = parse_upb(damaged, 0, len(damaged))
    assert by_c is None or by_c == _python(damaged)


@given(st.binary(max_size=200))
def test_arbitrary_bytes(body: bytes) -> None:
    by_c = parse_upb(body, 0, len(body))
    assert by_c is None or by_c == _python(body)
