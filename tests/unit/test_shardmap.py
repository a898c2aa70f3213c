"""Hash keys, explicit hash keys and the shard map (no server needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardflow import errors
from shardflow.models import Shard
from shardflow.shardmap import (
    MAX_HASH_KEY,
    ShardMap,
    hash_key,
    landing_hash_key,
    parse_explicit_hash_key,
)

HALF = 2**127


def shard(shard_id: str, start: int, end: int, *, closed: bool = False) -> Shard:
    return Shard(
        shard_id,
        start,
        end,
        starting_sequence_number="1",
        ending_sequence_number="2" if closed else None,
    )


def even_shards(count: int) -> list[Shard]:
    """Ranges as CreateStream makes them: equal slices, the last one up to the maximum."""
    step = (MAX_HASH_KEY + 1) // count
    return [
        shard(f"shardId-{i:012d}", i * step, MAX_HASH_KEY if i == count - 1 else (i + 1) * step - 1)
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("key", "md5_hex"),
    [
        ("", "d41d8cd98f00b204e9800998ecf8427e"),
        ("a", "0cc175b9c0f1b6a831c399e269772661"),
        ("user-42", "7631bc07a1cc8fcd56e70fc6b2fb4a43"),
        ("ключ", "c3657b66c60a307292aae11f07b04ae7"),  # UTF-8 bytes are hashed
    ],
)
def test_hash_key_is_md5_big_endian(key: str, md5_hex: str) -> None:
    assert hash_key(key) == int(md5_hex, 16)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0), ("1", 1), (str(HALF), HALF), (str(MAX_HASH_KEY), MAX_HASH_KEY)],
)
def test_explicit_hash_key_parses(value: str, expected: int) -> None:
    assert parse_explicit_hash_key(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        str(2**128),  # one past the end
        "9" * 40,
        "-1",
        "+1",
        "01",  # leading zero: AWS rejects it
        " 1",
        "1 ",
        "1.0",
        "1e3",
        "0x10",
        "",
        "١٢",  # non-ASCII digits
        "1_000",
    ],
)
def test_bad_explicit_hash_keys_are_refused(value: str) -> None:
    with pytest.raises(errors.InvalidHashKey, match="explicit_hash_key") as info:
        parse_explicit_hash_key(value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("value", [5, b"5", None])
def test_explicit_hash_key_must_be_a_str(value: object) -> None:
    with pytest.raises(errors.InvalidHashKey, match="must be a str"):
        parse_explicit_hash_key(value)  # type: ignore[arg-type]


def test_long_bad_explicit_hash_key_message_is_truncated() -> None:
    with pytest.raises(errors.InvalidHashKey) as info:
        parse_explicit_hash_key("x" * 10_000)
    assert len(str(info.value)) < 300


def test_boundaries_of_two_shards() -> None:
    low, high = even_shards(2)
    shard_map = ShardMap([high, low])
    assert shard_map.shards == (low, high)
    assert shard_map.shard_for_hash(0) is low
    assert shard_map.shard_for_hash(HALF - 1) is low
    assert shard_map.shard_for_hash(HALF) is high
    assert shard_map.shard_for_hash(MAX_HASH_KEY) is high
    assert shard_map.shard_for_key("ignored", str(HALF - 1)) is low
    assert shard_map.shard_for_key("ignored", str(HALF)) is high
    for outside in (-1, MAX_HASH_KEY + 1):
        with pytest.raises(errors.UnmappedHashKey):
            shard_map.shard_for_hash(outside)


def test_partition_keys_follow_their_md5() -> None:
    shard_map = ShardMap(even_shards(2))
    # md5("a") starts with 0x0c: low half; md5("") starts with 0xd4: high half.
    assert shard_map.shard_for_key("a").shard_id == "shardId-000000000000"
    assert shard_map.shard_for_key("").shard_id == "shardId-000000000001"
    with pytest.raises(errors.InvalidHashKey):
        shard_map.shard_for_key("a", "01")


@given(
    st.lists(st.integers(min_value=1, max_value=MAX_HASH_KEY), max_size=12, unique=True),
    st.lists(st.text(max_size=20), max_size=30),
    st.lists(st.integers(min_value=0, max_value=MAX_HASH_KEY), max_size=30),
)
def test_lookups_match_a_linear_scan(
    cuts: list[int], partition_keys: list[str], hash_keys: list[int]
) -> None:
    bounds = [0, *sorted(cuts), MAX_HASH_KEY + 1]
    shards = [shard(f"s{i}", bounds[i], bounds[i + 1] - 1) for i in range(len(bounds) - 1)]
    shard_map = ShardMap(reversed(shards))
    assert len(shard_map) == len(shards)
    for _ in range(2):  # the second round is answered from the cache
        for key in partition_keys:
            expected = [s for s in shards if s.contains(hash_key(key))]
            assert [shard_map.shard_for_key(key)] == expected
    for value in hash_keys:
        expected = [s for s in shards if s.contains(value)]
        assert [shard_map.shard_for_hash(value)] == expected
        assert [shard_map.shard_for_key("x", str(value))] == expected
    for s in shards:
        assert shard_map.shard_for_key("anything", landing_hash_key(s)) is s


def test_closed_shards_are_ignored() -> None:
    parent = shard("parent", 0, MAX_HASH_KEY, closed=True)
    left = shard("left", 0, HALF - 1)
    right = shard("right", HALF, MAX_HASH_KEY)
    shard_map = ShardMap([parent, left, right])
    assert [s.shard_id for s in shard_map] == ["left", "right"]
    assert "parent" not in shard_map
    assert shard_map.get("parent") is None
    assert shard_map.get("left") is left
    assert shard_map.complete


def test_single_shard_takes_every_key() -> None:
    (only,) = even_shards(1)
    shard_map = ShardMap([only])
    assert shard_map.shard_for_key("anything") is only
    assert shard_map.shard_for_key("x", "0") is only


@pytest.mark.parametrize(
    ("shards", "message"),
    [
        ([], "no open shard"),
        ([shard("a", 0, HALF)], f"uncovered: \\[{HALF + 1}, {MAX_HASH_KEY}\\]"),
        ([shard("a", 1, MAX_HASH_KEY)], "uncovered: \\[0, 0\\]"),
        ([shard("a", 0, 9), shard("b", 20, MAX_HASH_KEY)], "uncovered: \\[10, 19\\]"),
        ([shard("a", 0, HALF), shard("b", HALF, MAX_HASH_KEY)], "overlap"),
        ([shard("a", 0, MAX_HASH_KEY + 1)], "invalid hash-key range"),
        ([shard("a", 5, 4), shard("b", 0, MAX_HASH_KEY)], "invalid hash-key range"),
        ([shard("a", 0, MAX_HASH_KEY, closed=True)], "no open shard"),
    ],
)
def test_inconsistent_maps_are_refused(shards: list[Shard], message: str) -> None:
    with pytest.raises(errors.InvalidShardMap, match=message):
        ShardMap(shards)


def test_partial_map_when_allowed() -> None:
    shard_map = ShardMap([shard("a", 0, 9), shard("b", 20, 29)], require_full_coverage=False)
    assert not shard_map.complete
    assert shard_map.shard_for_hash(9).shard_id == "a"
    assert shard_map.shard_for_hash(20).shard_id == "b"
    for gap in (10, 19, 30, MAX_HASH_KEY):
        with pytest.raises(errors.UnmappedHashKey, match=str(gap)):
            shard_map.shard_for_hash(gap)
    # Overlaps are refused even then: no single answer exists.
    with pytest.raises(errors.InvalidShardMap, match="overlap"):
        ShardMap([shard("a", 0, 10), shard("b", 10, 20)], require_full_coverage=False)


def test_landing_hash_key_is_the_starting_key() -> None:
    low, high = even_shards(2)
    assert landing_hash_key(low) == "0"
    assert landing_hash_key(high) == str(HALF)
