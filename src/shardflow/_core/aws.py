"""The one place that talks to aiobotocore: client creation and error translation.

Everything else in shardflow calls AWS through :func:`open_client` and :func:`call`, and
sees only :mod:`shardflow.errors`. Backend exceptions (botocore ``ClientError``, transport
errors, timeouts, a missing region or credentials) are translated here, in one map
(:func:`map_exception`), with the original chained as ``__cause__``. An exception the map
does not know is re-raised as it is: a bug stays a bug.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, contextmanager
from datetime import datetime, timezone
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from .. import errors
from ..models import Shard
from .validate import shown

__all__ = [
    "DEFAULT_LOCAL_REGION",
    "CredentialSource",
    "call",
    "check_endpoint",
    "client_endpoint",
    "error_for_code",
    "frozen_credentials",
    "is_loopback",
    "list_shards",
    "map_errors",
    "map_exception",
    "open_client",
    "refreshable_credentials",
    "resolve_region",
    "stream_name",
    "stream_params",
    "translate_error",
]

DEFAULT_LOCAL_REGION = "us-east-1"
"""Region used when an endpoint_url is given and nothing else names one."""

LOCAL_ACCESS_KEY = "shardflow-local"
"""Dummy key used to sign requests to a loopback endpoint when no credentials exist."""

_STREAM_ARN = re.compile(r"^arn:aws[a-zA-Z-]*:kinesis:[a-z0-9-]+:\d{12}:stream/([A-Za-z0-9_.-]+)$")


@runtime_checkable
class CredentialSource(Protocol):
    """Something that supplies refreshable botocore credentials (e.g. CognitoCredentials).

    ``botocore_credentials()`` returns an aiobotocore credentials object (for example
    ``AioDeferredRefreshableCredentials``) that refreshes itself before expiry.
    """

    def botocore_credentials(self) -> Any: ...


def refreshable_credentials(
    fetch: Callable[[], Awaitable[Mapping[str, Any]]],
    *,
    method: str,
    refresh_margin: float,
    time_fetcher: Callable[[], datetime] | None = None,
) -> Any:
    """aiobotocore credentials that call ``fetch`` first on use and again before expiry.

    ``fetch`` returns ``access_key``, ``secret_key``, ``token`` and ``expiry_time`` (an
    ISO 8601 string with a time zone). A refresh is tried ``refresh_margin`` seconds
    before expiry (a third of the credentials' lifetime if that is shorter) and is
    mandatory in the last two thirds of that margin; a failed mandatory refresh raises
    the error ``fetch`` raised to the request that needed the credentials.
    """
    from aiobotocore.credentials import AioDeferredRefreshableCredentials

    now = time_fetcher or (lambda: datetime.now(timezone.utc))

    def set_margin(creds: Any, margin: float) -> None:
        creds._advisory_refresh_timeout = margin
        creds._mandatory_refresh_timeout = margin * 2 / 3

    async def refresh() -> Mapping[str, Any]:
        data = await fetch()
        lifetime = (datetime.fromisoformat(str(data["expiry_time"])) - now()).total_seconds()
        set_margin(creds, min(refresh_margin, max(lifetime / 3, 0.0)))
        return data

    extra = {} if time_fetcher is None else {"time_fetcher": time_fetcher}
    creds = AioDeferredRefreshableCredentials(refresh_using=refresh, method=method, **extra)
    set_margin(creds, refresh_margin)
    return creds


# --- streams ----------------------------------------------------------------------------


def stream_params(stream: str) -> dict[str, str]:
    """Request parameters naming a stream: ``StreamARN`` for an ARN, else ``StreamName``."""
    if not isinstance(stream, str) or not stream:
        raise ValueError(f"stream must be a non-empty stream name or ARN, got {shown(stream)}")
    if stream.startswith("arn:"):
        if not _STREAM_ARN.match(stream):
            raise ValueError(f"not a Kinesis stream ARN: {stream!r}")
        return {"StreamARN": stream}
    return {"StreamName": stream}


def stream_name(stream: str) -> str:
    """The stream's name, from a name or an ARN."""
    if stream.startswith("arn:"):
        match = _STREAM_ARN.match(stream)
        if not match:
            raise ValueError(f"not a Kinesis stream ARN: {stream!r}")
        return match.group(1)
    return stream


# --- clients ----------------------------------------------------------------------------


_REGION = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")


def check_endpoint(endpoint_url: object, region_name: object) -> None:
    """Validate a constructor's ``endpoint_url`` and ``region_name`` options (None is fine).

    Raises TypeError for a value that is not a str, ValueError for an endpoint that is not
    an http(s) URL with a host, or a region that is not a region name.
    """
    if endpoint_url is not None:
        if not isinstance(endpoint_url, str):
            raise TypeError(f"endpoint_url must be a URL string or None, got {shown(endpoint_url)}")
        try:
            parts = urlsplit(endpoint_url)
            ok = parts.scheme in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"endpoint_url must be an http:// or https:// URL with a host, got {endpoint_url!r}"
            )
    if region_name is not None:
        if not isinstance(region_name, str):
            raise TypeError(f"region_name must be a str or None, got {shown(region_name)}")
        if not _REGION.fullmatch(region_name):
            raise ValueError(
                f"region_name must be a region such as 'us-east-1', got {region_name!r}"
            )


