"""Every error shardflow raises, in one tree rooted at :class:`ShardflowError`.

Errors are named for the situation, not for the AWS call that revealed it. Each class
carries a ``retriable`` flag that retry loops read instead of long ``except`` chains:
``True`` means the same request may succeed if simply tried again later.

Input errors are also the matching builtin (``ValueError``/``TypeError``) so code that
already catches those keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import Attempt

__all__ = [
    "AWSError",
    "AccessDenied",
    "BufferFull",
    "CollectorClosed",
    "ConditionFailed",
    "ConfigurationError",
    "ConsumerClosed",
    "CredentialsExpired",
    "DeliveryFailed",
    "EndpointUnreachable",
    "ExpiredIterator",
    "InternalFailure",
    "InvalidArgument",
    "InvalidHashKey",
    "InvalidPartitionKey",
    "InvalidShardMap",
    "KMSError",
    "LeaseLost",
    "LeaseTableConflict",
    "LimitExceeded",
    "MissingDependency",
    "NoCredentials",
    "NoRegion",
    "OutputClosed",
    "ProducerClosed",
    "ProfileNotFound",
    "QueueFull",
    "RecordTooLarge",
    "RequestTimeout",
    "ResourceInUse",
    "ResourceNotFound",
    "SerializationError",
    "ServiceUnavailable",
    "ShardflowError",
    "SinkClosed",
    "SpoolError",
    "StreamNotFound",
    "ThroughputExceeded",
    "UnmappedHashKey",
]


class ShardflowError(Exception):
    """Root of every shardflow error."""

    retriable: bool = False


class MissingDependency(ShardflowError, ImportError):
    """An optional part of shardflow is used but its extra is not installed; the message
    says what to install (e.g. ``pip install 'shardflow[local]'``)."""


# --- bad input: raised at the call that caused it -------------------------------------


class InvalidPartitionKey(ShardflowError, ValueError):
    """The partition key is empty, not a string, or longer than the limit."""


class InvalidHashKey(ShardflowError, ValueError):
    """The explicit hash key is not a decimal integer in [0, 2**128)."""


class InvalidShardMap(ShardflowError, ValueError):
    """The open shards' hash-key ranges overlap, or leave part of [0, 2**128) uncovered."""


class UnmappedHashKey(ShardflowError, LookupError):
    """No open shard of the shard map covers this hash key (refresh the map)."""


class RecordTooLarge(ShardflowError, ValueError):
    """Data plus partition key exceed ``KinesisLimits.max_record_bytes``."""


class SerializationError(ShardflowError, TypeError):
    """The object is neither bytes nor serialisable by orjson."""


# --- lifecycle and capacity -----------------------------------------------------------


class ProducerClosed(ShardflowError):
    """The producer is closing or closed and accepts no more records."""


class ConsumerClosed(ShardflowError):
    """The consumer is closing or closed."""


class QueueFull(ShardflowError):
    """``put_nowait`` found the producer's queue full (records or bytes)."""

    retriable = True


class BufferFull(ShardflowError):
    """A buffered output is full and its overflow policy is ``"raise"``."""

    retriable = True


class CollectorClosed(ShardflowError):
    """The collector is not started yet, or is closing or closed: ``post()`` is refused."""


class OutputClosed(ShardflowError):
    """A buffered output is not started yet, or is closing or closed."""


class SinkClosed(ShardflowError):
    """A sink (S3Sink, TumblingWindows) is closing or closed and takes no more records."""


class SpoolError(ShardflowError):
    """A collector spool file could not be opened, read or written (locked, full, corrupt)."""


class LeaseLost(ShardflowError):
    """This worker no longer owns the shard's lease; stop processing it at once."""

    def __init__(self, shard_id: str, message: str = "") -> None:
        self.shard_id = shard_id
        super().__init__(message or f"lease for {shard_id} was lost to another worker")


