"""The producer's transport: PutRecords as a hand-built, SigV4-signed HTTP request, and
the one place the request's JSON is written (:func:`entry`, :func:`key_tail`,
:func:`request_body`).

Sending 500-entry PutRecords calls through botocore's client pipeline (parameter
validation, serialisation, shape-based parsing) costs more client CPU than everything else
the producer does. This module builds the JSON body from entry fragments encoded once at
``put()`` time and reads the answer with orjson; :mod:`shardflow._core.signed` (the edge's
signed requests, shared with the consumer) signs and sends it, errors mapped by
:mod:`shardflow._core.aws` exactly as for every other call.

The sender needs only :class:`Transport` (one method), the seam for another transport.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from itertools import repeat
from typing import Any, Protocol

import aiohttp
import orjson

from .._core import aws as _aws
from .._core.signed import SERVICE, SignedClient

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


class PutRecordsTransport:
    """Sends PutRecords requests through a started :class:`SignedClient` (its owner
    closes it)."""

    def __init__(self, http: SignedClient, stream_params: dict[str, str]) -> None:
        self._http = http
        self._stream_params = dict(stream_params)

    def __repr__(self) -> str:
        return f"PutRecordsTransport({self._http.url!r}, region={self._http.region!r})"

    async def put_records(self, entries: Sequence[bytes], timeout: float) -> bytes:
        """Send one PutRecords request; return its raw 200 answer (read it with
        :func:`parse_response`, or check it with :func:`all_written_raw`).

        Raises a :class:`errors.AWSError` subclass for a request-level failure: the
        translated AWS error for a non-200 answer, :class:`errors.RequestTimeout` when no
        answer came within ``timeout`` seconds, :class:`errors.EndpointUnreachable` for
        connection failures and resets. Cancellation propagates (the request may or may
        not have reached the service).
        """
        http = self._http
        return await http.post(
            OPERATION,
            request_body(self._stream_params, entries),
            aiohttp.ClientTimeout(total=timeout, sock_connect=http.connect_timeout),
        )


class Transport(Protocol):
    """What the sender needs of a transport (:class:`PutRecordsTransport`)."""

    async def put_records(self, entries: Sequence[bytes], timeout: float) -> bytes: ...

