"""SIGKILL of a plain consumer process (SQLiteCheckpointer) in the middle of a stream;
a new process with the same checkpoint file finishes it. Nothing is lost; the only
repeats are records the killed process delivered after its last acknowledged checkpoint
(per shard), and they are counted.

The same for a consumer in a lease group is tests/reliability/test_lease_kill.py; for a
collector process with a spool, tests/reliability/test_spool_crash.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from support import ROOT, create_stream
from support_consumer import numbered, put_records
from support_reliability import report

pytestmark = pytest.mark.slow

CHILD = r"""
import sys

import anyio

from shardflow import Consumer, SQLiteCheckpointer

endpoint, stream, path, every = sys.argv[1:5]
every = int(every)


async def main():
    consumer = Consumer(
        stream, endpoint_url=endpoint, app_name="app", checkpointer=SQLiteCheckpointer(path),
        poll_interval=0.2, get_records_limit=50,
    )
    async with consumer:
        print("STARTED", flush=True)
        n = 0
        async for record in consumer:
            n += 1
            print("GOT", record.shard_id, record.data.decode(), flush=True)
            if n % every == 0:
                await consumer.checkpoint(record)
                print("CKPT", record.shard_id, record.data.decode(), flush=True)


anyio.run(main)
"""


class Child:
    """The consumer script in its own process; its stdout lines collected by a thread."""

    def __init__(self, script: Path, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
        self.proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.lines: list[tuple[str, ...]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(tuple(line.split()))

    def of(self, kind: str) -> list[tuple[str, str]]:
        return [(parts[1], parts[2]) for parts in list(self.lines) if parts[0] == kind]

    def wait_for(self, predicate: object, within: float) -> None:
        deadline = time.monotonic() + within
        while not predicate():  # type: ignore[operator]
            if self.proc.poll() is not None:
                _, err = self.proc.communicate()
                raise AssertionError(f"the consumer exited ({self.proc.returncode}):\n{err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {within}s: {self.lines[-3:]}")
            time.sleep(0.02)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


def test_sigkill_of_a_consumer_mid_stream_loses_nothing(
    kinesalite_url: str, tmp_path: Path
) -> None:
    url = kinesalite_url
    stream = create_stream(url, shards=3)
    script = tmp_path / "consumer.py"
    script.write_text(CHILD)
    args = (url, stream, str(tmp_path / "checkpoints.db"), "7")
    first_items = numbered(3000, keys=31, prefix="a")
    put_records(url, stream, first_items)

    victim = Child(script, *args)
    try:
        victim.wait_for(lambda: len(victim.of("GOT")) >= 900, within=60)
        victim.kill()
    finally:
        victim.stop()
    assert victim.proc.returncode == -signal.SIGKILL
    delivered_before = victim.of("GOT")
    acknowledged = victim.of("CKPT")
    assert acknowledged, "the victim never checkpointed"
    assert len(delivered_before) < len(first_items)  # killed mid-stream

    second_items = numbered(600, keys=31, prefix="b")
    put_records(url, stream, second_items)
    everything = {d.decode() for _, d in first_items + second_items}
    heir = Child(script, *args)
    try:
        before = {d for _, d in delivered_before}
        heir.wait_for(lambda: before | {d for _, d in heir.of("GOT")} >= everything, within=60)
        settled = len(heir.lines)
        time.sleep(0.6)  # three polls: nothing more may come
        extra = len(heir.lines) - settled
    finally:
        heir.stop()

    counts = Counter(d for _, d in delivered_before + heir.of("GOT"))
    repeats = sum(counts.values()) - len(counts)
    # What may repeat: per shard, what the victim delivered after its last acknowledged
    # checkpoint (a checkpoint in flight at the kill may have landed unreported).
    unacknowledged: set[str] = set()
    for shard in {s for s, _ in delivered_before}:
        mine = [d for s, d in delivered_before if s == shard]
        done = [d for s, d in acknowledged if s == shard]
        unacknowledged.update(mine[mine.index(done[-1]) + 1 :] if done else mine)
    report(
        "SIGKILL of a consumer (SQLiteCheckpointer, kinesalite, 3 shards)",
        records=len(everything), delivered_before_kill=len(delivered_before),
        checkpoints_acknowledged=len(acknowledged), delivered_after_restart=len(heir.of("GOT")),
        repeats=repeats, unacknowledged=len(unacknowledged),
        lost=len(everything - set(counts)),
    )
    assert set(counts) == everything
    assert extra == 0
    assert {d for d, n in counts.items() if n > 1} <= unacknowledged
    assert max(counts.values()) <= 2
