"""An asyncio web service (aiohttp) that logs every request through the Collector.

    python examples/web_service.py

A middleware posts one ``web.request`` event per request (method, path, status, time
taken, client) to a Collector, which spools it to SQLite and sends it on to Kinesis
through a Producer. The Producer and the Collector live as long as the application
(``cleanup_ctx``): started before the first request, flushed and closed at shutdown.

The example runs on the embedded local endpoint (moto on 127.0.0.1): it starts the
service on a free port, sends it a few requests, stops it, and reads the events back
from the stream. In production, start it with ``web.run_app(make_app(...))`` and no
``endpoint_url``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
from aiohttp import ClientSession, web

from shardflow import (
    BufferedOutput,
    Collector,
    Consumer,
    KinesisOutput,
    Producer,
    add_fields,
    create_stream,
    local_endpoint,
)

STREAM = "web-requests"
COLLECTOR = web.AppKey("collector", Collector)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def log_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Post one event per request, including those that end in an HTTP error."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        event = {
            "method": request.method,
            "path": request.path,
            "status": status,
            "ms": round((time.perf_counter() - started) * 1000, 2),
            "client": request.remote or "-",
        }
        # With a spool, post() returns once the event is committed to SQLite (a
        # millisecond or so); sending to Kinesis happens in the background, in batches.
        await request.app[COLLECTOR].post("web.request", event)


async def hello(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world"})


async def item(request: web.Request) -> web.Response:
    item_id = request.match_info["id"]
    if not item_id.isdigit():
        raise web.HTTPNotFound(text=f"no item {item_id}")
    return web.json_response({"item": int(item_id), "price": 9.5})


async def order(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response({"order": "accepted", "items": body.get("items", [])}, status=201)


def make_app(spool: Path, endpoint_url: str | None = None) -> web.Application:
    async def pipeline(app: web.Application) -> AsyncIterator[None]:
        async with Producer(STREAM, endpoint_url=endpoint_url) as producer:
            collector = Collector()
            collector.filter("web.**", add_fields(service="shop", version="1.0"))
            collector.output(
                "web.**",
                BufferedOutput(
                    KinesisOutput(producer, partition_key="client"),
                    spool=spool,  # events survive a crash or an outage of Kinesis
                    flush_interval=0.2,
                ),
            )
            async with collector:
                app[COLLECTOR] = collector
                yield  # the service runs; leaving flushes the spool, then the producer

    app = web.Application(middlewares=[log_requests])
    app.cleanup_ctx.append(pipeline)
    app.router.add_get("/", hello)
    app.router.add_get("/items/{id}", item)
    app.router.add_post("/orders", order)
    return app


async def main(endpoint_url: str, spool: Path) -> None:
    await create_stream(STREAM, shard_count=1, endpoint_url=endpoint_url)

    runner = web.AppRunner(make_app(spool, endpoint_url))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(f"service listening on {base}")
    requests = [("GET", "/", None), ("GET", "/items/7", None), ("GET", "/items/seven", None),
                ("POST", "/orders", {"items": [7, 8]}), ("GET", "/nowhere", None)]
    async with ClientSession() as http:
        for method, path, body in requests:
            async with http.request(method, base + path, json=body) as response:
                print(f"  {method} {path} -> {response.status}")
    await runner.cleanup()  # stops the service; the collector and producer flush

    print(f"events in the stream {STREAM}:")
    async with Consumer(STREAM, endpoint_url=endpoint_url, poll_interval=0.2) as consumer:
        seen = 0
        with anyio.fail_after(30):
            async for record in consumer:
                event = record.json()
                print(f"  {event['tag']} {event['method']} {event['path']} {event['status']} "
                      f"{event['ms']} ms (service={event['service']})")
                seen += 1
                if seen == len(requests):
                    break
    print(f"{seen} requests logged")


if __name__ == "__main__":
    with local_endpoint() as url, tempfile.TemporaryDirectory() as tmp:
        asyncio.run(asyncio.wait_for(main(url, Path(tmp) / "requests.db"), timeout=60))
