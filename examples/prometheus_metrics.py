"""A service that exposes shardflow's metrics to Prometheus at ``/metrics``.

    pip install 'shardflow[otel]' opentelemetry-sdk opentelemetry-exporter-prometheus
    python examples/prometheus_metrics.py [--port 9464] [--seconds 0]

shardflow measures through the OpenTelemetry API. This service installs the SDK's
MeterProvider with the OpenTelemetry Prometheus exporter as the global provider, so
every Producer and Consumer created afterwards reports to it without any option
(``meter_provider=`` picks another provider), and serves the exporter's registry with
prometheus_client on 127.0.0.1. It runs a small pipeline on the embedded local endpoint:
a producer putting a few records a second into a 2-shard stream and a consumer group of
one reading and checkpointing them. Then:

    curl -s 127.0.0.1:9464/metrics | grep shardflow_

shows e.g. ``shardflow_producer_records_put_total{aws_kinesis_stream="orders"}`` and
``shardflow_consumer_millis_behind_latest_milliseconds{aws_kinesis_shard="shardId-..."}``.
It runs until Ctrl-C, or for ``--seconds`` when given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import anyio
from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import start_http_server

from shardflow import Consumer, Producer, create_stream, local_endpoint

STREAM = "orders"


async def produce(endpoint_url: str, stop: anyio.Event) -> None:
    async with Producer(STREAM, endpoint_url=endpoint_url, linger=0.05) as producer:
        n = 0
        while not stop.is_set():
            await producer.put({"order": n, "amount": n % 97}, partition_key=f"user-{n % 20}")
            n += 1
            with anyio.move_on_after(0.02):
                await stop.wait()


async def consume(endpoint_url: str, stop: anyio.Event) -> None:
    async with Consumer(
        STREAM, endpoint_url=endpoint_url, app_name="billing", poll_interval=0.2
    ) as consumer:
        with anyio.CancelScope() as scope:
            async def stopper() -> None:
                await stop.wait()
                scope.cancel()

            async with anyio.create_task_group() as tg:
                tg.start_soon(stopper)
                async for batch in consumer.batches(timeout=0.5):
                    if batch:
                        await consumer.checkpoint(batch[-1])


async def main(port: int, seconds: float) -> None:
    # The exporter registers with prometheus_client's default registry, which
    # start_http_server serves at /metrics (Prometheus scrapes it).
    reader = PrometheusMetricReader()
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource.create({"service.name": "orders"})
    )
    metrics.set_meter_provider(provider)
    server, thread = start_http_server(port, addr="127.0.0.1")
    print(f"serving http://127.0.0.1:{server.server_port}/metrics", flush=True)
    stop = anyio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with local_endpoint() as endpoint_url:
        await create_stream(STREAM, shard_count=2, endpoint_url=endpoint_url)
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce, endpoint_url, stop)
            tg.start_soon(consume, endpoint_url, stop)
            if seconds > 0:
                with anyio.move_on_after(seconds):
                    await stop.wait()
                stop.set()
    server.shutdown()
    thread.join(5)
    provider.shutdown()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9464, help="port of /metrics (0: any)")
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.port, args.seconds))
