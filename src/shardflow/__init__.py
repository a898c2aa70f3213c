"""shardflow: an asyncio toolkit for streaming logs and events through Amazon Kinesis.

The names re-exported here are the whole public surface (see ``__all__``).
"""

from __future__ import annotations

import importlib as _importlib
from types import ModuleType as _ModuleType

from . import errors as errors
from ._core.aws import CredentialSource as CredentialSource
from .admin import create_stream as create_stream
from .admin import delete_stream as delete_stream
from .auth import CognitoCredentials as CognitoCredentials
from .auth import Logins as Logins
from .collector import BufferedOutput as BufferedOutput
from .collector import BufferStats as BufferStats
from .collector import Collector as Collector
from .collector import CollectorStats as CollectorStats
from .collector import Event as Event
from .collector import FileOutput as FileOutput
from .collector import Filter as Filter
from .collector import KinesisOutput as KinesisOutput
from .collector import Output as Output
from .collector import StdoutOutput as StdoutOutput
from .collector import add_fields as add_fields
from .collector import redact as redact
from .collector import sample as sample
from .collector.outputs import KeyFunc as KeyFunc
from .collector.outputs import ProducerFactory as ProducerFactory
from .collector.outputs import Putter as Putter
from .collector.policies import DropHook as DropHook
from .collector.policies import Overflow as Overflow
from .consumer import AssignmentListener as AssignmentListener
from .consumer import Checkpoint as Checkpoint
from .consumer import Checkpointer as Checkpointer
from .consumer import CheckpointSession as CheckpointSession
from .consumer import Consumer as Consumer
from .consumer import ConsumerScope as ConsumerScope
from .consumer import ConsumerStats as ConsumerStats
from .consumer import DynamoDBLeases as DynamoDBLeases
from .consumer import MemoryCheckpointer as MemoryCheckpointer
from .consumer import ShardReader as ShardReader
from .consumer import SQLiteCheckpointer as SQLiteCheckpointer
from .lambda_events import lambda_records as lambda_records
from .limits import KinesisLimits as KinesisLimits
from .local import local_endpoint as local_endpoint
from .models import Attempt as Attempt
from .models import PutResult as PutResult
from .models import Record as Record
from .models import Shard as Shard
from .producer import Producer as Producer
from .producer import ProducerStats as ProducerStats
from .sinks import Aggregation as Aggregation
from .sinks import Durable as Durable
from .sinks import S3Sink as S3Sink
from .sinks import S3SinkStats as S3SinkStats
from .sinks import Sink as Sink
from .sinks import TumblingWindows as TumblingWindows
from .sinks import Window as Window

__version__ = "0.1.0"


def __getattr__(name: str) -> _ModuleType:
    """``shardflow.testing`` is imported on first use (it needs aiohttp's server)."""
    if name == "testing":
        return _importlib.import_module(".testing", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Aggregation",
    "AssignmentListener",
    "Attempt",
    "BufferStats",
    "BufferedOutput",
    "Checkpoint",
    "CheckpointSession",
    "Checkpointer",
    "CognitoCredentials",
    "Collector",
    "CollectorStats",
    "Consumer",
    "ConsumerScope",
    "ConsumerStats",
    "CredentialSource",
    "DropHook",
    "Durable",
    "DynamoDBLeases",
    "Event",
    "FileOutput",
    "Filter",
    "KeyFunc",
    "KinesisLimits",
    "KinesisOutput",
    "Logins",
    "MemoryCheckpointer",
    "Output",
    "Overflow",
    "Producer",
    "ProducerFactory",
    "ProducerStats",
    "PutResult",
    "Putter",
    "Record",
    "S3Sink",
    "S3SinkStats",
    "SQLiteCheckpointer",
    "Shard",
    "ShardReader",
    "Sink",
    "StdoutOutput",
    "TumblingWindows",
    "Window",
    "add_fields",
    "create_stream",
    "delete_stream",
    "errors",
    "lambda_records",
    "local_endpoint",
    "redact",
    "sample",
    "testing",
]
