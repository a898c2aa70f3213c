"""The asyncio Kinesis producer (see :class:`Producer`)."""

from __future__ import annotations

from .producer import Producer as Producer
from .producer import ProducerStats as ProducerStats

__all__ = ["Producer", "ProducerStats"]
