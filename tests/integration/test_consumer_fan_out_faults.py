"""Enhanced fan-out under faults injected by shardflow.testing.FaultProxy in front of
kinesis-mock: subscriptions cut mid-stream, refused with ResourceInUse or LimitExceeded,
and the stream consumer deregistered while in use. Nothing lost, nothing repeated; what
cannot be retried is raised naming the consumer and the shard."""

from __future__ import annotations

import anyio
import pytest

from shardflow import Consumer, errors
from shardflow.testing import FaultProxy

from support import kinesis, unique_name
from support_consumer import (
    GrantingCheckpointer,
    assert_per_key_order,
    collect,
    no_more,
    numbered,
    put_records,
    wait_until,
)
from support_fan_out import consumers, create_mock_stream, kinesis_mock_url  # noqa: F401


async def test_subscriptions_cut_mid_stream_are_renewed_without_loss_or_repeat(
    kinesis_mock_url: str,  # noqa: F811
) -> None:
    url = kinesis_mock_url
    name = unique_name("fo")
    create_mock_stream(url, name, shards=2)
    items = numbered(400)
    async with FaultProxy(url, cut_subscription_after=2) as proxy, Consumer(
        name, fan_out="cut", endpoint_url=proxy.url
    ) as consumer:
        got = []
        for start in range(0, len(items), 50):  # records arrive while subscriptions break
            put_records(url, name, items[start:start + 50])
            got += await collect(consumer, 50, within=30)
        assert await no_more(consumer, 1.5) == []
        stats = consumer.stats()
        cuts = proxy.counts["subscriptions_cut"]
    assert sorted(r.data for r in got) == sorted(d for _, d in items)
    assert len({(r.shard_id, r.sequence_number) for r in got}) == len(items)
    assert_per_key_order(got)
    assert cuts >= 4
    assert stats.subscriptions >= cuts


@pytest.mark.parametrize("fault", ["subscription_in_use_fraction", "subscription_limit_fraction"])
async def test_refused_subscriptions_are_retried_with_backoff(
    kinesis_mock_url: str,  # noqa: F811
    fault: str,
) -> None:
    url = kinesis_mock_url
    name = unique_name("fo")
    create_mock_stream(url, name, shards=2)
    items = numbered(100)
    put_records(url, name, items)
    async with FaultProxy(url, seed=3, **{fault: 0.6}) as proxy, Consumer(
        name, fan_out="refused", endpoint_url=proxy.url
    ) as consumer:
        got = await collect(consumer, len(items), within=40)
        assert await no_more(consumer, 1.0) == []
        stats = consumer.stats()
        counts = proxy.counts
    refused = counts["subscriptions_in_use"] + counts["subscriptions_limited"]
    assert refused >= 1
    assert stats.retries + stats.throttled >= refused
    # one call per second per consumer and shard at most, as AWS allows
    assert counts["subscriptions"] <= 2 * (1 + 40)
    assert sorted(r.data for r in got) == sorted(d for _, d in items)


async def test_a_consumer_deregistered_while_in_use_is_a_clear_error(
    kinesis_mock_url: str,  # noqa: F811
) -> None:
    url = kinesis_mock_url
    name = unique_name("fo")
    arn = create_mock_stream(url, name, shards=1)
    put_records(url, name, [("k", b"one")])
    async def read_on() -> None:
        async with FaultProxy(url, cut_subscription_after=1) as proxy, Consumer(
            name, fan_out="doomed", endpoint_url=proxy.url
        ) as consumer:
            assert [r.data for r in await collect(consumer, 1)] == [b"one"]
            consumer_arn = consumers(url, arn)[0]["ConsumerARN"]
            kinesis(url).deregister_stream_consumer(ConsumerARN=consumer_arn)
            with anyio.fail_after(30):
                async for _ in consumer:
                    pass

    with pytest.raises(errors.ResourceNotFound) as caught:
        await read_on()
    assert "doomed" in str(caught.value)
    assert "shardId-000000000000" in str(caught.value)


async def test_internal_failure_events_are_retried_without_loss_or_repeat(
    kinesis_mock_url: str,  # noqa: F811
) -> None:
    url = kinesis_mock_url
    name = unique_name("fo")
    create_mock_stream(url, name, shards=1)
    items = numbered(120)
    async with FaultProxy(url, fail_subscription_after=1) as proxy, Consumer(
        name, fan_out="failing", endpoint_url=proxy.url
    ) as consumer:
        got = []
        for start in range(0, len(items), 40):
            put_records(url, name, items[start:start + 40])
            got += await collect(consumer, 40, within=30)
        assert await no_more(consumer, 1.5) == []
        stats = consumer.stats()
        failed = proxy.counts["subscriptions_failed"]
    assert [r.data for r in got] == [d for _, d in items]
    assert failed >= 2
    assert stats.retries >= failed


async def test_a_lost_lease_ends_its_subscription_at_once(
    kinesis_mock_url: str,  # noqa: F811
) -> None:
    url = kinesis_mock_url
    name = unique_name("fo")
    create_mock_stream(url, name, shards=2)
    shards = [s["ShardId"] for s in kinesis(url).list_shards(StreamName=name)["Shards"]]
    coordinator = GrantingCheckpointer(set(shards))
    async with FaultProxy(url) as proxy, Consumer(
        name, app_name="leases", checkpointer=coordinator, fan_out=True, endpoint_url=proxy.url
    ) as consumer:
        await wait_until(lambda: proxy.counts["subscription_events"] >= 4)  # both streaming
        assert proxy.counts["subscriptions_closed"] == 0
        coordinator.take_away(shards[0])
        await wait_until(lambda: proxy.counts["subscriptions_closed"] == 1, within=2.0)
        items = numbered(60, keys=16)
        results = put_records(url, name, items)
        kept = [d for (_, d), r in zip(items, results, strict=True) if r["ShardId"] == shards[1]]
        got = await collect(consumer, len(kept))
        assert await no_more(consumer, 1.5) == []
        assert proxy.counts["subscriptions"] == 2  # the lost shard was not subscribed again
    assert [r.data for r in got] == kept
