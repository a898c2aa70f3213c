"""Enhanced fan-out: the stream consumer (registered, reused, optionally deregistered) and
:class:`FanOutSource`, which reads each held shard through its own SubscribeToShard
subscription.

A subscription pushes events (records, ContinuationSequenceNumber, MillisBehindLatest,
ChildShards) for up to 5 minutes. It is renewed before that from the last
ContinuationSequenceNumber (AFTER_SEQUENCE_NUMBER), and the reader leaves out any record
at or before the last one it fetched, so nothing is lost or repeated across renewals.
The first subscription starts where a polling reader would (checkpoint, sub-sequence
inside an aggregate, TRIM_HORIZON, LATEST, AT_TIMESTAMP). An event without a
continuation and with ChildShards ends the shard; the children are read after it, as
for polling. A subscription caught up for ``END_PROBE_INTERVAL`` asks GetRecords once
whether the shard ended (kinesis-mock keeps a closed shard's subscription open with no
ChildShards).

Faults: ResourceInUse (a subscription still open elsewhere), LimitExceeded (AWS allows
one SubscribeToShard per second per consumer and shard: calls are paced to that, and
backed off beyond it), a broken connection or event stream, an InternalFailure event:
subscribed again after a jittered backoff. A consumer deleted while in use and other
errors that are not retriable are raised naming the consumer and the shard.
"""

from __future__ import annotations

import logging
import math
import re
from contextlib import AsyncExitStack
from typing import Any

import anyio

from .. import errors
from .._core import aws as _aws
from .._core.logs import get_logger
from ..models import Shard
from ._transport import ReadTransport
from .pacing import backoff_delay
from .record_conversion import child_shard
from .shard_reader import Counters, ShardReader

__all__ = ["FanOutSource", "StreamConsumer", "check_consumer_name", "open_fan_out"]

log = get_logger("shardflow.consumer")

_NAME = re.compile(r"[a-zA-Z0-9_.-]{1,128}")
SUBSCRIPTION_LIFETIME = 300.0
"""AWS ends a subscription after 5 minutes."""
RENEW_AFTER = SUBSCRIPTION_LIFETIME - 15.0
"""Seconds after which a subscription is replaced by a new one from its continuation."""
SUBSCRIBE_INTERVAL = 1.0
"""AWS: one SubscribeToShard call per second per consumer and shard."""
ACTIVE_TIMEOUT = 120.0
"""Seconds to wait for a registered consumer to become ACTIVE."""
END_PROBE_INTERVAL = 10.0
"""Seconds a subscription stays caught up before GetRecords checks that its shard has not
ended (AWS says so in the last event; kinesis-mock never does)."""


_NOT_AN_AWS_ANSWER = frozenset(
    {"UnknownOperationException", "UnknownOperation", "HTTP404", "HTTP500", "HTTP501"}
)
"""Codes of answers that are no AWS error: an endpoint without SubscribeToShard when no
subscription ever succeeded."""


def check_consumer_name(name: object) -> str:
    """``name`` if AWS accepts it as a stream consumer name (1-128 of ``a-zA-Z0-9_.-``);
    else ValueError (TypeError for a non-str)."""
    if not isinstance(name, str):
        raise TypeError(f"a stream consumer name must be a str, got {type(name).__name__}")
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a stream consumer name AWS accepts: 1 to 128 characters "
            "among letters, digits, '_', '.' and '-' (fan_out='name' sets it; fan_out=True "
            "uses app_name)"
        )
    return name


class StreamConsumer:
    """A registered stream consumer: its name, its ARN and its stream's ARN."""

    __slots__ = ("arn", "name", "stream_arn")

    def __init__(self, name: str, arn: str, stream_arn: str) -> None:
        self.name = name
        self.arn = arn
        self.stream_arn = stream_arn

    def __repr__(self) -> str:
        return f"StreamConsumer({self.name!r}, {self.arn!r})"


def _unsupported(exc: errors.AWSError, endpoint: str, what: str) -> errors.AWSError:
    return errors.InvalidArgument(
        "FanOutUnsupported",
        f"the endpoint {endpoint} does not support enhanced fan-out ({what} answered "
        f"{exc.code}); use fan_out=False, or an endpoint that has it (AWS, kinesis-mock)",
        what,
    )


def _endpoint(client: Any) -> str:
    try:
        return _aws.client_endpoint(client)[0]
    except AttributeError:
        return "this endpoint"


