"""shardflow: an asyncio toolkit for streaming logs and events through Amazon Kinesis.

The names re-exported here are the whole public surface (see ``__all__``).
"""

from __future__ import annotations

from . import errors as errors
from . import testing as testing
from .auth import CognitoCredentials as CognitoCredentials
from .collector import BufferedOutput as BufferedOutput
from .collector import Collector as Collector
from .collector import FileOutput as FileOutput
from .collector import KinesisOutput as KinesisOutput
from .collector import StdoutOutput as StdoutOutput
from .consumer import Checkpoint as Checkpoint
from .consumer import Checkpointer as Checkpointer
from .consumer import Consumer as Consumer
from .consumer import DynamoDBLeases as DynamoDBLeases
from .consumer import MemoryCheckpointer as MemoryCheckpointer
from .consumer import ShardReader as ShardReader
from .consumer import SQLiteCheckpointer as SQLiteCheckpointer
from .limits import KinesisLimits as KinesisLimits
from .local import local_endpoint as local_endpoint
from .models import Attempt as Attempt
from .models import PutResult as PutResult
from .models import Record as Record
from .models import Shard as Shard
from .producer import Producer as Producer
from .producer import ProducerStats as ProducerStats
from .sinks import Aggregation as Aggregation
from .sinks import S3Sink as S3Sink
from .sinks import TumblingWindows as TumblingWindows
from .sinks import Window as Window

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "Attempt",
    "BufferedOutput",
    "Checkpoint",
    "Checkpointer",
    "CognitoCredentials",
    "Collector",
    "Consumer",
    "DynamoDBLeases",
    "FileOutput",
    "KinesisLimits",
    "KinesisOutput",
    "MemoryCheckpointer",
    "Producer",
    "ProducerStats",
    "PutResult",
    "Record",
    "S3Sink",
    "SQLiteCheckpointer",
    "Shard",
    "ShardReader",
    "StdoutOutput",
    "TumblingWindows",
    "Window",
    "errors",
    "local_endpoint",
    "testing",
]
