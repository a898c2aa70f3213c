"""Bad input at the edges: put() arguments fuzzed with hypothesis against kinesalite
(which validates requests as AWS does), and garbage that looks like KPL aggregates read
back through the Consumer.

- put(): every call gets exactly what the contract documents (a model of it decides:
  InvalidPartitionKey, InvalidHashKey, RecordTooLarge, SerializationError) at put()
  itself, through put_nowait() and put() alike; every valid call and every good record
  put around the calls is delivered, with its bytes, key and the shard its hash key
  names. A bad call never affects another record.
- Consumer: records that start with the aggregate magic but are not valid aggregates
  come out as plain data, byte for byte, in order, between the good records around them;
  valid ones come out deaggregated. (tests/unit/test_aggregation*.py fuzz the decoder
  itself; tests/integration/test_consumer_aggregation.py has one damaged aggregate.)
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardflow import Consumer, KinesisLimits, Producer, PutResult, errors
from shardflow.aggregation import MAGIC, aggregate, deaggregate

from support import create_stream, kinesis, list_shards
from support_consumer import POLL, collect, no_more
from support_reliability import read_user_records, report

pytestmark = pytest.mark.slow

# A small record limit makes records "around the limit" cheap; the producer enforces its
# own limits, and kinesalite accepts anything up to AWS's 1 MiB.
LIMIT = 16 * 1024
LIMITS = KinesisLimits(max_record_bytes=LIMIT)
MAX_HASH = 2**128 - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,38}")  # AWS's pattern for ExplicitHashKey
_BYTES_LIKE = (bytes, bytearray, memoryview)


# --- the contract, as a model ------------------------------------------------------------


def utf16_units(key: str) -> int:
    """A key's length as AWS counts it (UTF-16 code units: an astral character is 2)."""
    return len(key.encode("utf-16-le", "surrogatepass")) // 2


def expected_errors(obj: Any, key: Any, hash_key: Any) -> set[type[Exception]]:
    """What put(obj, key, explicit_hash_key=hash_key) may raise (empty: it must accept)."""
    found: set[type[Exception]] = set()
    key_bytes: bytes | None = None
    if not isinstance(key, str) or not key or utf16_units(key) > LIMITS.max_partition_key_chars:
        found.add(errors.InvalidPartitionKey)
    else:
        try:
            key_bytes = key.encode()
        except UnicodeEncodeError:  # a lone surrogate
            found.add(errors.InvalidPartitionKey)
    data: bytes | None = None
    if isinstance(obj, _BYTES_LIKE):
        data = bytes(obj)
    elif isinstance(obj, str):  # sent as its UTF-8 bytes
        try:
            data = obj.encode()
        except UnicodeEncodeError:  # a lone surrogate
            found.add(errors.SerializationError)
    else:
        try:
            data = orjson.dumps(obj)
        except TypeError:
            found.add(errors.SerializationError)
    if hash_key is not None:
        text = str(hash_key) if type(hash_key) is int else hash_key
        if not (isinstance(text, str) and _DECIMAL.fullmatch(text) and int(text) <= MAX_HASH):
            found.add(errors.InvalidHashKey)
    if key_bytes is not None and data is not None and len(data) + len(key_bytes) > LIMIT:
        found.add(errors.RecordTooLarge)
    return found


# --- strategies ----------------------------------------------------------------------------

_CHARS = ["a", "é", "€", "\U0001f600", "\U00010000", "\ud800", "\udfff", "\x00", "\n"]
keys = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(exclude_categories=()), max_size=20),  # surrogates too
    st.builds(lambda c, n: c * n, st.sampled_from(_CHARS), st.integers(120, 262)),
    st.builds(  # ASCII then astral: around 256 code points and 256 UTF-16 units
        lambda a, b: "k" * a + "\U0001f600" * b, st.integers(0, 256), st.integers(0, 140)
    ),
    st.sampled_from(["", "k", "k" * 256, "k" * 257]),
    st.sampled_from([None, 5, 1.5, b"key", ("t",), True, ["k"], {"k": 1}, {"k"}]),
)
def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


sizes = st.one_of(st.integers(0, 40), st.integers(LIMIT - 300, LIMIT + 300))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
objects = st.one_of(
    st.builds(lambda n: b"x" * n, sizes),
    st.builds(lambda n: "y" * n, sizes),  # JSON string: two quotes more
    st.binary(max_size=30),
    st.builds(bytearray, st.binary(max_size=30)),
    st.builds(memoryview, st.binary(max_size=30)),
    json_values,
    st.integers(min_value=2**64, max_value=2**80),  # beyond orjson's range
    st.sampled_from([object(), {1, 2}, 1j, {1: "int key"}, "\udc80", [[[[[[]]]]]]]),
    st.builds(nested, st.integers(250, 260)),  # orjson refuses more than 254 levels
)
hash_keys = st.one_of(
    st.none(),
    st.integers(-3, 3),
    st.integers(MAX_HASH - 2, MAX_HASH + 2),
    st.integers(0, MAX_HASH).map(str),
    st.from_regex(r"\A[0-9]{1,41}\Z"),
    st.sampled_from(["", " 1", "+1", "-0", "00", "1.0", "1e3", "١٢٣", str(2**128), "0x10"]),
    st.sampled_from([1.0, True, b"1", [1]]),
)


