"""Optional trace context (off by default): spans per PutRecords and GetRecords request
with ``tracer_provider=``, and the Collector's W3C ``traceparent`` that a consumer uses to
continue the trace (real OpenTelemetry SDK, in-memory exporter; moto, FaultProxy)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.propagate import extract
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shardflow import Collector, Consumer, KinesisLimits, Producer
from shardflow.testing import FaultProxy

from support import create_stream
from support_collector import RecordingOutput
from support_consumer import POLL, collect, numbered, put_records


def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def named(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_a_span_per_put_records_request(moto_url: str) -> None:
    name = create_stream(moto_url, shards=2)
    provider, exporter = spans()
    async with FaultProxy(moto_url, seed=2, error_5xx_fraction=0.3) as proxy, Producer(
        name, endpoint_url=proxy.url, linger=0.02, tracer_provider=provider,
        limits=KinesisLimits(max_batch_records=20),  # many requests, so some fail
    ) as producer:
        await asyncio.gather(*[producer.put_nowait({"n": i}, partition_key=f"k{i}")
                               for i in range(200)])
        stats = producer.stats()
    put = named(exporter, "Kinesis.PutRecords")
    assert len(put) == stats.requests
    assert all(s.kind == trace.SpanKind.CLIENT for s in put)
    assert all(s.attributes["aws.kinesis.stream"] == name for s in put)
    assert all(s.attributes["rpc.method"] == "PutRecords" for s in put)
    failed = [s for s in put if s.status.status_code == trace.StatusCode.ERROR]
    assert len(failed) == stats.failed_requests > 0
    assert all(s.end_time >= s.start_time for s in put)


async def test_a_span_per_get_records_request_with_its_shard(moto_url: str) -> None:
    name = create_stream(moto_url, shards=2)
    put_records(moto_url, name, numbered(30))
    provider, exporter = spans()
    async with Consumer(
        name, endpoint_url=moto_url, poll_interval=POLL, tracer_provider=provider
    ) as consumer:
        records = await collect(consumer, 30)
        calls = consumer.stats().get_records_calls
    got = named(exporter, "Kinesis.GetRecords")
    assert calls - 2 <= len(got) <= calls  # (calls still in flight at close end later)
    assert {s.attributes["aws.kinesis.shard"] for s in got} == {r.shard_id for r in records}


async def test_off_by_default() -> None:
    provider, _ = spans()
    out = RecordingOutput()
    collector = Collector()
    collector.output("app.**", out)
    tracer = provider.get_tracer("app")
    async with collector:
        with tracer.start_as_current_span("request"):
            await collector.post("app.click", {"n": 1})
    assert "traceparent" not in out.events[0]


async def test_collector_carries_traceparent_and_a_consumer_continues_the_trace() -> None:
    provider, exporter = spans()
    tracer = provider.get_tracer("app")
    out = RecordingOutput()
    collector = Collector(trace_context=True)
    collector.output("app.**", out)
    async with collector:
        with tracer.start_as_current_span("handle request") as span:
            await collector.post("app.click", {"n": 1})
            trace_id = span.get_span_context().trace_id
        await collector.post("app.click", {"n": 2})  # no span: no traceparent
        await collector.post("app.click", {"n": 3, "traceparent": "kept"})
    first, second, third = out.events
    ctx = span.get_span_context()
    assert first["traceparent"] == f"00-{trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    assert "traceparent" not in second
    assert third["traceparent"] == "kept"
    # what a consumer does with the record's JSON: continue the producer's trace
    event = orjson.loads(orjson.dumps(first))
    with tracer.start_as_current_span("process", context=extract(event)) as child:
        assert child.get_span_context().trace_id == trace_id
    assert named(exporter, "process")[0].parent.span_id == span.get_span_context().span_id
