"""A reference reader that applies the KCL's record rules as its Java sources state them,
independently of shardflow's Consumer and codec: what a KCL application would see.

It reads a stream over HTTP with plain boto3 calls (ListShards, GetShardIterator at
TRIM_HORIZON, GetRecords) and turns the raw records into user records by these rules of
amazon-kinesis-client (software.amazon.kinesis):

- ``retrieval.AggregatorUtil.deaggregate``: a record is an aggregate when its data starts
  with the magic bytes F3 89 9A C2 and more than 16 bytes follow; the last 16 bytes must
  be the MD5 of the protobuf message between (``calculateTailCheck``), and the message
  must parse as ``Messages.AggregatedRecord``; if either check fails the record is handed
  over raw, as it is. Each sub-record's *effective hash key* (``effectiveHashKey``) is its
  explicit hash key if it has one, else the MD5 of its partition key's UTF-8 bytes read
  as an unsigned big-endian integer; when any falls outside the shard's
  [StartingHashKey, EndingHashKey], the sub-records already taken from that aggregate are
  removed and the rest skipped: the WHOLE aggregate is dropped. An exception while
  reading sub-records (a bad table index, an explicit hash key that is not a number)
  stops the aggregate there, keeping what was taken before. Sub-sequence numbers count
  from 0 within the aggregate.
- ``lifecycle.ProcessTask.filterAndGetMaxExtendedSequenceNumber`` with
  ``retrieval.kpl.ExtendedSequenceNumber.compareTo``: after a restart from a checkpoint
  (sequence number, sub-sequence number), records whose (sequence number, sub-sequence
  number) is <= the checkpoint's are removed (a plain record's sub-sequence number is
  0; ``retrieval.IteratorBuilder.request`` starts at AT_SEQUENCE_NUMBER of the
  checkpoint), so reading resumes at sub-sequence + 1 inside an aggregate.

The protobuf is parsed with aws-kinesis-agg's generated ``messages_pb2`` (the KPL's own
``messages.proto``), not with shardflow's parser.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aws_kinesis_agg import deaggregator  # (puts its generated modules on sys.path)
from google.protobuf.message import DecodeError

from support import kinesis, list_shards

__all__ = ["KclRecord", "after_checkpoint", "deaggregate", "kcl_read", "read_with_kcl_rules"]

MAGIC = bytes([0xF3, 0x89, 0x9A, 0xC2])  # AggregatorUtil.AGGREGATED_RECORD_MAGIC
DIGEST_SIZE = 16  # AggregatorUtil.DIGEST_SIZE (MD5)
messages_pb2: Any = deaggregator.messages_pb2


@dataclass(frozen=True, slots=True)
class KclRecord:
    """One record as a KCL record processor receives it (a KinesisClientRecord)."""

    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    """0 for a plain record, as the KCL sets it."""
    aggregated: bool
    partition_key: str
    explicit_hash_key: str | None
    data: bytes

    @property
    def where(self) -> tuple[str, str, int | None]:
        """(shard id, sequence number, sub-sequence number or None for a plain record):
        how a shardflow PutResult names the record."""
        sub = self.sub_sequence_number if self.aggregated else None
        return self.shard_id, self.sequence_number, sub


def _effective_hash_key(partition_key: str, explicit_hash_key: str | None) -> int:
    """AggregatorUtil.effectiveHashKey (``new BigInteger(explicitHashKey)`` raises on a
    non-number, as Java's NumberFormatException)."""
    if explicit_hash_key is None:
        return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")
    return int(explicit_hash_key)


def deaggregate(
    shard_id: str,
    records: Iterable[Mapping[str, Any]],
    starting_hash_key: int,
    ending_hash_key: int,
) -> list[KclRecord]:
    """AggregatorUtil.deaggregate over GetRecords' raw records of one shard."""
    result: list[KclRecord] = []
    for r in records:
        data = bytes(r["Data"])
        raw = KclRecord(shard_id, r["SequenceNumber"], 0, False, r["PartitionKey"],
                        r.get("ExplicitHashKey"), data)
        if data[: len(MAGIC)] != MAGIC or len(data) - len(MAGIC) <= DIGEST_SIZE:
            result.append(raw)
            continue
        message, digest = data[len(MAGIC) : -DIGEST_SIZE], data[-DIGEST_SIZE:]
        if hashlib.md5(message).digest() != digest:
            result.append(raw)  # not an aggregate after all: handed over as it is
            continue
        aggregated = messages_pb2.AggregatedRecord()
        try:
            aggregated.ParseFromString(message)
        except DecodeError:  # InvalidProtocolBufferException
            result.append(raw)
            continue
        pks = list(aggregated.partition_key_table)
        ehks = list(aggregated.explicit_hash_key_table)
        taken = 0
        try:
            for sub, mr in enumerate(aggregated.records):
                partition_key = pks[mr.partition_key_index]
                explicit = (
                    ehks[mr.explicit_hash_key_index]
                    if mr.HasField("explicit_hash_key_index")
                    else None
                )
                value = _effective_hash_key(partition_key, explicit)
                if value < starting_hash_key or value > ending_hash_key:
                    del result[len(result) - taken :]  # the whole aggregate goes
                    break
                taken += 1
                result.append(KclRecord(shard_id, r["SequenceNumber"], sub, True,
                                        partition_key, explicit, bytes(mr.data)))
        except (IndexError, ValueError):  # logged by the KCL; what was taken stays
            continue
    return result


def after_checkpoint(
    records: Sequence[KclRecord], sequence_number: str, sub_sequence_number: int | None
) -> list[KclRecord]:
    """What a record processor gets after a restart from a checkpoint: records whose
    extended sequence number is <= the checkpoint's are removed
    (ProcessTask.filterAndGetMaxExtendedSequenceNumber; a missing sub-sequence number is
    0, as ExtendedSequenceNumber's constructor makes it)."""
    checkpoint = (int(sequence_number), sub_sequence_number or 0)
    return [r for r in records if (int(r.sequence_number), r.sub_sequence_number) > checkpoint]


def kcl_read(url: str, stream: str) -> list[KclRecord]:
    """Every record a KCL application reading ``stream`` from TRIM_HORIZON sees, shard by
    shard (each deaggregated against its own shard's hash-key range). Blocking (boto3)."""
    client = kinesis(url)
    out: list[KclRecord] = []
    for shard in list_shards(url, stream):
        low = int(shard["HashKeyRange"]["StartingHashKey"])
        high = int(shard["HashKeyRange"]["EndingHashKey"])
        iterator = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        empty = 0
        while iterator and empty < 2:
            page = client.get_records(ShardIterator=iterator, Limit=10000)
            out += deaggregate(shard["ShardId"], page["Records"], low, high)
            iterator = page.get("NextShardIterator")
            empty = 0 if page["Records"] else empty + 1
    return out


async def read_with_kcl_rules(url: str, stream: str) -> list[KclRecord]:
    """:func:`kcl_read` in a worker thread."""
    import anyio

    return await anyio.to_thread.run_sync(kcl_read, url, stream)