def shard_for(hash_value: int, shards: list[dict[str, Any]]) -> str:
    for shard in shards:
        rng = shard["HashKeyRange"]
        if int(rng["StartingHashKey"]) <= hash_value <= int(rng["EndingHashKey"]):
            return str(shard["ShardId"])
    raise AssertionError(f"no shard for {hash_value}")


async def test_fuzzed_put_arguments_get_the_documented_error_and_poison_nothing(
    kinesalite_url: str,
) -> None:
    name = create_stream(kinesalite_url, shards=2)
    shards = list_shards(kinesalite_url, name)
    calls: list[tuple[Any, Any, Any, set[type[Exception]]]] = []
    sent: list[tuple[asyncio.Future[PutResult], str, bytes, str]] = []  # future, key, data, shard
    refused: Counter[str] = Counter()
    good = 0

    async with Producer(name, endpoint_url=kinesalite_url, limits=LIMITS, linger=0.02) as p:

        def put_good() -> None:
            nonlocal good
            good += 1
            key, data = f"good-{good % 7}", b"good-%d" % good
            expected = shard_for(int(hashlib.md5(key.encode()).hexdigest(), 16), shards)
            sent.append((p.put_nowait(data, partition_key=key), key, data, expected))

        def accepted(future: Any, obj: Any, key: str, hash_key: Any) -> None:
            data = (
                bytes(obj) if isinstance(obj, _BYTES_LIKE)
                else obj.encode() if isinstance(obj, str) else orjson.dumps(obj)
            )
            value = int(hash_key) if hash_key is not None else int(
                hashlib.md5(key.encode()).hexdigest(), 16)
            sent.append((future, key, data, shard_for(value, shards)))

        def check(outcome: Any, expected: set[type[Exception]], args: tuple[Any, ...]) -> None:
            if isinstance(outcome, BaseException):
                assert expected, f"put{args!r} raised {outcome!r}; it is valid"
                assert isinstance(outcome, tuple(expected)), (
                    f"put{args!r} raised {outcome!r}, expected one of {expected}")
                refused[type(outcome).__name__] += 1
            else:
                assert not expected, f"put{args!r} was accepted; expected one of {expected}"

        @settings(
            max_examples=400, deadline=None, derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        )
        @given(obj=objects, key=keys, hash_key=hash_keys)
        def fuzz(obj: Any, key: Any, hash_key: Any) -> None:
            expected = expected_errors(obj, key, hash_key)
            put_good()
            try:
                outcome: Any = p.put_nowait(obj, partition_key=key, explicit_hash_key=hash_key)
            except Exception as exc:
                outcome = exc
            check(outcome, expected, (obj, key, hash_key))
            if not isinstance(outcome, BaseException):
                accepted(outcome, obj, key, hash_key)
            put_good()
            calls.append((obj, key, hash_key, expected))

        fuzz()
        # The same calls through the awaitable put().
        for obj, key, hash_key, expected in calls:
            put_good()
            try:
                outcome = await p.put(obj, partition_key=key, explicit_hash_key=hash_key)
            except Exception as exc:
                outcome = exc
            check(outcome, expected, (obj, key, hash_key))
            if not isinstance(outcome, BaseException):
                accepted(outcome, obj, key, hash_key)
        await p.flush()

    results = await asyncio.gather(*(f for f, *_ in sent), return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    stored, _ = await read_user_records(kinesalite_url, name)
    in_stream = Counter((r.partition_key, r.data, r.shard_id) for r in stored)
    expected_stream = Counter((key, data, shard) for _, key, data, shard in sent)
    report(
        "put() fuzzing (kinesalite)", calls=2 * len(calls), valid=len(sent) - good,
        refused=dict(refused), good_records_around=good, delivered=len(results) - len(failed),
        failed=len(failed), lost=sum((expected_stream - in_stream).values()),
    )
    assert failed == []
    assert in_stream == expected_stream
    assert set(refused) == {"InvalidPartitionKey", "InvalidHashKey", "RecordTooLarge",
                            "SerializationError"}


# --- keys AWS counts in UTF-16 units; unhashable keys -------------------------------------


async def test_a_key_over_256_utf16_units_is_refused_at_put_and_poisons_nothing(
    kinesalite_url: str,
) -> None:
    name = create_stream(kinesalite_url)
    async with Producer(name, endpoint_url=kinesalite_url, linger=0.05) as producer:
        futures = [await producer.put(b"good-%d" % i, partition_key="k") for i in range(5)]
        bad: Exception | None = None
        try:
            futures.append(await producer.put(b"bad", partition_key="\U0001f600" * 129))
        except errors.InvalidPartitionKey as exc:
            bad = exc
        futures += [await producer.put(b"good-%d" % i, partition_key="k") for i in range(5, 10)]
        outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(o).__name__ for o in outcomes] == ["PutResult"] * 10  # nothing poisoned
    assert bad is not None


