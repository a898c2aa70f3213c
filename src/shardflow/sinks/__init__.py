"""Sinks behind the consumer: S3 archiving and event-time windows.

:class:`Sink` is the protocol ``Consumer.pipe`` drives (see :mod:`shardflow.sinks.base`);
:class:`S3Sink` implements it. :class:`TumblingWindows` aggregates events by event time.
"""

from __future__ import annotations

from .base import Durable as Durable
from .base import Sink as Sink
from .base import pipe as pipe
from .s3 import S3Sink as S3Sink
from .s3 import S3SinkStats as S3SinkStats
from .s3 import encode_record as encode_record
from .windows import Aggregation as Aggregation
from .windows import TumblingWindows as TumblingWindows
from .windows import Window as Window

__all__ = [
    "Aggregation",
    "Durable",
    "S3Sink",
    "S3SinkStats",
    "Sink",
    "TumblingWindows",
    "Window",
    "encode_record",
    "pipe",
]
