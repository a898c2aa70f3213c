"""Signed JSON requests to Kinesis over aiohttp: the AWS edge's fast path, shared by the
producer's PutRecords and the consumer's GetRecords and SubscribeToShard.

The calls whose cost matters skip botocore's client pipeline (parameter validation,
serialisation, shape-based parsing): the caller builds the JSON body, :class:`SignedClient`
signs it with botocore's own :class:`botocore.auth.SigV4Auth` using the aiobotocore
client's (refreshed) credentials and POSTs it with aiohttp to the endpoint the client
resolved. Every failure goes through :mod:`shardflow._core.aws`'s one error map: an error
answer through :func:`response_error`, a transport failure through
:func:`_aws.translate_error`. Cancellation propagates.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from .. import errors
from . import aws as _aws

__all__ = [
    "CONTENT_TYPE",
    "SERVICE",
    "SignedClient",
    "client_credentials",
    "open_signed",
    "response_error",
]

SERVICE = "kinesis"
CONTENT_TYPE = "application/x-amz-json-1.1"
TARGET_PREFIX = "Kinesis_20131202."

Credentials = Callable[[], Awaitable[Any]]
"""An async callable returning botocore ``ReadOnlyCredentials`` (or None)."""


def client_credentials(client: Any) -> Credentials:
    """Credentials read from an aiobotocore ``client`` before each request (refreshable
    credentials stay fresh)."""

    async def credentials() -> Any:
        return await _aws.frozen_credentials(client)

    return credentials


async def open_signed(client: Any, *, max_connections: int) -> SignedClient:
    """A started :class:`SignedClient` for ``client``'s endpoint and region, signing with
    its credentials (the caller closes it)."""
    endpoint_url, region_name = _aws.client_endpoint(client)
    http = SignedClient(
        endpoint_url=endpoint_url,
        region_name=region_name,
        credentials=client_credentials(client),
        max_connections=max_connections,
    )
    await http.start()
    return http


def _error_code(raw: bytes, header: str | None) -> tuple[str | None, str]:
    """AWS's error code and message from a JSON error body or the x-amzn-ErrorType header."""
    code: str | None = None
    message = ""
    try:
        doc = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict):
        kind = doc.get("__type")
        if isinstance(kind, str) and kind:
            code = kind.rsplit("#", 1)[-1]
        msg = doc.get("message") or doc.get("Message")
        if isinstance(msg, str):
            message = msg
    if not code and header:
        code = header.split(":", 1)[0].rsplit("#", 1)[-1] or None
    return code, message


def response_error(operation: str, status: int, raw: bytes, header: str | None) -> errors.AWSError:
    """The shardflow error for a non-200 answer (AWS's JSON error body or header)."""
    code, message = _error_code(raw, header)
    if not message and not code:
        message = raw[:200].decode("utf-8", "replace")
    return _aws.error_for_code(code or f"HTTP{status}", message, operation, SERVICE, status)


def _env_proxy(url: str) -> str | None:
    """The proxy for ``url`` from HTTP(S)_PROXY / NO_PROXY, as botocore reads them."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class SignedClient:
    """Signs and POSTs JSON requests to one Kinesis endpoint over one aiohttp pool."""

    def __init__(
        self,
        *,
        endpoint_url: str,
        region_name: str,
        credentials: Credentials,
        max_connections: int,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = endpoint_url if endpoint_url.endswith("/") else endpoint_url + "/"
        self.region = region_name
        self.connect_timeout = connect_timeout
        self._credentials = credentials
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, enable_cleanup_closed=True)
        # Proxy settings are read from the environment once, here, as botocore does;
        # aiohttp's trust_env would look them (and ~/.netrc) up in a thread per request.
        self._proxy = _env_proxy(self.url)
        self._session = aiohttp.ClientSession(connector=connector)

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def sign(self, operation: str, body: bytes) -> dict[str, str]:
        """Headers for a POST of ``body`` as ``operation``, signed with SigV4 for now.
        Raises :class:`errors.AccessDenied` when there are no credentials."""
        headers = {"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET_PREFIX + operation}
        creds = await self._credentials()
        if creds is None:
            raise errors.AccessDenied(
                "NoCredentials", f"no AWS credentials to sign {operation} with", operation
            )
        request = AWSRequest(method="POST", url=self.url, data=body, headers=headers)
        SigV4Auth(creds, SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())

    async def open(
        self, operation: str, body: bytes, timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """POST ``body`` as ``operation``; the response, its body unread (the caller
        closes it). Raises :class:`errors.RequestTimeout` when no answer came in time,
        :class:`errors.EndpointUnreachable` for connection failures or a closed client."""
        session = self._session
        if session is None:
            raise errors.EndpointUnreachable("Closed", "the transport is closed", operation)
        headers = await self.sign(operation, body)
        try:
            return await session.post(
                self.url, data=body, headers=headers, proxy=self._proxy, timeout=timeout
            )
        except asyncio.TimeoutError as exc:  # not TimeoutError's subclass before 3.11
            raise _aws.translate_error(TimeoutError(str(exc)), operation) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _aws.translate_error(exc, operation) from exc

    async def post(self, operation: str, body: bytes, timeout: aiohttp.ClientTimeout) -> bytes:
        """POST ``body`` as ``operation`` and return the raw 200 answer. Raises what
        :meth:`open` raises, and the translated error of any other answer."""
        response = await self.open(operation, body, timeout)
        try:
            async with response:
                raw = await response.read()
        except asyncio.TimeoutError as exc:
            raise _aws.translate_error(TimeoutError(str(exc)), operation) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _aws.translate_error(exc, operation) from exc
        if response.status != 200:
            raise response_error(
                operation, response.status, raw, response.headers.get("x-amzn-ErrorType")
            )
        return raw
