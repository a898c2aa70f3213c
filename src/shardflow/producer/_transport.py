"""The producer's transport: PutRecords as a hand-built, SigV4-signed HTTP request, and
the one place the request's JSON is written (:func:`entry`, :func:`key_tail`,
:func:`request_body`).

Sending 500-entry PutRecords calls through botocore's client pipeline (parameter
validation, serialisation, shape-based parsing) costs more client CPU than everything else
the producer does. This module builds the JSON body from entry fragments encoded once at
``put()`` time, signs it with botocore's own :class:`botocore.auth.SigV4Auth` using the
aiobotocore client's (refreshed) credentials, POSTs it with aiohttp to the endpoint the
client resolved, and reads the answer with orjson. Errors are mapped by
:mod:`shardflow._aws`, exactly as for every other call.

Only this module and ``_aws`` know about transports; it never imports aiobotocore. The
sender needs only :class:`Transport` (one method), the seam for another transport.
"""

from __future__ import annotations

import asyncio
import binascii
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from itertools import repeat
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest

from .. import _aws, errors

__all__ = [
    "PutRecordsTransport",
    "Transport",
    "all_written",
    "all_written_raw",
    "encode_entry",
    "entry",
    "entry_data",
    "key_tail",
    "parse_response",
    "request_body",
    "with_hash_key",
]

OPERATION = "PutRecords"
TARGET = "Kinesis_20131202.PutRecords"
CONTENT_TYPE = "application/x-amz-json-1.1"
SERVICE = "kinesis"

_b64 = binascii.b2a_base64
_dumps = orjson.dumps
_join = b"".join
_DATA_HEAD = b'{"Data":"'
_KEY_HEAD = b'","PartitionKey":'


def key_tail(key_json: bytes, explicit_hash_key: str | None = None) -> bytes:
    """The end of an entry, after its data: ``","PartitionKey":<key_json>}`` (and its
    explicit hash key). ``key_json`` is the partition key as a JSON string (quoted)."""
    tail = _KEY_HEAD + key_json + b"}"
    return tail if explicit_hash_key is None else with_hash_key(tail, explicit_hash_key)


def with_hash_key(tail: bytes, explicit_hash_key: str) -> bytes:
    """``tail`` (from :func:`key_tail`, without hash key) with ``explicit_hash_key``."""
    return tail[:-1] + b',"ExplicitHashKey":"' + explicit_hash_key.encode() + b'"}'


def entry(data: bytes, tail: bytes) -> bytes:
    """One PutRecords entry as a JSON object: ``{"Data":"<base64>"`` then ``tail``."""
    return _join((_DATA_HEAD, _b64(data, newline=False), tail))


def encode_entry(data: bytes, key_json: bytes, explicit_hash_key: str | None = None) -> bytes:
    """One PutRecords entry: ``{"Data":"<base64>","PartitionKey":...}``."""
    return entry(data, key_tail(key_json, explicit_hash_key))


def entry_data(fragment: bytes) -> bytes:
    """The data of an entry built by :func:`entry`."""
    start = len(_DATA_HEAD)
    return binascii.a2b_base64(fragment[start : fragment.index(b'"', start)])


def request_body(stream_params: dict[str, str], entries: Sequence[bytes]) -> bytes:
    """The PutRecords request body for ``entries`` (from :func:`entry`)."""
    head = _dumps(stream_params)[:-1]  # '{"StreamName":"x"' without the closing brace
    return head + b',"Records":[' + b",".join(entries) + b"]}"


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


def response_error(status: int, raw: bytes, header: str | None) -> errors.AWSError:
    """The shardflow error for a non-200 PutRecords answer."""
    code, message = _error_code(raw, header)
    if not message and not code:
        message = raw[:200].decode("utf-8", "replace")
    return _aws.error_for_code(code or f"HTTP{status}", message, OPERATION, SERVICE, status)


def parse_response(raw: bytes, expected: int) -> list[dict[str, Any]]:
    """The ``Records`` list of a 200 answer, one entry per request entry, in order.

    A body that is not the expected JSON is a retriable error (the request may or may not
    have been applied; a retry keeps delivery at least once).
    """
    try:
        doc = orjson.loads(raw)
        records = doc["Records"]
        if not isinstance(records, list) or len(records) != expected:
            raise ValueError(f"{len(records)} results for {expected} records")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise _aws.error_for_code(
            "InvalidResponse", f"unreadable PutRecords answer: {exc}", OPERATION, SERVICE, 502
        ) from exc
    return records


_repeat_seq = repeat("SequenceNumber")
_repeat_shard = repeat("ShardId")


