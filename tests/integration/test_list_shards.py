from __future__ import annotations

import itertools
from contextlib import AsyncExitStack

import pytest

from shardflow import errors
from shardflow._core import aws as _aws
from shardflow._core.aws import list_shards

from support import create_stream, unique_name


async def test_list_shards_covers_the_hash_space(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=3)
    async with AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "kinesis", endpoint_url=kinesis_url)
        shards = await list_shards(client, name)
    assert len(shards) == 3
    ordered = sorted(shards, key=lambda s: s.starting_hash_key)
    assert ordered[0].starting_hash_key == 0
    assert ordered[-1].ending_hash_key == 2**128 - 1
    for left, right in itertools.pairwise(ordered):
        assert right.starting_hash_key == left.ending_hash_key + 1
    assert all(s.is_open for s in shards)


async def test_missing_stream_is_stream_not_found(kinesis_url: str) -> None:
    async with AsyncExitStack() as stack:
        client = await _aws.open_client(stack, "kinesis", endpoint_url=kinesis_url)
        with pytest.raises(errors.StreamNotFound):
            await list_shards(client, unique_name("missing"))
