"""Test support: local servers in subprocesses, streams, and reading a stream back.

Used by conftest.py fixtures and directly by tests. Synchronous (boto3) on purpose: the
code under test is the async one; this is the independent referee.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
KINESALITE_DIR = Path(os.environ.get("SHARDFLOW_KINESALITE_DIR", ROOT / ".tools" / "kinesalite"))

_SAFE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_DROP_ENV = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_KINESIS",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def isolate_aws_environment() -> None:
    """Dummy credentials, a fixed region, no profile, no config file, no metadata service."""
    for name in _DROP_ENV:
        os.environ.pop(name, None)
    os.environ.update(_SAFE_ENV)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_moto() -> Server:
    """moto, single-threaded, via ``python -m shardflow local`` in its own process."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardflow", "local", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("http://127.0.0.1:"):
        proc.kill()
        raise RuntimeError(f"moto server did not start (printed {line!r})")
    port = int(line.rsplit(":", 1)[1])
    wait_for_port(port)
    return Server("moto", line, proc)


def start_kinesalite() -> Server:
    """kinesalite (npm, installed by `make` into .tools/kinesalite) on 127.0.0.1."""
    if not (KINESALITE_DIR / "node_modules" / "kinesalite").is_dir():
        raise RuntimeError(
            f"kinesalite is not installed in {KINESALITE_DIR}; run `make test` "
            "(it runs `npm install --prefix .tools/kinesalite kinesalite`)"
        )
    port = free_port()
    script = (
        "require('kinesalite')({shardLimit:1000,createStreamMs:0,deleteStreamMs:0,"
        f"updateStreamMs:0}}).listen({port},'127.0.0.1')"
    )
    proc = subprocess.Popen(
        ["node", "-e", script],
        cwd=KINESALITE_DIR,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return Server("kinesalite", f"http://127.0.0.1:{port}", proc)


def kinesis(url: str) -> Any:
    return boto3.client(
        "kinesis",
        endpoint_url=url,
        region_name="us-east-1",
        config=Config(retries={"max_attempts": 10, "mode": "standard"}),
    )


def create_stream(url: str, shards: int = 1, name: str | None = None) -> str:
    """Create a stream with ``shards`` shards and wait until it is ACTIVE."""
    name = name or unique_name("stream")
    client = kinesis(url)
    client.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"][
            "StreamStatus"
        ]
        if status == "ACTIVE":
            return name
        time.sleep(0.05)
    raise RuntimeError(f"stream {name} not ACTIVE after 30s")


def wait_active(url: str, name: str, timeout: float = 30.0) -> None:
    client = kinesis(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return
        time.sleep(0.05)
    raise RuntimeError(f"stream {name} not ACTIVE after {timeout}s")


def list_shards(url: str, name: str) -> list[dict[str, Any]]:
    client = kinesis(url)
    shards: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"StreamName": name}
    while True:
        page = client.list_shards(**kwargs)
        shards.extend(page["Shards"])
        token = page.get("NextToken")
        if not token:
            return shards
        kwargs = {"NextToken": token}


def read_stream(url: str, name: str) -> list[dict[str, Any]]:
    """Every record in every shard, shard by shard, in shard order (raw, not deaggregated).

    Each item has ShardId, SequenceNumber, PartitionKey, Data (bytes), and more.
    """
    client = kinesis(url)
    out: list[dict[str, Any]] = []
    for shard in list_shards(url, name):
        iterator = client.get_shard_iterator(
            StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=10000)
            for rec in page["Records"]:
                rec["ShardId"] = shard["ShardId"]
                out.append(rec)
            iterator = page.get("NextShardIterator")
            if not page["Records"] and page.get("MillisBehindLatest", 0) == 0:
                break
    return out
