"""SIGKILL a process in the middle of flushing its spool; a new process finishes the job.

The child posts 5,000 events through Collector → BufferedOutput(spool) → KinesisOutput →
Producer → moto. Its output is paced and held until every post has returned, so the kill
lands while batches are being sent (some records put but not yet acknowledged). A second
process opens the same spool and flushes. Every event must be in the stream at least
once; duplicates are counted and printed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from support import ROOT, create_stream, read_stream

pytestmark = pytest.mark.slow

EVENTS = 5000

CHILD = r'''
import sys

import anyio

from shardflow import BufferedOutput, Collector, KinesisOutput, Producer

endpoint, stream, spool, mode, count = sys.argv[1:6]
count = int(count)


class Paced:
    """Holds batches until `gate` opens, announces each, then pauses a little."""

    def __init__(self, inner, gate):
        self.inner = inner
        self.gate = gate
        self.batches = 0

    async def send(self, events):
        await self.gate.wait()
        self.batches += 1
        print(f"SENDING {self.batches} {len(events)}", flush=True)
        results = await self.inner.send(events)
        await anyio.sleep(0.03)
        return results


async def main():
    gate = anyio.Event()
    async with Producer(stream, endpoint_url=endpoint, linger=0.02) as producer:
        output = Paced(KinesisOutput(producer, partition_key="user_id"), gate)
        buffered = BufferedOutput(output, spool=spool, flush_interval=0.05, max_batch=100)
        collector = Collector()
        collector.output("app.**", buffered)
        async with collector:
            if mode == "post":
                for i in range(count):
                    await collector.post("app.event", {"seq": i, "user_id": f"u{i % 50}"})
                print("POSTED", flush=True)
            else:
                print(f"RESUMING {buffered.stats().buffered}", flush=True)
            gate.set()
            await collector.flush()
            print(f"DONE {buffered.stats().buffered}", flush=True)


anyio.run(main)
'''


def run_child(script: Path, args: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_sigkill_mid_flush_loses_nothing(moto_url: str, tmp_path: Path) -> None:
    stream = create_stream(moto_url, shards=2)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    spool = tmp_path / "spool.db"
    args = [moto_url, stream, str(spool)]

    first = run_child(script, [*args, "post", str(EVENTS)])
    assert first.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 120
    try:
        for line in first.stdout:
            lines.append(line.strip())
            # Kill while the third batch (of 50) is being sent: a few milliseconds after
            # it starts, so that some of its records are usually put but unacknowledged.
            if line.startswith("SENDING 3 "):
                time.sleep(0.045)
                first.send_signal(signal.SIGKILL)
                break
            assert time.monotonic() < deadline, "the child took too long"
    finally:
        first.kill()
        _, err = first.communicate(timeout=30)
    assert "POSTED" in lines, f"child output: {lines}\n{err}"
    assert not any(line.startswith("DONE") for line in lines)
    assert first.returncode == -signal.SIGKILL
    acknowledged_before = len(read_stream(moto_url, stream))

    second = run_child(script, [*args, "finish", str(EVENTS)])
    out, err = second.communicate(timeout=180)
    assert second.returncode == 0, f"{out}\n{err}"
    resumed = next(int(x.split()[1]) for x in out.splitlines() if x.startswith("RESUMING"))
    assert out.splitlines()[-1] == "DONE 0"

    ids_by_seq: dict[int, set[str]] = defaultdict(set)
    records = read_stream(moto_url, stream)
    for record in records:
        event = orjson.loads(record["Data"])
        assert record["PartitionKey"] == event["user_id"]
        ids_by_seq[event["seq"]].add(event["event_id"])
    missing = sorted(set(range(EVENTS)) - set(ids_by_seq))
    duplicates = len(records) - len(ids_by_seq)
    print(
        f"\nspool crash: {EVENTS} events posted; killed with {acknowledged_before} records "
        f"in the stream and {resumed} still spooled; after restart {len(records)} records, "
        f"{len(ids_by_seq)} distinct events, {duplicates} duplicates, {len(missing)} missing"
    )
    assert missing == []
    assert all(len(ids) == 1 for ids in ids_by_seq.values())  # a duplicate keeps its id
    assert resumed >= EVENTS - acknowledged_before
