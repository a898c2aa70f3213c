"""Test support for enhanced fan-out: kinesis-mock (npm ``kinesis-local``) on 127.0.0.1.

kinesis-mock implements RegisterStreamConsumer, SubscribeToShard, UpdateShardCount and
ChildShards. ``make setup`` installs it into .tools/kinesis-mock. It binds 0.0.0.0 with no
option to change that, so it is started with a preload script that makes every listening
socket of its node process bind 127.0.0.1 instead.

Its SubscribeToShard stream starts without the ``initial-response`` event that AWS's JSON
protocol sends first: botocore refuses it ("First event was not of type
initial-response"); shardflow reads the event stream itself and accepts either.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import ROOT, Server, free_port, kinesis, wait_for_port

KINESIS_MOCK_DIR = Path(
    os.environ.get("SHARDFLOW_KINESIS_MOCK_DIR", ROOT / ".tools" / "kinesis-mock")
)
_MAIN = KINESIS_MOCK_DIR / "node_modules" / "kinesis-local" / "main.js"

_LOOPBACK = """\
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, '127.0.0.1');
  } else if (args[0] !== null && typeof args[0] === 'object' && args[0].host === undefined) {
    args[0] = Object.assign({}, args[0], { host: '127.0.0.1' });
  }
  return listen.apply(this, args);
};
"""


def start_kinesis_mock(**env: str) -> Server:
    """kinesis-mock on 127.0.0.1 (plain HTTP), stream and consumer changes taking ~0 s."""
    if not _MAIN.is_file():
        raise RuntimeError(
            f"kinesis-mock is not installed in {KINESIS_MOCK_DIR}; run `make setup` (it runs "
            "`npm install --prefix .tools/kinesis-mock kinesis-local`)"
        )
    folder = Path(tempfile.mkdtemp(prefix="kinesis-mock-"))
    preload = folder / "loopback.js"
    preload.write_text(_LOOPBACK)
    port, tls_port = free_port(), free_port()
    settings = {
        "KINESIS_MOCK_PLAIN_PORT": str(port),
        "KINESIS_MOCK_TLS_PORT": str(tls_port),
        "SHARD_LIMIT": "1000",
        "LOG_LEVEL": "WARN",
        "SHOULD_PERSIST_DATA": "false",
        "KINESIS_MOCK_CERT_PATH": str(_MAIN.parent / "server.json"),
        **{f"{op}_DURATION": "10ms" for op in (
            "CREATE_STREAM", "DELETE_STREAM", "REGISTER_STREAM_CONSUMER",
            "DEREGISTER_STREAM_CONSUMER", "MERGE_SHARDS", "SPLIT_SHARD",
            "UPDATE_SHARD_COUNT")},
        **env,
    }
    proc = subprocess.Popen(
        ["node", "-r", str(preload), str(_MAIN)],
        cwd=folder,
        env={**os.environ, **settings},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port, timeout=60)
    return Server("kinesis-mock", f"http://127.0.0.1:{port}", proc)


@pytest.fixture(scope="session")
def kinesis_mock_url() -> Iterator[str]:
    server = start_kinesis_mock()
    yield server.url
    server.stop()


def create_mock_stream(url: str, name: str, shards: int = 1) -> str:
    """Create ``name`` on kinesis-mock, wait until ACTIVE; return its ARN."""
    client = kinesis(url)
    client.create_stream(StreamName=name, ShardCount=shards)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        summary = client.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        if summary["StreamStatus"] == "ACTIVE":
            return str(summary["StreamARN"])
        time.sleep(0.05)
    raise RuntimeError(f"stream {name} not ACTIVE")


def consumers(url: str, stream_arn: str) -> list[dict[str, Any]]:
    """The stream's registered consumers (boto3, the referee)."""
    answer = kinesis(url).list_stream_consumers(StreamARN=stream_arn)
    return list(answer["Consumers"])
