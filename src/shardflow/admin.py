"""Creating and deleting streams: what a first program, a test or a demo needs.

Production streams are usually made by infrastructure code (CloudFormation, Terraform,
``aws kinesis create-stream``); these helpers are for everything else, and they resolve
the region exactly as :class:`~shardflow.Producer` and :class:`~shardflow.Consumer` do, so
that what one creates the others find::

    from shardflow import create_stream, delete_stream, local_endpoint

    with local_endpoint() as url:
        await create_stream("logs", shard_count=2, endpoint_url=url)
        ...
        await delete_stream("logs", endpoint_url=url)
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import anyio

from . import errors
from ._core import aws as _aws
from ._core import resources as _resources
from ._core.aws import CredentialSource
from ._core.validate import check_int, check_number, shown

__all__ = ["create_stream", "delete_stream"]

_MAX_SHARDS = 100_000
_POLL = 0.1


def _check(
    stream: object, max_wait: object, endpoint_url: object, region_name: object
) -> float:
    if not isinstance(stream, str) or not stream:
        raise TypeError(f"stream must be a non-empty stream name or ARN, got {shown(stream)}")
    _aws.stream_params(stream)
    seconds = check_number("max_wait", max_wait, finite=False, unit="seconds")
    _aws.check_endpoint(endpoint_url, region_name)
    return seconds


async def create_stream(
    stream: str,
    *,
    shard_count: int = 1,
    exist_ok: bool = False,
    max_wait: float = 120.0,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    client: Any = None,
    credentials: CredentialSource | None = None,
) -> None:
    """Create a provisioned stream of ``shard_count`` shards and wait until it is ACTIVE.

    ``exist_ok=True`` accepts a stream that exists already (and waits for it to be
    ACTIVE). Connection options as for :class:`~shardflow.Producer`.

    Raises :class:`errors.ResourceInUse` if the stream exists (unless ``exist_ok``),
    :class:`errors.LimitExceeded` (too many shards for the account),
    :class:`errors.RequestTimeout` if it is not ACTIVE within ``max_wait`` seconds, other
    :class:`errors.AWSError` subclasses; TypeError/ValueError for bad options. Cancelled
    after the request was sent, the stream may exist.
    """
    seconds = _check(stream, max_wait, endpoint_url, region_name)
    if stream.startswith("arn:"):
        raise ValueError(f"create_stream takes a stream name, not an ARN: {stream!r}")
    check_int("shard_count", shard_count, 1, _MAX_SHARDS)
    async with AsyncExitStack() as stack:
        kinesis = await _aws.open_client(
            stack,
            "kinesis",
            endpoint_url=endpoint_url,
            region_name=region_name,
            client=client,
            credentials=credentials,
        )
        try:
            await _aws.call(kinesis, "create_stream", StreamName=stream, ShardCount=shard_count)
        except errors.ResourceInUse:
            if not exist_ok:
                raise
        await _resources.wait_stream_active(kinesis, stream, within=seconds)


async def delete_stream(
    stream: str,
    *,
    missing_ok: bool = False,
    max_wait: float = 120.0,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    client: Any = None,
    credentials: CredentialSource | None = None,
) -> None:
    """Delete a stream (with its enhanced fan-out consumers) and wait until it is gone.

    ``missing_ok=True`` accepts a stream that does not exist. Connection options as for
    :class:`~shardflow.Producer`.

    Raises :class:`errors.StreamNotFound` (unless ``missing_ok``),
    :class:`errors.RequestTimeout` if it still exists after ``max_wait`` seconds, other
    :class:`errors.AWSError` subclasses; TypeError/ValueError for bad options.
    Cancelled after the request was sent, the stream may be deleted or still deleting.
    """
    seconds = _check(stream, max_wait, endpoint_url, region_name)
    params = _aws.stream_params(stream)
    async with AsyncExitStack() as stack:
        kinesis = await _aws.open_client(
            stack,
            "kinesis",
            endpoint_url=endpoint_url,
            region_name=region_name,
            client=client,
            credentials=credentials,
        )
        try:
            await _aws.call(kinesis, "delete_stream", EnforceConsumerDeletion=True, **params)
        except errors.StreamNotFound:
            if missing_ok:
                return
            raise
        with anyio.move_on_after(seconds):
            while True:
                if not await _resources.stream_exists(kinesis, stream):
                    return
                await anyio.sleep(_POLL)
        raise errors.RequestTimeout(
            "StreamNotDeleted", f"stream {stream} still exists after {seconds:g}s", "DeleteStream"
        )
