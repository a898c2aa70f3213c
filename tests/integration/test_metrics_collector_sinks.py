"""The collector's, BufferedOutput's and S3Sink's OpenTelemetry instruments (real SDK,
in-memory reader; S3 on moto)."""

from __future__ import annotations

from shardflow import BufferedOutput, Collector, S3Sink

from support_collector import RecordingOutput
from support_metrics import Metrics
from support_sinks import list_keys, make_records, new_bucket, s3


async def test_collector_and_buffer_counts(tmp_path: object) -> None:
    m = Metrics()
    out = RecordingOutput(fail={3: 1})
    buffered = BufferedOutput(
        out, spool=f"{tmp_path}/spool.db", flush_interval=0.05, max_spool_records=100,
        overflow="drop_oldest", meter_provider=m.provider,
    )
    collector = Collector(meter_provider=m.provider)
    collector.filter("app.**", lambda e: None if e.get("n") == 99 else e)
    collector.output("app.**", buffered)
    async with collector:
        for n in range(10):
            await collector.post("app.click", {"n": n})
        await collector.post("app.click", {"n": 99})  # filtered out
        await collector.post("other.thing", {"n": 0})  # no output
        assert m.value("shardflow.collector.spool.events") > 0
        assert m.value("shardflow.collector.spool.size") > 0
        await collector.flush()
        assert m.value("shardflow.collector.spool.events") == 0
        assert m.value("shardflow.collector.spool.size") == 0
    assert m.value("shardflow.collector.events.posted") == 12
    assert m.value("shardflow.collector.events.dropped", {"reason": "filter"}) == 1
    assert m.value("shardflow.collector.events.dropped", {"reason": "unrouted"}) == 1
    output = {"shardflow.output": "RecordingOutput"}
    assert m.value("shardflow.collector.events.sent", output) == 10 == len(out.events)
    assert m.value("shardflow.collector.send.failures", output) == 1
    assert m.value("shardflow.collector.spool.dropped", output) == 0
    assert m.unit("shardflow.collector.spool.size") == "By"


async def test_buffer_drops_are_counted_by_reason() -> None:
    m = Metrics()
    out = RecordingOutput()
    buffered = BufferedOutput(
        out, flush_interval=60, max_spool_records=5, overflow="drop_oldest",
        meter_provider=m.provider,
    )
    async with buffered:
        for n in range(8):
            await buffered.post({"n": n})
        assert m.value("shardflow.collector.spool.dropped", {"reason": "overflow"}) == 3
        assert m.value("shardflow.collector.spool.events") == 5


async def test_s3_sink_objects_bytes_and_write_duration(moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    m = Metrics()
    async with S3Sink(
        bucket, stream="clicks", endpoint_url=moto_url, meter_provider=m.provider
    ) as sink:
        await sink.write(make_records(20))
        assert m.value("shardflow.sink.records.buffered") == 20
        await sink.flush()
    keys = list_keys(moto_url, bucket)
    client = s3(moto_url)
    stored = sum(client.head_object(Bucket=bucket, Key=k)["ContentLength"] for k in keys)
    attrs = {"aws.s3.bucket": bucket, "aws.kinesis.stream": "clicks"}
    assert m.value("shardflow.sink.objects.written", attrs) == len(keys) >= 1
    assert m.value("shardflow.sink.records.written", attrs) == 20
    assert m.value("shardflow.sink.bytes.written", attrs) == stored
    assert m.value("shardflow.sink.write.duration", attrs) == len(keys)
    assert m.value("shardflow.sink.records.buffered") == 0
