"""A producer starts without reaching the endpoint (as the KPL does), waits for it while
it is down (records retried within record_ttl), fails fast on a stream known to be
missing, and sizes records to the stream's MaxRecordSizeInKiB where the endpoint reports
it. Endpoints: moto and kinesalite (neither reports MaxRecordSizeInKiB: defaults), a
closed port, kinesalite behind a FaultProxy that resets or stalls every request, and the
benchmarks' fake Kinesis configured with a raised record limit."""

from __future__ import annotations

import asyncio
import logging

import anyio
import pytest

from shardflow import KinesisLimits, Producer, PutResult, errors
from shardflow.testing import FaultProxy

import support_bench  # noqa: F401  (puts the repository root on sys.path)
from benchmarks.fake_kinesis import fake_kinesis
from support import create_stream, free_port, unique_name
from support_kcl import read_with_kcl_rules

MiB = 1024 * 1024
EVERY_OPERATION = {"*"}


async def test_a_missing_stream_fails_fast_naming_stream_region_and_endpoint(
    kinesis_url: str,
) -> None:
    name = unique_name("missing")
    with anyio.fail_after(30):
        async with Producer(name, endpoint_url=kinesis_url, record_ttl=60) as producer:
            with pytest.raises(errors.DeliveryFailed) as failed:
                await producer.put_and_wait(b"x", partition_key="k")
            cause = failed.value.cause
            assert isinstance(cause, errors.StreamNotFound)
            for part in (name, "us-east-1", kinesis_url):
                assert part in str(cause)
            with pytest.raises(errors.StreamNotFound, match=name):
                await producer.put(b"y", partition_key="k")


async def test_start_reaches_nothing_and_records_fail_at_their_ttl_on_a_closed_port(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with anyio.fail_after(10):
        async with Producer("s", endpoint_url=url, record_ttl=1.0, aggregate=True) as producer:
            futures = [await producer.put(b"%d" % i, partition_key=f"k{i}") for i in range(20)]
            outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(o, errors.DeliveryFailed) for o in outcomes)
    failure = outcomes[0]
    assert isinstance(failure, errors.DeliveryFailed)
    assert isinstance(failure.cause, errors.EndpointUnreachable)
    assert "could not be reached" in str(failure)
    # one line for the batch, naming the stream and the error code
    lines = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(lines) == 1
    assert "stream s: 20 record(s)" in lines[0]
    assert "[EndpointUnreachable]" in lines[0]


@pytest.mark.parametrize("outage", ["reset", "stall"])
async def test_a_producer_started_while_kinesis_is_down_delivers_once_it_is_back(
    kinesalite_url: str, outage: str
) -> None:
    name = create_stream(kinesalite_url, shards=2)
    down = {"reset_before_fraction": 1.0} if outage == "reset" else {"stall": True}
    async with FaultProxy(kinesalite_url, operations=EVERY_OPERATION, **down) as proxy:  # type: ignore[arg-type]
        with anyio.fail_after(30):
            async with Producer(
                name, endpoint_url=proxy.url, aggregate=True, linger=0.05, record_ttl=30
            ) as producer:
                futures = [
                    await producer.put(b"r%d" % i, partition_key=f"k{i % 10}") for i in range(100)
                ]
                # (entering and putting did not wait on the endpoint: every request stalls)
                await anyio.sleep(0.5)  # down for a while: nothing resolved
                assert not any(f.done() for f in futures)
                assert producer.stats().waiting == 100
                if outage == "reset":
                    proxy.configure(reset_before_fraction=0.0)
                else:
                    proxy.configure(stall=False)
                results: list[PutResult] = await asyncio.gather(*futures)
                limits = producer.limits
        counts = dict(proxy.counts)
    assert counts["resets_before" if outage == "reset" else "stalled"] > 0
    assert limits == KinesisLimits()  # kinesalite does not report MaxRecordSizeInKiB
    seen = {r.where: r.data for r in await read_with_kcl_rules(kinesalite_url, name)}
    for i, result in enumerate(results):
        where = (result.shard_id, result.sequence_number, result.sub_sequence_number)
        assert seen[where] == b"r%d" % i
    assert result.sub_sequence_number is not None  # packed into aggregates once the map came