def is_loopback(endpoint_url: str | None) -> bool:
    """True for an http(s) URL on 127.0.0.1, ::1 or localhost."""
    if not endpoint_url:
        return False
    host = urlsplit(endpoint_url).hostname or ""
    return host in ("127.0.0.1", "::1", "localhost")


def resolve_region(region_name: str | None, endpoint_url: str | None) -> str | None:
    """The region every shardflow client uses: ``region_name``, else ``AWS_REGION``, else
    ``AWS_DEFAULT_REGION``; else, for an ``endpoint_url``, :data:`DEFAULT_LOCAL_REGION`.
    None leaves it to botocore (the profile's region), as for AWS itself.

    One rule for every class, helper and command, so that what one creates the others find.
    """
    if region_name:
        return region_name
    env = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if env:
        return env
    # A local endpoint needs some region to sign with; AWS proper resolves its own.
    return DEFAULT_LOCAL_REGION if endpoint_url else None


async def open_client(
    stack: AsyncExitStack,
    service: str,
    *,
    endpoint_url: str | None = None,
    region_name: str | None = None,
    client: Any = None,
    credentials: CredentialSource | None = None,
    max_attempts: int = 1,
    connect_timeout: float = 5.0,
    read_timeout: float = 30.0,
    max_pool_connections: int = 10,
) -> Any:
    """An aiobotocore client for ``service``, closed when ``stack`` closes.

    An injected ``client`` is returned as is and stays owned by the caller. Otherwise a new
    client is created; ``max_attempts=1`` turns botocore's own retries off so that every
    try is visible to shardflow's retry code. Raises :class:`errors.NoRegion`,
    :class:`errors.ProfileNotFound` and other :class:`errors.ConfigurationError` subclasses.
    """
    if client is not None:
        return client
    with map_errors(f"create {service} client", service):
        return await _open_client(
            stack,
            service,
            endpoint_url=endpoint_url,
            region_name=region_name,
            credentials=credentials,
            max_attempts=max_attempts,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
        )


