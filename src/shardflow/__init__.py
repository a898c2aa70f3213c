"""shardflow: an asyncio toolkit for streaming logs and events through Amazon Kinesis.

The names re-exported here are the whole public surface (see ``__all__``).
"""

from __future__ import annotations

from . import errors as errors
from .limits import KinesisLimits as KinesisLimits
from .local import local_endpoint as local_endpoint
from .models import Attempt as Attempt
from .models import PutResult as PutResult
from .models import Record as Record
from .models import Shard as Shard
from .producer import Producer as Producer
from .producer import ProducerStats as ProducerStats

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "KinesisLimits",
    "Producer",
    "ProducerStats",
    "PutResult",
    "Record",
    "Shard",
    "errors",
    "local_endpoint",
]
