"""A stalled endpoint (FaultProxy(stall=True): requests accepted, never answered) in
front of a producer in its own process, so that its memory can be measured alone:

- filling the queue (32 MiB of records) grows RSS by less than max_queue_bytes plus a
  fixed allowance; put_nowait then raises QueueFull;
- put() blocks: a put under a short move_on_after does not complete and leaves nothing
  behind (queued records and bytes unchanged);
- close() returns within record_ttl plus slack (a "never hangs" bound, not a timing)
  and fails every undelivered record with DeliveryFailed.

Stalled for PutRecords only (the producer knows the stream and its shards), and for every
operation (``operations={"*"}``): the producer starts all the same, without an answer
(it reads the stream's description in the background), and its records wait unsent.

tests/integration/test_producer_faults.py checks the same backpressure on a small queue
in the test process; benchmarks/producer.py measures RSS growth as a figure.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
import orjson
import pytest

from shardflow.testing import FaultProxy

from support import ROOT, create_stream
from support_reliability import report

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
MAX_QUEUE_BYTES = 32 * MiB
RECORD_TTL = 6.0
# Beyond max_queue_bytes: the interpreter's and allocator's own growth, the aiohttp
# machinery of max_in_flight stalled requests and their bodies (copies of entries that
# are also queued). Measured: ~11 MiB; a second copy of the queue would exceed it.
OVERHEAD = 32 * MiB
CLOSE_SLACK = 15.0

CHILD = r'''
import gc
import os
import sys
import time

import anyio
import orjson

from shardflow import Producer, errors

endpoint, stream, max_queue_bytes, ttl = sys.argv[1:5]
max_queue_bytes, ttl = int(max_queue_bytes), float(ttl)


def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def main():
    out = {}
    producer = Producer(stream, endpoint_url=endpoint, max_queue_bytes=max_queue_bytes,
                        max_queue_records=10_000_000, record_ttl=ttl, linger=0.05)
    futures = []
    async with producer:
        gc.collect()
        start = rss()
        n = 0
        while True:
            data = b"%08d" % n + os.urandom(4096)  # fresh bytes: nothing shared
            try:
                futures.append(producer.put_nowait(data, partition_key=f"key-{n % 1000}"))
            except errors.QueueFull:
                break
            n += 1
            if n % 500 == 0:
                await anyio.sleep(0)  # let the sender start its (stalled) requests
        await anyio.sleep(0.5)
        gc.collect()
        out["rss_growth"] = rss() - start
        full = producer.stats()
        out.update(accepted=n, queued=full.queued, queued_bytes=full.queued_bytes,
                   in_flight=full.in_flight, in_flight_requests=full.in_flight_requests)
        refused = 0
        for _ in range(10):
            try:
                producer.put_nowait(os.urandom(4104), partition_key="k")  # same size
            except errors.QueueFull:
                refused += 1
        out["put_nowait_refused"] = refused
        with anyio.move_on_after(0.5) as scope:
            await producer.put(os.urandom(4104), partition_key="k")
        after = producer.stats()
        out["put_blocked"] = scope.cancelled_caught
        out["left_behind"] = [after.queued - full.queued, after.queued_bytes - full.queued_bytes]
        started = time.monotonic()
        await producer.aclose()
        out["close_seconds"] = time.monotonic() - started
    outcomes = {}
    for future in futures:
        if not future.done():
            kind = "unresolved"
        elif future.exception() is None:
            kind = "delivered"
        else:
            kind = type(future.exception()).__name__
        outcomes[kind] = outcomes.get(kind, 0) + 1
    out["outcomes"] = outcomes
    out["queued_after_close"] = producer.stats().queued
    print(orjson.dumps(out).decode(), flush=True)


anyio.run(main)
'''


@pytest.mark.parametrize("stalled_operations", ["data", "all"])
async def test_stalled_endpoint_bounds_memory_blocks_puts_and_close_returns(
    kinesalite_url: str, tmp_path: Path, stalled_operations: str
) -> None:
    stream = create_stream(kinesalite_url, shards=4)
    script = tmp_path / "stalled_producer.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    operations = {"*"} if stalled_operations == "all" else None
    async with FaultProxy(kinesalite_url, stall=True, operations=operations) as proxy:
        with anyio.fail_after(120):
            child = await anyio.run_process(
                [sys.executable, str(script), proxy.url, stream, str(MAX_QUEUE_BYTES),
                 str(RECORD_TTL)],
                env=env, check=False,
            )
        stalled = proxy.counts["stalled"]
    assert child.returncode == 0, child.stderr.decode()
    out = orjson.loads(child.stdout.decode().strip().splitlines()[-1])
    report(
        f"stalled endpoint (producer in a subprocess, kinesalite behind a proxy stalling "
        f"{stalled_operations} operations)",
        max_queue_bytes=MAX_QUEUE_BYTES, records_accepted=out["accepted"],
        queued_bytes=out["queued_bytes"], in_flight=out["in_flight"],
        stalled_requests=stalled, rss_growth_mib=round(out["rss_growth"] / MiB, 1),
        close_s=round(out["close_seconds"], 2), record_ttl=RECORD_TTL,
        outcomes=out["outcomes"], unresolved=out["outcomes"].get("unresolved", 0),
    )
    assert stalled > 0
    assert out["queued_bytes"] <= MAX_QUEUE_BYTES
    assert out["queued"] == out["accepted"] > 1000
    assert out["rss_growth"] < MAX_QUEUE_BYTES + OVERHEAD
    assert out["put_nowait_refused"] == 10
    assert out["put_blocked"] is True
    assert out["left_behind"] == [0, 0]
    assert out["close_seconds"] < RECORD_TTL + CLOSE_SLACK  # never hangs
    # Nothing was answered: every accepted record failed, none silently vanished.
    assert out["outcomes"] == {"DeliveryFailed": out["accepted"]}
    assert out["queued_after_close"] == 0
