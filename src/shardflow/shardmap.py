"""Shards and hash keys, shared by the producer and the consumer.

A record's hash key is MD5(partition key) read as a 128-bit big-endian integer, or its
explicit hash key; the shard whose hash-key range holds it receives the record.
"""

from __future__ import annotations

from typing import Any

from . import _aws
from .models import Shard

__all__ = ["list_shards"]


async def list_shards(client: Any, stream: str) -> list[Shard]:
    """Every shard of ``stream`` (open and closed), following ListShards pagination.

    Raises :class:`errors.StreamNotFound` for a missing stream and other
    :class:`errors.AWSError` subclasses as translated by ``_aws``. Cancellation propagates.
    """
    shards: list[Shard] = []
    params: dict[str, Any] = dict(_aws.stream_params(stream))
    while True:
        page = await _aws.call(client, "list_shards", **params)
        shards.extend(Shard.from_api(item) for item in page.get("Shards", ()))
        token = page.get("NextToken")
        if not token:
            return shards
        # With NextToken, AWS rejects StreamName/StreamARN in the same request.
        params = {"NextToken": token}