def all_written_raw(raw: bytes, expected: int) -> bool:
    """True when a 200 answer says, at a glance, that every one of ``expected`` entries
    was written: one sequence number and one shard id per entry, no error code, and as
    many closed objects as entries plus the answer (a body cut short has fewer). Byte
    counts only: an unusual answer is read in full instead."""
    objects = expected + 1
    return (
        raw.count(b'"SequenceNumber"') == expected
        and raw.count(b'"ShardId"') == expected
        and b'"ErrorCode"' not in raw
        and raw.count(b"}") == objects
        and raw.count(b"{") == objects
    )


def all_written(records: list[dict[str, Any]]) -> bool:
    """True when every entry of a parsed answer was written: each has a sequence number
    and a shard id (and so, as AWS answers, no error code). Checked in C, no loop here."""
    try:
        return None not in map(dict.get, records, _repeat_seq) and None not in map(
            dict.get, records, _repeat_shard
        )
    except TypeError:  # an entry that is not an object
        return False


def _env_proxy(url: str) -> str | None:
    """The proxy for ``url`` from HTTP(S)_PROXY / NO_PROXY, as botocore reads them."""
    parts = urlsplit(url)
    if parts.hostname is None or urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class PutRecordsTransport:
    """Signs and sends PutRecords requests over one aiohttp connection pool.

    ``credentials`` is an async callable returning botocore ``ReadOnlyCredentials`` (or
    None), called before each request so that refreshable credentials stay fresh.
    """

    def __init__(
        self,
        *,
        endpoint_url: str,
        region_name: str,
        stream_params: dict[str, str],
        credentials: Callable[[], Awaitable[Any]],
        max_connections: int,
        connect_timeout: float = 5.0,
    ) -> None:
        self._url = endpoint_url if endpoint_url.endswith("/") else endpoint_url + "/"
        self._region = region_name
        self._stream_params = dict(stream_params)
        self._credentials = credentials
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    def __repr__(self) -> str:
        return f"PutRecordsTransport({self._url!r}, region={self._region!r})"

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self._max_connections, enable_cleanup_closed=True)
        # Proxy settings are read from the environment once, here, as botocore does;
        # aiohttp's trust_env would look them (and ~/.netrc) up in a thread per request.
        self._proxy = _env_proxy(self._url)
        self._session = aiohttp.ClientSession(connector=connector)

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def sign(self, body: bytes) -> dict[str, str]:
        """Headers for a PutRecords POST of ``body``, signed with SigV4 for now."""
        headers = {"Content-Type": CONTENT_TYPE, "X-Amz-Target": TARGET}
        creds = await self._credentials()
        if creds is None:
            raise errors.AccessDenied(
                "NoCredentials", "no AWS credentials to sign PutRecords with", OPERATION
            )
        request = AWSRequest(method="POST", url=self._url, data=body, headers=headers)
        SigV4Auth(creds, SERVICE, self._region).add_auth(request)
        return dict(request.headers.items())

    async def put_records(self, entries: Sequence[bytes], timeout: float) -> bytes:
        """Send one PutRecords request; return its raw 200 answer (read it with
        :func:`parse_response`, or check it with :func:`all_written_raw`).

        Raises a :class:`errors.AWSError` subclass for a request-level failure: the
        translated AWS error for a non-200 answer, :class:`errors.RequestTimeout` when no
        answer came within ``timeout`` seconds, :class:`errors.EndpointUnreachable` for
        connection failures and resets. Cancellation propagates (the request may or may
        not have reached the service).
        """
        session = self._session
        if session is None:
            raise errors.EndpointUnreachable("Closed", "transport is closed", OPERATION)
        body = request_body(self._stream_params, entries)
        headers = await self.sign(body)
        try:
            async with session.post(
                self._url,
                data=body,
                headers=headers,
                proxy=self._proxy,
                timeout=aiohttp.ClientTimeout(total=timeout, sock_connect=self._connect_timeout),
            ) as response:
                raw = await response.read()
                status = response.status
                error_header = response.headers.get("x-amzn-ErrorType")
        except asyncio.TimeoutError as exc:  # not TimeoutError's subclass before 3.11
            raise _aws.translate_error(TimeoutError(str(exc)), OPERATION) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise _aws.translate_error(exc, OPERATION) from exc
        if status != 200:
            raise response_error(status, raw, error_header)
        return raw


class Transport(Protocol):
    """What the sender needs of a transport (:class:`PutRecordsTransport`)."""

    async def put_records(self, entries: Sequence[bytes], timeout: float) -> bytes: ...

