"""Kinesis Data Streams service limits, as one frozen value."""

from __future__ import annotations

from dataclasses import dataclass

from ._core.validate import check_int

__all__ = ["KinesisLimits"]

KiB = 1024
MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class KinesisLimits:
    """The limits shardflow packs requests and paces shards against.

    Defaults are AWS's documented limits. A :class:`~shardflow.Producer` given no
    ``limits`` reads the stream's ``MaxRecordSizeInKiB`` (1 to 10 MiB, in
    DescribeStreamSummary) when the endpoint reports it and uses it as
    ``max_record_bytes``; given ``limits``, it uses them as they are. A record larger
    than ``max_batch_bytes`` (a request) is sent in a request of its own.
    """

    max_batch_records: int = 500
    """Records per PutRecords request."""
    max_batch_bytes: int = 5 * MiB
    """Bytes per PutRecords request: data plus partition keys of every entry."""
    max_record_bytes: int = 1 * MiB
    """Bytes per record: data plus partition key."""
    max_partition_key_chars: int = 256
    """Unicode characters per partition key."""
    shard_write_records_per_s: int = 1000
    """Records written per second per shard."""
    shard_write_bytes_per_s: int = 1 * MiB
    """Bytes written per second per shard."""
    shard_read_calls_per_s: int = 5
    """GetRecords calls per second per shard."""
    shard_read_bytes_per_s: int = 2 * MiB
    """Bytes read per second per shard."""
    max_get_records: int = 10_000
    """Records per GetRecords response."""

    def __post_init__(self) -> None:
        checks = {
            "max_batch_records": (self.max_batch_records, 1, 500),
            "max_batch_bytes": (self.max_batch_bytes, 1, 10 * MiB),
            "max_record_bytes": (self.max_record_bytes, 1, 10 * MiB),
            "max_partition_key_chars": (self.max_partition_key_chars, 1, 256),
            "shard_write_records_per_s": (self.shard_write_records_per_s, 1, None),
            "shard_write_bytes_per_s": (self.shard_write_bytes_per_s, 1, None),
            "shard_read_calls_per_s": (self.shard_read_calls_per_s, 1, None),
            "shard_read_bytes_per_s": (self.shard_read_bytes_per_s, 1, None),
            "max_get_records": (self.max_get_records, 1, 10_000),
        }
        for name, (value, low, high) in checks.items():
            check_int(f"KinesisLimits.{name}", value, low, high)
