"""Subscriptions renewed when the service ends them, as AWS does after 5 minutes, here
forced to 1 second on the fake Kinesis (benchmarks/fake_kinesis, which frames events
as AWS's event stream): records written across many renewals arrive once each, in order,
continuing from each subscription's last ContinuationSequenceNumber."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from shardflow import Consumer

from benchmarks.fake_kinesis import FakeKinesis, fake_kinesis
from support import kinesis
from support_consumer import assert_per_key_order, collect, no_more, numbered, put_records


@pytest.fixture(scope="module")
def short_fake() -> Iterator[FakeKinesis]:
    with fake_kinesis(shards=2, store=True, subscription_seconds=1.0) as fake:
        yield fake


async def test_records_across_renewals_arrive_once_in_order(short_fake: FakeKinesis) -> None:
    url = short_fake.url
    name = "renewals"
    kinesis(url).create_stream(StreamName=name, ShardCount=2)
    items = numbered(600)
    async with Consumer(name, fan_out="renew", endpoint_url=url) as consumer:
        got = []
        for start in range(0, len(items), 100):  # spread over ~3 s: several renewals
            put_records(url, name, items[start:start + 100])
            got += await collect(consumer, 100, within=20)
            await anyio.sleep(0.5)
        assert await no_more(consumer, 1.5) == []
        stats = consumer.stats()
    for shard_id in {r.shard_id for r in got}:  # each shard in order, nothing twice
        seqs = [int(r.sequence_number) for r in got if r.shard_id == shard_id]
        assert seqs == sorted(set(seqs))
    assert sorted(r.data for r in got) == sorted(d for _, d in items)
    assert len(got) == len(items)
    assert_per_key_order(got)
    assert stats.subscriptions >= 2 * 3  # both shards renewed again and again
    assert stats.retries == 0  # an ended subscription is renewed, not a failure
