"""The collector: tagged events, filters, outputs, buffering and a durable spool."""

from __future__ import annotations

from .buffered import BufferedOutput as BufferedOutput
from .buffered import BufferStats as BufferStats
from .collector import Collector as Collector
from .collector import CollectorStats as CollectorStats
from .collector import Filter as Filter
from .filters import add_fields as add_fields
from .filters import redact as redact
from .filters import sample as sample
from .outputs import Event as Event
from .outputs import FileOutput as FileOutput
from .outputs import KinesisOutput as KinesisOutput
from .outputs import Output as Output
from .outputs import StdoutOutput as StdoutOutput
from .tags import TagPattern as TagPattern
from .tags import validate_tag as validate_tag

__all__ = [
    "BufferStats",
    "BufferedOutput",
    "Collector",
    "CollectorStats",
    "Event",
    "FileOutput",
    "Filter",
    "KinesisOutput",
    "Output",
    "StdoutOutput",
    "TagPattern",
    "add_fields",
    "redact",
    "sample",
    "validate_tag",
]