async def test_defaults_where_the_endpoint_does_not_report_the_record_limit(
    kinesis_url: str,
) -> None:
    name = create_stream(kinesis_url)
    async with Producer(name, endpoint_url=kinesis_url, record_ttl=10) as producer:
        await producer.put_and_wait(b"x" * (MiB - 1), partition_key="k")  # exactly 1 MiB
        with pytest.raises(errors.RecordTooLarge, match=str(MiB)):
            await producer.put(b"x" * MiB, partition_key="k")
        assert producer.limits == KinesisLimits()


async def test_records_are_sized_to_the_streams_max_record_size() -> None:
    # the benchmarks' fake Kinesis with streams of 8 MiB records reports
    # MaxRecordSizeInKiB=8192 in DescribeStreamSummary, as AWS does for such a stream
    with fake_kinesis(shards=2, store=True, max_record_bytes=8 * MiB) as fake:
        async with Producer("big", endpoint_url=fake.url, linger=0.05) as producer:
            # put before the stream's limit is known: put() waits for the description
            big = await producer.put(b"b" * (6 * MiB), partition_key="k")  # > a 5 MiB request
            small = [await producer.put(b"s%d" % i, partition_key="k") for i in range(5)]
            results = await asyncio.gather(big, *small)
            assert producer.limits.max_record_bytes == 8 * MiB
            assert producer.limits.max_batch_bytes == 5 * MiB  # requests stay at 5 MiB
            with pytest.raises(errors.RecordTooLarge):
                await producer.put(b"x" * (8 * MiB), partition_key="k")
            with pytest.raises(errors.RecordTooLarge):  # explicit limits win
                async with Producer("big", endpoint_url=fake.url, limits=KinesisLimits()) as p:
                    await p.put(b"b" * (2 * MiB), partition_key="k")
        stats = fake.stats()
    assert all(r.attempts[-1].ok for r in results)
    assert stats["kinesis_records"] == 6
    assert stats["rejected"] == {}
    assert stats["operations"]["PutRecords"] >= 2  # the big record went alone


async def test_put_nowait_refuses_a_large_record_until_the_limit_is_known(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.WARNING)
    async with Producer("s", endpoint_url=url, record_ttl=0.5) as producer:
        with pytest.raises(errors.RecordTooLarge, match="not known yet"):
            producer.put_nowait(b"x" * (2 * MiB), partition_key="k")
        with pytest.raises(errors.RecordTooLarge, match="not known yet"):
            await producer.put(b"x" * (2 * MiB), partition_key="k")  # waited record_ttl


async def test_the_streams_record_size_is_capped_to_what_the_queue_holds() -> None:
    with fake_kinesis(shards=1, max_record_bytes=8 * MiB) as fake:
        async with Producer("big", endpoint_url=fake.url, max_queue_bytes=4 * MiB) as producer:
            await producer.put_and_wait(b"x", partition_key="k")  # the stream is described
            largest = producer.limits.max_record_bytes
            assert MiB < largest < 4 * MiB  # one record's encoding must fit the queue
            await producer.put_and_wait(b"x" * (largest - 1), partition_key="k")
            with pytest.raises(errors.RecordTooLarge):
                await producer.put(b"x" * largest, partition_key="k")


async def test_a_stream_deleted_while_producing_fails_fast_then_is_written_once_recreated(
    kinesalite_url: str,
) -> None:
    from support import kinesis

    name = create_stream(kinesalite_url, shards=1)
    async with Producer(name, endpoint_url=kinesalite_url, linger=0.01, record_ttl=30) as p:
        await p.put_and_wait(b"before", partition_key="k")
        client = kinesis(kinesalite_url)
        await anyio.to_thread.run_sync(lambda: client.delete_stream(StreamName=name))

        async def first_failure() -> errors.DeliveryFailed:
            while True:  # (kinesalite may take a moment to forget the stream)
                try:
                    await p.put_and_wait(b"gone", partition_key="k")
                except errors.DeliveryFailed as exc:
                    return exc

        with anyio.fail_after(20):
            failed = await first_failure()
        assert isinstance(failed.cause, errors.StreamNotFound)
        assert name in str(failed.cause)
        with pytest.raises(errors.StreamNotFound):
            await p.put(b"refused", partition_key="k")
        await anyio.to_thread.run_sync(lambda: create_stream(kinesalite_url, name=name))
        with anyio.fail_after(30):  # checked again every few seconds
            while True:
                try:
                    result = await p.put_and_wait(b"after", partition_key="k")
                except errors.StreamNotFound:
                    await anyio.sleep(0.2)
                else:
                    break
    assert result.attempts[-1].ok
