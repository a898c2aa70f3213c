"""A fast fake Kinesis endpoint for benchmarks, run as a separate process.

    python -m benchmarks.fake_kinesis --port 0 --shards 4 [--store] [--latency 0.02]

prints its URL (``http://127.0.0.1:PORT``) on the first line of standard output and serves
the AWS JSON 1.1 protocol (``X-Amz-Target: Kinesis_20131202.<Op>``) on 127.0.0.1 only,
from one thread: a hand-written asyncio HTTP/1.1 server (keep-alive, Content-Length
bodies) in front of an in-memory Kinesis. Its CPU is not the client's.

- Any stream name (or StreamARN) exists on first use with ``--shards`` shards splitting
  [0, 2**128) evenly; CreateStream picks another count. Signatures are not checked.
- PutRecords / PutRecord validate like AWS: 1 to 500 records, data up to 1 MiB, partition
  key 1 to 256 characters, ExplicitHashKey a decimal below 2**128, base64 data, data plus
  partition keys up to 5 MiB per request. Errors have AWS's JSON error shape (HTTP 400,
  ``{"__type": ..., "message": ...}`` and ``x-amzn-ErrorType``). Entries are routed by
  MD5(partition key) or ExplicitHashKey and get increasing 56-digit sequence numbers.
- ListShards, DescribeStream(Summary), ListStreams, CreateStream, DeleteStream,
  GetShardIterator (all five types) and GetRecords; SplitShard (at once: the shard
  closes, GetRecords and SubscribeToShard end it with ChildShards, as AWS does).
  Records are kept for GetRecords only with ``--store`` (without it memory stays flat and
  GetRecords returns nothing).
- Enhanced fan-out: Register/Describe/List/DeregisterStreamConsumer, and SubscribeToShard
  answered in AWS's binary event-stream framing (an initial-response event, then an event
  at once, after every put to the shard, and every second when idle; 5 minutes each).
  Events carry stored records, so fan-out needs ``--store``.
- It counts Kinesis records and USER records: a KPL aggregate counts its sub-records
  (decoded with ``shardflow.aggregation``, only when the magic matches).
- ``GET /_stats`` returns the counters (JSON); ``POST /_reset`` forgets streams and counters.
- ``--latency S`` delays every answer by S seconds (a network round trip).

From Python::

    from benchmarks.fake_kinesis import fake_kinesis

    with fake_kinesis(shards=4) as fake:
        ... fake.url ...
        fake.stats()["user_records"]
        fake.reset()
"""

from __future__ import annotations

from .backend import KinesisFake
from .process import FakeKinesis, fake_kinesis, main, start
from .streams import hash_key
from .validation import KinesisError

__all__ = ["FakeKinesis", "KinesisError", "KinesisFake", "fake_kinesis", "hash_key", "main",
           "start"]