async def stream_arn(client: Any, stream: str) -> str:
    """The stream's ARN (given, or from DescribeStreamSummary); InvalidArgument when the
    endpoint does not say it (kinesalite): fan-out cannot work without one."""
    if stream.startswith("arn:"):
        return stream
    summary = await _aws.call(client, "describe_stream_summary", StreamName=stream)
    arn = summary.get("StreamDescriptionSummary", {}).get("StreamARN")
    if not arn:
        raise errors.InvalidArgument(
            "FanOutUnsupported",
            f"{_endpoint(client)} gives no ARN for stream {stream!r}: enhanced fan-out needs "
            "one (kinesalite has neither ARNs nor fan-out); use fan_out=False",
            "DescribeStreamSummary",
        )
    return str(arn)


async def register(client: Any, stream: str, name: str) -> StreamConsumer:
    """The stream consumer ``name`` of ``stream``, ACTIVE: reused when it exists, else
    registered (RegisterStreamConsumer) and waited for (DescribeStreamConsumer).

    Raises InvalidArgument (code FanOutUnsupported) for an endpoint without fan-out,
    LimitExceeded when the stream has its maximum of consumers, RequestTimeout when it
    does not become ACTIVE within ``ACTIVE_TIMEOUT``; other AWS errors as they are.
    """
    arn = await stream_arn(client, stream)
    endpoint = _endpoint(client)
    deadline = anyio.current_time() + ACTIVE_TIMEOUT
    attempt = 0
    while True:
        try:
            answer = await _aws.call(client, "describe_stream_consumer", StreamARN=arn,
                                     ConsumerName=name)
            description = answer["ConsumerDescription"]
        except errors.ResourceNotFound:
            try:
                answer = await _aws.call(client, "register_stream_consumer", StreamARN=arn,
                                         ConsumerName=name)
                description = answer["Consumer"]
                log.info("registered stream consumer %r of %s", name, arn)
            except errors.ResourceInUse:  # registered by another worker meanwhile
                continue
            except errors.AWSError as exc:
                if exc.code in ("UnknownOperationException", "UnknownOperation"):
                    raise _unsupported(exc, endpoint, "RegisterStreamConsumer") from exc
                raise
        except errors.AWSError as exc:
            if exc.code in ("UnknownOperationException", "UnknownOperation"):
                raise _unsupported(exc, endpoint, "DescribeStreamConsumer") from exc
            if not exc.retriable:
                raise
            await anyio.sleep(backoff_delay(attempt))
            attempt += 1
            continue
        status = description.get("ConsumerStatus")
        if status == "ACTIVE":
            return StreamConsumer(name, str(description["ConsumerARN"]), arn)
        if anyio.current_time() > deadline:
            raise errors.RequestTimeout(
                "ConsumerNotActive",
                f"stream consumer {name!r} of {arn} is still {status} after "
                f"{ACTIVE_TIMEOUT:.0f}s",
                "DescribeStreamConsumer",
            )
        await anyio.sleep(0.5)  # CREATING, or DELETING before it is registered again


async def deregister(client: Any, consumer: StreamConsumer) -> None:
    """Deregister ``consumer`` (a consumer already gone is fine)."""
    try:
        await _aws.call(client, "deregister_stream_consumer", StreamARN=consumer.stream_arn,
                        ConsumerName=consumer.name)
        log.info("deregistered stream consumer %r of %s", consumer.name, consumer.stream_arn)
    except errors.ResourceNotFound:
        pass


def _starting_position(reader: ShardReader) -> dict[str, Any]:
    start = reader.position()
    position: dict[str, Any] = {"Type": start.kind}
    if start.sequence_number is not None:
        position["SequenceNumber"] = start.sequence_number
    if start.timestamp is not None:
        position["Timestamp"] = start.timestamp.timestamp()
    return position


