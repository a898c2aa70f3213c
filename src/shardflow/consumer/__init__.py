"""The consumer: every shard of a stream, resharding, checkpoints (see Consumer)."""

from __future__ import annotations

from .checkpoint import SHARD_END as SHARD_END
from .checkpoint import AssignmentListener as AssignmentListener
from .checkpoint import Checkpoint as Checkpoint
from .checkpoint import Checkpointer as Checkpointer
from .checkpoint import CheckpointSession as CheckpointSession
from .checkpoint import ConsumerScope as ConsumerScope
from .checkpoint import MemoryCheckpointer as MemoryCheckpointer
from .checkpoint import SQLiteCheckpointer as SQLiteCheckpointer
from .consumer import Consumer as Consumer
from .consumer import ConsumerStats as ConsumerStats
from .leases import DynamoDBLeases as DynamoDBLeases
from .shard_reader import ShardReader as ShardReader

__all__ = [
    "SHARD_END",
    "AssignmentListener",
    "Checkpoint",
    "CheckpointSession",
    "Checkpointer",
    "Consumer",
    "ConsumerScope",
    "ConsumerStats",
    "DynamoDBLeases",
    "MemoryCheckpointer",
    "SQLiteCheckpointer",
    "ShardReader",
]