class LeaseTableConflict(ShardflowError):
    """The lease table cannot be used by this consumer: its key schema is not the KCL's
    (``leaseKey``, a string hash key), or it holds another application's or stream's
    leases (use one table per application and stream, or ``shared_table=True``)."""


# --- delivery -------------------------------------------------------------------------


class DeliveryFailed(ShardflowError):
    """A record was not delivered: its TTL ran out, or the error was not retriable.

    ``attempts`` lists every try in order; ``cause`` is the last error seen, if any.
    """

    def __init__(
        self,
        message: str,
        attempts: Sequence[Attempt] = (),
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.attempts: tuple[Attempt, ...] = tuple(attempts)
        self.cause = cause

    @property
    def error_code(self) -> str | None:
        """The error code of the last attempt, if it had one."""
        return self.attempts[-1].error_code if self.attempts else None


# --- errors reported by AWS or the transport ------------------------------------------


class AWSError(ShardflowError):
    """An AWS service (or the way to it) answered with an error, or, for a
    :class:`ConfigurationError`, the request could not be made at all.

    ``code`` is the AWS error code (e.g. ``ProvisionedThroughputExceededException``) or a
    transport name; ``operation`` the API call, when known. The message never contains
    credentials.
    """

    def __init__(self, code: str, message: str = "", operation: str | None = None) -> None:
        self.code = code
        self.message = message
        self.operation = operation
        where = f" in {operation}" if operation else ""
        super().__init__(f"{code}{where}: {message}" if message else f"{code}{where}")


class ThroughputExceeded(AWSError):
    """Provisioned throughput (or request rate) exceeded; back off and retry."""

    retriable = True


class InternalFailure(AWSError):
    """The service failed internally; retry."""

    retriable = True


class ServiceUnavailable(AWSError):
    """HTTP 5xx or the service is temporarily unavailable; retry."""

    retriable = True


class LimitExceeded(AWSError):
    """A control-plane rate limit was hit; retry later."""

    retriable = True


class ResourceInUse(AWSError):
    """The stream or table is being created, updated or deleted; retry later."""

    retriable = True


class ExpiredIterator(AWSError):
    """A shard iterator expired; get a new one from the last position."""

    retriable = True


class EndpointUnreachable(AWSError):
    """The connection failed or was reset; retry."""

    retriable = True


class RequestTimeout(AWSError):
    """No answer within the request timeout; retry."""

    retriable = True


class ResourceNotFound(AWSError):
    """A named resource (table, bucket, stream) does not exist.

    The message names the resource, the region and the endpoint that were asked, since a
    region other than the one the resource was created in is the usual cause.
    """


class StreamNotFound(ResourceNotFound):
    """The Kinesis stream does not exist (in the region and at the endpoint named)."""


class AccessDenied(AWSError):
    """The credentials are missing, invalid, or not allowed to do this."""


class CredentialsExpired(AccessDenied):
    """Temporary credentials expired; a refreshable source gets new ones on retry."""

    retriable = True


class ConfigurationError(AWSError):
    """The environment does not say how to reach AWS, so no request was sent: fix the
    setup (retrying does not help). The message says what is missing and how to give it."""


class NoRegion(ConfigurationError):
    """No region was given (``region_name``) and none is configured (``AWS_REGION``,
    ``AWS_DEFAULT_REGION``, the profile's ``region``)."""


class NoCredentials(ConfigurationError):
    """No AWS credentials were found in the environment, the profile, or an instance or
    container role (or only part of a key pair was). AWS was not asked."""


class ProfileNotFound(ConfigurationError):
    """The named AWS profile (``AWS_PROFILE``) is in neither ~/.aws/config nor
    ~/.aws/credentials."""


class ConditionFailed(AWSError):
    """A conditional write (DynamoDB) found the item changed; someone else won."""


class KMSError(AWSError):
    """Server-side encryption with KMS failed (disabled, missing or denied key)."""


class InvalidArgument(AWSError):
    """AWS rejected the request's parameters."""
