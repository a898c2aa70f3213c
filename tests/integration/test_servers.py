"""The test servers themselves: both endpoints answer, moto is single-threaded-safe."""

from __future__ import annotations

import socket
import subprocess
import sys

from support import create_stream, kinesis, read_stream


def test_stream_round_trip(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    client = kinesis(kinesis_url)
    for i in range(20):
        client.put_record(StreamName=name, Data=f"r{i}".encode(), PartitionKey=f"k{i}")
    records = read_stream(kinesis_url, name)
    assert sorted(r["Data"] for r in records) == sorted(f"r{i}".encode() for i in range(20))


# A TLS 1.2 ClientHello's first bytes, as `curl https://...` or an https endpoint_url sends.
CLIENT_HELLO = bytes.fromhex("16030100a5010000a10303") + bytes(range(32)) + b"\x00\x00\x02\x13\x01"


def _ask(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(payload)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer


def test_local_answers_garbage_and_tls_with_400_and_one_log_line() -> None:
    """`shardflow local` answers what is not HTTP with a 400 and logs one line for it,
    then goes on serving (it serves one connection at a time)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardflow", "local", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        port = int(url.rsplit(":", 1)[1])
        tls = _ask(port, CLIENT_HELLO)
        garbage = _ask(port, b"\x00\x01garbage\xff here\r\n\r\n")
        bad_version = _ask(port, b"GET / HTTP/9\r\n\r\n")
        assert tls.startswith(b"HTTP/1.0 400 "), tls[:80]
        assert b"use http://, not https://" in tls
        assert garbage.startswith(b"HTTP/1.0 400 "), garbage[:80]
        assert bad_version.startswith(b"HTTP/1.0 400 "), bad_version[:80]
        name = create_stream(url, shards=1)  # still serving
        assert kinesis(url).describe_stream_summary(StreamName=name)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    lines = stderr.splitlines()
    assert "Traceback" not in stderr
    assert len(lines) == 3, stderr
    assert "rejected a TLS connection from 127.0.0.1" in lines[0]
    assert all(line.startswith("shardflow.local: WARNING: rejected a") for line in lines)
