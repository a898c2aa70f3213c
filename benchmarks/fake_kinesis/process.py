"""The fake as a process: the command line, and :func:`fake_kinesis` to run it from Python."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson

from .backend import KinesisFake
from .server import HOST, LIFETIME, serve
from .validation import MAX_RECORD_BYTES

__all__ = ["FakeKinesis", "fake_kinesis", "main", "start"]

ROOT = Path(__file__).resolve().parent.parent.parent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.fake_kinesis",
        description="A fast fake Kinesis on 127.0.0.1; prints its URL on the first line.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: any free port)")
    parser.add_argument("--shards", type=int, default=4, help="shards of auto-created streams")
    parser.add_argument("--store", action="store_true",
                        help="keep records for GetRecords (default: count only, flat memory)")
    parser.add_argument("--latency", type=float, default=0.0,
                        help="seconds added to every response (default 0)")
    parser.add_argument("--max-record-bytes", type=int, default=MAX_RECORD_BYTES,
                        help="largest data blob accepted (default 1 MiB)")
    parser.add_argument("--subscription-seconds", type=float, default=LIFETIME,
                        help="seconds a SubscribeToShard stream lasts (default 300, as AWS)")
    args = parser.parse_args(argv)
    if args.shards < 1 or args.latency < 0 or args.max_record_bytes < 1:
        parser.error("--shards and --max-record-bytes must be >= 1, --latency >= 0")
    fake = KinesisFake(shards=args.shards, store=args.store,
                       max_record_bytes=args.max_record_bytes)

    def announce(url: str) -> None:
        print(url, flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(fake, port=args.port, latency=args.latency, announce=announce,
                          subscription_seconds=args.subscription_seconds))
    return 0


class FakeKinesis:
    """A running fake endpoint process: ``url``, ``stats()``, ``reset()``, ``close()``."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.process = process

    def _request(self, method: str, path: str) -> dict[str, Any]:
        data = b"" if method == "POST" else None
        req = urllib.request.Request(self.url + path, method=method, data=data)
        with urllib.request.urlopen(req, timeout=30) as resp:
            result: dict[str, Any] = orjson.loads(resp.read())
            return result

    def stats(self) -> dict[str, Any]:
        """The fake's counters: ``requests``, ``operations`` (per operation),
        ``kinesis_records``, ``user_records`` (sub-records of KPL aggregates counted),
        ``bytes`` (data), ``rejected`` (requests, by reason), ``misrouted_user_records``
        (aggregate sub-records whose hash key is outside the aggregate's shard),
        ``read_records``, ``first_put_at`` / ``last_put_at`` (epoch seconds),
        ``cpu_seconds`` (the fake process's) and ``streams``."""
        return self._request("GET", "/_stats")

    def reset(self) -> None:
        """Forget every stream and zero the counters."""
        self._request("POST", "/_reset")

    def close(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start(
    shards: int = 4, *, store: bool = False, latency: float = 0.0, port: int = 0,
    max_record_bytes: int = MAX_RECORD_BYTES, subscription_seconds: float = LIFETIME,
) -> FakeKinesis:
    """Start the fake in its own process; returns once it listens. Call ``close()``.

    Raises RuntimeError if the process does not announce its URL.
    """
    cmd = [sys.executable, "-m", "benchmarks.fake_kinesis", "--port", str(port),
           "--shards", str(shards), "--latency", str(latency),
           "--max-record-bytes", str(max_record_bytes),
           "--subscription-seconds", str(subscription_seconds)]
    if store:
        cmd.append("--store")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(ROOT / "src"), env.get("PYTHONPATH", "")) if p
    )
    process = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    if not line.startswith(f"http://{HOST}:"):
        process.kill()
        process.wait()
        process.stdout.close()
        raise RuntimeError(f"fake Kinesis did not start (printed {line!r})")
    return FakeKinesis(line, process)


@contextlib.contextmanager
def fake_kinesis(
    shards: int = 4, *, store: bool = False, latency: float = 0.0, port: int = 0,
    max_record_bytes: int = MAX_RECORD_BYTES, subscription_seconds: float = LIFETIME,
) -> Iterator[FakeKinesis]:
    """Run the fake in a subprocess for the block; yields a :class:`FakeKinesis`.

    ``shards``: shards of streams created on first use; ``store``: keep records for
    GetRecords; ``latency``: seconds added to every answer; ``subscription_seconds``: how
    long a SubscribeToShard stream lasts (300, as on AWS).
    """
    fake = start(shards, store=store, latency=latency, port=port,
                 max_record_bytes=max_record_bytes, subscription_seconds=subscription_seconds)
    try:
        yield fake
    finally:
        fake.close()