@pytest.mark.parametrize("key", [["k"], {"k": 1}, {"k"}], ids=["list", "dict", "set"])
async def test_an_unhashable_key_is_an_invalid_partition_key(
    kinesalite_url: str, key: Any
) -> None:
    name = create_stream(kinesalite_url)
    async with Producer(name, endpoint_url=kinesalite_url) as producer:
        with pytest.raises(errors.InvalidPartitionKey, match="partition_key"):
            await producer.put(b"x", partition_key=key)


# --- aggregate-looking garbage through the Consumer ---------------------------------------

_subrecords = st.lists(
    st.tuples(st.text(min_size=1, max_size=8), st.binary(max_size=20)), min_size=1, max_size=5
)


def _with_digest(body: bytes) -> bytes:
    return MAGIC + body + hashlib.md5(body).digest()


def _valid(recs: list[tuple[str, bytes]]) -> bytes:
    return aggregate((k, None, d) for k, d in recs)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag, len(payload)]) + payload


garbage_blobs = st.one_of(
    st.binary(max_size=40).map(lambda b: MAGIC + b),  # no valid digest
    st.binary(max_size=60).map(_with_digest),  # valid frame, random protobuf
    st.lists(  # valid frame, plausible fields with random contents
        st.tuples(st.sampled_from([0x0A, 0x12, 0x1A, 0x08, 0x22]), st.binary(max_size=12)),
        max_size=5,
    ).map(lambda fields: _with_digest(b"".join(_field(t, p) for t, p in fields))),
    st.tuples(_subrecords, st.integers(1, 200)).map(  # a valid aggregate, truncated
        lambda t: _valid(t[0])[: max(1, len(_valid(t[0])) - t[1])]
    ),
    st.tuples(_subrecords, st.integers(0, 10**6)).map(  # a byte changed, digest fixed
        lambda t: (lambda body: _with_digest(
            body[: t[1] % len(body)] + bytes([body[t[1] % len(body)] ^ 0x5A])
            + body[t[1] % len(body) + 1:]
        ))(_valid(t[0])[4:-16])
    ),
    st.sampled_from([MAGIC, MAGIC + b"\x00" * 16, MAGIC + b"\x00" * 17, MAGIC[:3]]),
    _subrecords.map(_valid),  # valid: deaggregated
)


def expected_out(blob: bytes, key: str) -> list[tuple[bytes, str, int | None]]:
    subs = deaggregate(blob)
    if subs is None:
        return [(blob, key, None)]
    return [(data, pk, i) for i, (pk, _, data) in enumerate(subs)]


@settings(
    max_examples=4, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(blobs=st.lists(garbage_blobs, min_size=30, max_size=60))
async def test_aggregate_garbage_comes_out_of_the_consumer_as_plain_data(
    kinesalite_url: str, blobs: list[bytes]
) -> None:
    name = create_stream(kinesalite_url)
    entries = []
    for i, blob in enumerate(blobs):
        entries.append({"PartitionKey": f"good-{i}", "Data": b"good-%d" % i})
        entries.append({"PartitionKey": f"blob-{i}", "Data": blob})
    answer = kinesis(kinesalite_url).put_records(StreamName=name, Records=entries)
    assert answer["FailedRecordCount"] == 0
    expected: list[tuple[bytes, str, int | None]] = []
    for entry in entries:
        expected += expected_out(entry["Data"], entry["PartitionKey"])
    async with Consumer(name, endpoint_url=kinesalite_url, poll_interval=POLL) as consumer:
        got = await collect(consumer, len(expected))
        assert await no_more(consumer) == []
    plain = sum(deaggregate(b) is None for b in blobs)
    report(
        "aggregate-looking garbage through the Consumer (kinesalite)",
        blobs=len(blobs), plain_data=plain, deaggregated=len(blobs) - plain,
        good_records=len(blobs), delivered=len(got),
    )
    assert [(r.data, r.partition_key, r.sub_sequence_number) for r in got] == expected
