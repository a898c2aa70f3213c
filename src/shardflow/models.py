"""Value types shared by the producer and the consumer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import orjson

__all__ = ["Attempt", "PutResult", "Record", "Shard"]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at delivering a record.

    ``error_code`` is None for the successful try; otherwise the AWS error code of the
    entry or request (``ProvisionedThroughputExceededException``, ``InternalFailure``,
    ``ServiceUnavailable``, ``EndpointUnreachable`` ...). ``started_at`` is wall-clock epoch
    seconds; ``duration`` is seconds.
    """

    error_code: str | None
    error_message: str | None
    started_at: float
    duration: float

    @property
    def ok(self) -> bool:
        return self.error_code is None


@dataclass(frozen=True, slots=True)
class PutResult:
    """Where a record landed. ``attempts`` holds every try, the successful one last.

    ``sub_sequence_number`` is the record's index inside a KPL aggregate, or None when the
    record was sent on its own.
    """

    shard_id: str
    sequence_number: str
    sub_sequence_number: int | None
    attempts: tuple[Attempt, ...]


_new = object.__new__
_set_result_fields = tuple(
    getattr(PutResult, name).__set__
    for name in ("shard_id", "sequence_number", "sub_sequence_number", "attempts")
)


def _put_result(
    shard_id: str,
    sequence_number: str,
    sub_sequence_number: int | None,
    attempts: tuple[Attempt, ...],
) -> PutResult:
    """``PutResult(...)`` as the producer builds one per record read: the same frozen value,
    its slots filled through their descriptors instead of the generated ``__init__``'s
    four ``object.__setattr__`` calls (about 40% less)."""
    result = _new(PutResult)
    set_shard, set_sequence, set_sub, set_attempts = _set_result_fields
    set_shard(result, shard_id)
    set_sequence(result, sequence_number)
    set_sub(result, sub_sequence_number)
    set_attempts(result, attempts)
    return result


class Record(NamedTuple):
    """A user record read from a stream (deaggregated when it came in a KPL aggregate).

    Immutable, compared and hashed by value. A named tuple, as kafka-python's
    ``ConsumerRecord``: the consumer builds one per user record, and a tuple is built in
    C. ``record._replace(data=...)`` makes a changed copy.
    """

    data: bytes
    partition_key: str
    sequence_number: str
    sub_sequence_number: int | None
    shard_id: str
    arrival_time: datetime
    explicit_hash_key: str | None = None

    def json(self) -> Any:
        """``data`` parsed as JSON (raises ``orjson.JSONDecodeError``, a ValueError)."""
        return orjson.loads(self.data)

    @property
    def position(self) -> tuple[int, int]:
        """Sortable position within the shard: (sequence number, sub-sequence or -1)."""
        return _position(self.sequence_number, self.sub_sequence_number)


def _position(sequence_number: str, sub_sequence_number: int | None) -> tuple[int, int]:
    """The one rule for a record's sortable position within its shard (records, their
    buffered rows and checkpoints): (sequence number, sub-sequence number or -1)."""
    return (int(sequence_number), -1 if sub_sequence_number is None else sub_sequence_number)


@dataclass(frozen=True, slots=True)
class Shard:
    """A shard as ListShards describes it."""

    shard_id: str
    starting_hash_key: int
    ending_hash_key: int
    parent_shard_id: str | None = None
    adjacent_parent_shard_id: str | None = None
    starting_sequence_number: str | None = None
    ending_sequence_number: str | None = None

    @property
    def is_open(self) -> bool:
        """True while the shard accepts writes (it has no ending sequence number)."""
        return self.ending_sequence_number is None

    @property
    def parent_ids(self) -> tuple[str, ...]:
        """The shard's parents (0, 1 after a split, 2 after a merge)."""
        return tuple(p for p in (self.parent_shard_id, self.adjacent_parent_shard_id) if p)

    def contains(self, hash_key: int) -> bool:
        """True if ``hash_key`` falls in this shard's hash-key range."""
        return self.starting_hash_key <= hash_key <= self.ending_hash_key

    @classmethod
    def from_api(cls, item: dict[str, Any]) -> Shard:
        """Build from one entry of a ListShards ``Shards`` list."""
        hash_range = item["HashKeyRange"]
        seq_range = item.get("SequenceNumberRange", {})
        return cls(
            shard_id=item["ShardId"],
            starting_hash_key=int(hash_range["StartingHashKey"]),
            ending_hash_key=int(hash_range["EndingHashKey"]),
            parent_shard_id=item.get("ParentShardId"),
            adjacent_parent_shard_id=item.get("AdjacentParentShardId"),
            starting_sequence_number=seq_range.get("StartingSequenceNumber"),
            ending_sequence_number=seq_range.get("EndingSequenceNumber"),
        )
