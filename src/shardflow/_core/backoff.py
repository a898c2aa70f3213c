"""The one jittered backoff of the package (private): full jitter, as AWS recommends.

Every retry loop (the producer's entries and its start, the consumer's calls, the
BufferedOutput, the S3 sink) waits ``full_jitter(n, base, cap)`` seconds before try
``n + 1``: uniform in ``[0, min(cap, base * 2**n)]``, so that clients that failed together
do not retry together.
"""

from __future__ import annotations

import random

__all__ = ["full_jitter"]

_random = random.random


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait after failure number ``attempt`` (0 for the first): uniform in
    ``[0, min(cap, base * 2**attempt)]``."""
    return _random() * min(cap, base * (1 << min(max(attempt, 0), 30)))