async def _open_client(
    stack: AsyncExitStack,
    service: str,
    *,
    endpoint_url: str | None,
    region_name: str | None,
    credentials: CredentialSource | None,
    max_attempts: int,
    connect_timeout: float,
    read_timeout: float,
    max_pool_connections: int,
) -> Any:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import get_session

    session = get_session()
    # botocore parses every timestamp into the local time zone through dateutil, which
    # costs ~40 % of the CPU of reading a plain Kinesis record; epoch numbers (all the
    # JSON protocol sends) become UTC datetimes directly.
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )
    if credentials is not None:
        session._credentials = credentials.botocore_credentials()
    elif is_loopback(endpoint_url) and await session.get_credentials() is None:
        # Local endpoints (moto, kinesalite) accept any signature.
        session.set_credentials(LOCAL_ACCESS_KEY, LOCAL_ACCESS_KEY)
    config = AioConfig(
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    return await stack.enter_async_context(
        session.create_client(
            service,
            endpoint_url=endpoint_url,
            region_name=resolve_region(region_name, endpoint_url),
            config=config,
        )
    )


def _parse_timestamp(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, timezone.utc)
    from botocore.utils import parse_timestamp

    parsed: datetime = parse_timestamp(value)
    return parsed.astimezone(timezone.utc)


async def call(client: Any, operation: str, service: str = "kinesis", **params: Any) -> Any:
    """Await ``client.<operation>(**params)``, translating failures to shardflow errors.

    Cancellation propagates unchanged. Raises a subclass of :class:`errors.AWSError`; a
    :class:`errors.ResourceNotFound` names the resource, the region and the endpoint.
    Exceptions the error map does not know propagate unchanged.
    """
    method = getattr(client, operation)
    try:
        return await method(**params)
    except (asyncio.CancelledError, errors.ShardflowError):
        raise
    except Exception as exc:
        mapped = map_exception(exc, operation, service)
        if mapped is None:
            raise
        if isinstance(mapped, errors.ResourceNotFound):
            mapped = _not_found(mapped, client, params)
        raise mapped from exc


async def list_shards(client: Any, stream: str) -> list[Shard]:
    """Every shard of ``stream`` (open and closed), following ListShards pagination.

    Raises :class:`errors.StreamNotFound` for a missing stream and other
    :class:`errors.AWSError` subclasses as :func:`call` translates them. Cancellation
    propagates.
    """
    shards: list[Shard] = []
    params: dict[str, Any] = dict(stream_params(stream))
    while True:
        page = await call(client, "list_shards", **params)
        shards.extend(Shard.from_api(item) for item in page.get("Shards", ()))
        token = page.get("NextToken")
        if not token:
            return shards
        # With NextToken, AWS rejects StreamName/StreamARN in the same request.
        params = {"NextToken": token}


_RESOURCE_PARAMS = (
    ("StreamARN", "stream"),
    ("StreamName", "stream"),
    ("TableName", "table"),
    ("Bucket", "bucket"),
    ("ConsumerARN", "stream consumer"),
    ("ConsumerName", "stream consumer"),
    ("IdentityPoolId", "identity pool"),
)


def _not_found(
    error: errors.ResourceNotFound, client: Any, params: Mapping[str, Any]
) -> errors.ResourceNotFound:
    """``error`` again, its message naming the resource, the region and the endpoint."""
    what = next(
        (f"{kind} {params[key]!r}" for key, kind in _RESOURCE_PARAMS if params.get(key)),
        "resource",
    )
    try:
        endpoint, region = client_endpoint(client)
    except AttributeError:  # a stand-in client without botocore's meta
        return error
    detail = f" ({error.message})" if error.message else ""
    message = f"{what} not found in region {region} at {endpoint}{detail}"
    return type(error)(error.code, message, error.operation)


def client_endpoint(client: Any) -> tuple[str, str]:
    """The ``(endpoint_url, region_name)`` an aiobotocore client resolved and signs for."""
    return str(client.meta.endpoint_url), str(client.meta.region_name)


async def frozen_credentials(client: Any) -> Any:
    """The client's credentials as a botocore ``ReadOnlyCredentials``, or None if it has none.

    Refreshable credentials are refreshed first when they are about to expire, exactly as
    the client would before signing a request. Raises :class:`errors.AccessDenied` /
    :class:`errors.CredentialsExpired` when the credential source fails.
    """
    credentials = client._request_signer._credentials
    if credentials is None:
        return None
    with map_errors("refresh credentials"):
        frozen = credentials.get_frozen_credentials()
        if inspect.isawaitable(frozen):
            frozen = await frozen
    return frozen


# --- error translation ------------------------------------------------------------------

_CODE_TABLE: dict[str, type[errors.AWSError]] = {}


def _register(cls: type[errors.AWSError], *codes: str) -> None:
    for code in codes:
        _CODE_TABLE[code] = cls


_register(
    errors.ThroughputExceeded,
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "KMSThrottlingException",
    "RequestThrottled",
    "SlowDown",
)
_register(errors.LimitExceeded, "LimitExceededException")
_register(
    errors.InternalFailure,
    "InternalFailure",
    "InternalFailureException",
    "InternalServerError",
    "InternalError",
    "InternalServerErrorException",
)
_register(
    errors.ServiceUnavailable,
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
    "BadGateway",
    "GatewayTimeout",
)
_register(errors.ResourceInUse, "ResourceInUseException")
_register(errors.ExpiredIterator, "ExpiredIteratorException")
_register(
    errors.AccessDenied,
    "AccessDeniedException",
    "AccessDenied",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
    "NotAuthorizedException",
    "MissingAuthenticationToken",
)
_register(errors.CredentialsExpired, "ExpiredTokenException", "ExpiredToken", "RequestExpired")
_register(
    errors.KMSError,
    "KMSDisabledException",
    "KMSInvalidStateException",
    "KMSAccessDeniedException",
    "KMSNotFoundException",
    "KMSOptInRequired",
)
_register(
    errors.InvalidArgument,
    "InvalidArgumentException",
    "ValidationException",
    "ValidationError",
    "SerializationException",
    "InvalidParameterException",
    "InvalidParameterValue",
    "InvalidRequestException",
)
_register(errors.ConditionFailed, "ConditionalCheckFailedException")
# S3's HEAD requests carry no body, so botocore reports the bare HTTP status as the code.
_register(
    errors.ResourceNotFound,
    *("NoSuchBucket", "NoSuchKey", "TableNotFoundException", "404", "NotFound"),
)
_register(errors.AccessDenied, "403", "Forbidden")


def error_for_code(
    code: str,
    message: str = "",
    operation: str | None = None,
    service: str = "kinesis",
    status: int | None = None,
) -> errors.AWSError:
    """The shardflow error for an AWS error code (from a response or one PutRecords entry).

    ``ResourceNotFoundException`` is :class:`errors.StreamNotFound` for Kinesis and
    :class:`errors.ResourceNotFound` for other services. An unknown code with an HTTP
    status of 500 or more is :class:`errors.ServiceUnavailable` (retriable).
    """
    if code == "ResourceNotFoundException":
        cls: type[errors.AWSError] = (
            errors.StreamNotFound if service == "kinesis" else errors.ResourceNotFound
        )
    else:
        cls = _CODE_TABLE.get(code, errors.AWSError)
        if cls is errors.AWSError and status is not None and status >= 500:
            cls = errors.ServiceUnavailable
    return cls(code, message, operation)


@contextmanager
def map_errors(operation: str | None = None, service: str = "kinesis") -> Iterator[None]:
    """Translate what the block raises with :func:`map_exception`, the original chained;
    shardflow errors, cancellation and exceptions the map does not know pass unchanged."""
    try:
        yield
    except errors.ShardflowError:
        raise
    except Exception as exc:
        mapped = map_exception(exc, operation, service)
        if mapped is None:
            raise
        raise mapped from exc


def translate_error(
    exc: BaseException, operation: str | None = None, service: str = "kinesis"
) -> errors.ShardflowError:
    """The shardflow error for ``exc``, which the caller caught as a known failure (a
    transport or botocore exception). Anything the map does not know is re-raised here
    unchanged, so ``raise translate_error(exc) from exc`` never hides a bug."""
    mapped = map_exception(exc, operation, service)
    if mapped is None:
        raise exc
    return mapped


_NO_REGION = (
    "no AWS region configured: pass region_name='eu-west-1' (for example), or set "
    "AWS_REGION or AWS_DEFAULT_REGION, or give the profile a region in ~/.aws/config"
)
_NO_CREDENTIALS = (
    "no AWS credentials found, so AWS was not asked: set AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run where an instance or container role "
    "applies"
)


def map_exception(
    exc: BaseException, operation: str | None = None, service: str = "kinesis"
) -> errors.ShardflowError | None:
    """The shardflow error for a botocore, aiohttp or OS exception, or None for one this
    map does not know (the caller re-raises it as it is). Not raised here."""
    if isinstance(exc, errors.ShardflowError):
        return exc
    from botocore import exceptions as bce

    if isinstance(exc, bce.ClientError):
        err: Mapping[str, Any] = exc.response.get("Error", {})
        meta: Mapping[str, Any] = exc.response.get("ResponseMetadata", {})
        return error_for_code(
            str(err.get("Code") or "Unknown"),
            str(err.get("Message") or ""),
            operation,
            service,
            meta.get("HTTPStatusCode"),
        )
    # The environment: found before any request was sent.
    if isinstance(exc, bce.NoRegionError):
        return errors.NoRegion("NoRegion", _NO_REGION, operation)
    if isinstance(exc, bce.NoCredentialsError):
        return errors.NoCredentials("NoCredentials", _NO_CREDENTIALS, operation)
    if isinstance(exc, bce.PartialCredentialsError):
        return errors.NoCredentials("NoCredentials", f"{exc} (AWS was not asked)", operation)
    if isinstance(exc, bce.ProfileNotFound):
        profile = exc.kwargs.get("profile", "")
        return errors.ProfileNotFound(
            "ProfileNotFound",
            f"AWS profile {profile!r} (AWS_PROFILE) is in neither ~/.aws/config nor "
            "~/.aws/credentials",
            operation,
        )
    if isinstance(exc, bce.SSOError | bce.TokenRetrievalError):
        return errors.ConfigurationError(
            type(exc).__name__, f"{exc} (log in again: aws sso login)", operation
        )
    if isinstance(
        exc,
        bce.InvalidConfigError
        | bce.ConfigParseError
        | bce.ConfigNotFound
        | bce.InvalidRegionError
        | bce.BaseEndpointResolverError,
    ):
        return errors.ConfigurationError(type(exc).__name__, str(exc), operation)
    if isinstance(exc, bce.CredentialRetrievalError):
        return errors.CredentialsExpired("CredentialRetrievalError", "", operation)
    # The way to AWS.
    if isinstance(exc, bce.ReadTimeoutError | bce.ConnectTimeoutError | TimeoutError):
        return errors.RequestTimeout("RequestTimeout", type(exc).__name__, operation)
    if isinstance(exc, asyncio.TimeoutError):  # not TimeoutError's subclass before 3.11
        return errors.RequestTimeout("RequestTimeout", type(exc).__name__, operation)
    if isinstance(exc, bce.EndpointConnectionError | bce.ConnectionClosedError):
        return errors.EndpointUnreachable("EndpointUnreachable", type(exc).__name__, operation)
    if isinstance(exc, bce.HTTPClientError | bce.ResponseStreamingError | OSError):
        return errors.EndpointUnreachable("EndpointUnreachable", type(exc).__name__, operation)
    import aiohttp

    if isinstance(exc, aiohttp.ClientError):
        return errors.EndpointUnreachable("EndpointUnreachable", type(exc).__name__, operation)
    return None
