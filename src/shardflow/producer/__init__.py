"""The asyncio Kinesis producer (see :class:`Producer`).

The modules inside are private; a record goes one way through them: ``_intake`` →
``_ledger`` → ``_accumulator`` (with ``_packing``) → ``_sender`` → ``_request`` →
``_transport``.
"""

from __future__ import annotations

from ._producer import RECORD_OVERHEAD as RECORD_OVERHEAD
from ._producer import Producer as Producer
from ._producer import ProducerStats as ProducerStats
from ._request import WRONG_SHARD as WRONG_SHARD

__all__ = ["RECORD_OVERHEAD", "WRONG_SHARD", "Producer", "ProducerStats"]