class FanOutSource:
    """Reads each shard through SubscribeToShard subscriptions of one stream consumer."""

    def __init__(self, client: Any, transport: ReadTransport, stream_params: dict[str, str],
                 consumer: StreamConsumer, counters: Counters, *,
                 renew_after: float = RENEW_AFTER) -> None:
        self._client = client
        self._transport = transport
        self._stream_params = stream_params
        self.consumer = consumer
        self._counters = counters
        self._renew_after = renew_after

    def __repr__(self) -> str:
        return f"FanOutSource({self.consumer!r})"

    async def read(self, reader: ShardReader) -> None:
        consumer = self.consumer
        attempt = 0
        last_call = -math.inf
        while True:
            await reader.wait_for_room()
            delay = last_call + SUBSCRIBE_INTERVAL - anyio.current_time()
            if delay > 0:
                await anyio.sleep(delay)
            last_call = anyio.current_time()
            params = {"ConsumerARN": consumer.arn, "ShardId": reader.shard_id,
                      "StartingPosition": _starting_position(reader)}
            opened = self._counters.subscriptions
            try:
                ended = await self._subscription(reader, params)
            except errors.AWSError as exc:
                if self._counters.subscriptions > opened:
                    attempt = 0  # it was open: a stream broken later starts backing off anew
                if (exc.code in _NOT_AN_AWS_ANSWER and not self._counters.subscriptions
                        and attempt >= 2):
                    # e.g. moto: registers consumers, answers SubscribeToShard with an
                    # HTML 500 page
                    raise _unsupported(exc, _endpoint(self._client), "SubscribeToShard") from exc
                if isinstance(exc, errors.ResourceNotFound):
                    raise errors.ResourceNotFound(
                        exc.code,
                        f"stream consumer {consumer.name!r} ({consumer.arn}) or shard "
                        f"{reader.shard_id} not found: was the consumer deregistered while "
                        f"in use? ({exc.message})",
                        exc.operation,
                    ) from exc
                if not exc.retriable:
                    raise type(exc)(
                        exc.code,
                        f"stream consumer {consumer.name!r}, shard {reader.shard_id}: "
                        f"{exc.message}",
                        exc.operation,
                    ) from exc
                reader.count_retry(exc)
                level = logging.DEBUG if attempt < 3 else logging.WARNING
                log.log(level, "subscription of %r to %s failed (%s); subscribing again",
                        consumer.name, reader.shard_id, exc)
                await anyio.sleep(backoff_delay(attempt))
                attempt += 1
                continue
            if ended:
                return
            attempt = 0  # renewed (or ended by the service after its 5 minutes)

    async def _subscription(self, reader: ShardReader, params: dict[str, Any]) -> bool:
        """One subscription until it ends or is due for renewal; True at the shard's end."""
        async with AsyncExitStack() as stack:
            events = await stack.enter_async_context(self._transport.subscribe(params))
            self._counters.subscriptions += 1
            idle_since: float | None = None
            with anyio.move_on_after(self._renew_after):
                async for event in events:
                    behind = reader.millis_behind = event.get("MillisBehindLatest")
                    records = event.get("Records")
                    if records:
                        reader.accept(records)
                    continuation = event.get("ContinuationSequenceNumber")
                    if continuation is None:
                        children = event.get("ChildShards") or ()
                        if children or not reader.shard.is_open:
                            await reader.reach_end([child_shard(c) for c in children])
                            return True
                    else:
                        reader.continue_after(continuation)
                    if records or behind:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = anyio.current_time()
                    elif anyio.current_time() - idle_since >= END_PROBE_INTERVAL:
                        idle_since = anyio.current_time()
                        children = await self._ended(reader)
                        if children is not None:
                            await reader.reach_end(children)
                            return True
                    await reader.wait_for_room()
        return False

    async def _ended(self, reader: ShardReader) -> list[Shard] | None:
        """The children of ``reader``'s shard if GetRecords after its position says the
        shard ended with nothing more to read, else None."""
        start = reader.position()
        if start.sequence_number is None:
            return None
        params = dict(self._stream_params, ShardId=reader.shard_id,
                      ShardIteratorType=start.kind, StartingSequenceNumber=start.sequence_number)
        answer = await _aws.call(self._client, "get_shard_iterator", **params)
        self._counters.get_records_calls += 1
        page = await self._transport.call(
            "GetRecords", {"ShardIterator": answer["ShardIterator"], "Limit": 1}
        )
        if page.get("Records") or page.get("NextShardIterator") is not None:
            return None
        log.debug("%s ended (found by GetRecords: the subscription did not say)",
                  reader.shard_id)
        return [child_shard(c) for c in page.get("ChildShards") or ()]


async def open_fan_out(
    stack: AsyncExitStack,
    client: Any,
    transport: ReadTransport,
    stream: str,
    name: str,
    counters: Counters,
    *,
    deregister_on_close: bool,
) -> FanOutSource:
    """Register (or reuse) the stream consumer ``name`` and return the source reading
    through it; with ``deregister_on_close`` the consumer is deregistered when ``stack``
    closes."""
    consumer = await register(client, stream, name)
    if deregister_on_close:

        async def drop() -> None:
            try:
                await deregister(client, consumer)
            except errors.AWSError as exc:
                log.warning("could not deregister stream consumer %r: %s", consumer.name, exc)

        stack.push_async_callback(drop)
    return FanOutSource(client, transport, _aws.stream_params(stream), consumer, counters)
