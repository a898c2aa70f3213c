"""The test servers themselves: both endpoints answer, moto is single-threaded-safe."""

from __future__ import annotations

from support import create_stream, kinesis, read_stream


def test_stream_round_trip(kinesis_url: str) -> None:
    name = create_stream(kinesis_url, shards=2)
    client = kinesis(kinesis_url)
    for i in range(20):
        client.put_record(StreamName=name, Data=f"r{i}".encode(), PartitionKey=f"k{i}")
    records = read_stream(kinesis_url, name)
    assert sorted(r["Data"] for r in records) == sorted(f"r{i}".encode() for i in range(20))
