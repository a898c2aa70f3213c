"""AWS's request checks for PutRecords / PutRecord, with AWS's error codes and messages."""

from __future__ import annotations

import binascii
import re
import sys
from typing import Any

__all__ = [
    "HASH_SPACE",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_RECORDS",
    "MAX_KEY_CHARS",
    "MAX_RECORD_BYTES",
    "KinesisError",
    "constraint",
    "validate_put",
    "validation_error",
]

MiB = 1024 * 1024
HASH_SPACE = 2**128
MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * MiB
MAX_RECORD_BYTES = 1 * MiB
MAX_KEY_CHARS = 256

HASH_KEY = re.compile(r"^(0|[1-9]\d{0,38})$")

if sys.version_info >= (3, 11):

    def b64decode(text: str) -> bytes:
        return binascii.a2b_base64(text, strict_mode=True)

else:  # pragma: no cover - Python 3.10

    import base64

    def b64decode(text: str) -> bytes:
        return base64.b64decode(text, validate=True)


class KinesisError(Exception):
    """An AWS error answer: ``code`` (the ``__type``), message, HTTP status, and the short
    ``reason`` the fake counts rejected requests by."""

    def __init__(self, code: str, message: str, reason: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.status = status


def validation_error(errors: list[str], reason: str) -> KinesisError:
    """A ValidationException listing every violated constraint, as AWS words it."""
    n = len(errors)
    head = f"{n} validation error{'s' if n > 1 else ''} detected: "
    return KinesisError("ValidationException", head + "; ".join(errors), reason)


def constraint(value: object, where: str, rule: str) -> str:
    return f"Value '{value}' at '{where}' failed to satisfy constraint: {rule}"


def _blob(size: int) -> str:
    return f"java.nio.HeapByteBuffer[pos=0 lim={size} cap={size}]"


def validate_put(records: Any, *, batch: bool, max_record_bytes: int = MAX_RECORD_BYTES) -> int:
    """Check PutRecords entries (``batch``) or one PutRecord request in AWS's order:
    deserialisation (base64), then every member constraint (ValidationException, all
    listed), then InvalidArgumentException checks (hash key range, 5 MiB per request).

    Returns the request's size (data plus partition key bytes) when it is valid.
    """
    if records is None:
        raise validation_error([constraint("null", "records", "Member must not be null")],
                               "bad_request")
    if not isinstance(records, list) or not all(isinstance(e, dict) for e in records):
        raise KinesisError("SerializationException", "Records must be a list of objects",
                           "bad_json")
    sizes: list[int] = []
    for e in records:
        data = e.get("Data")
        if data is None:
            sizes.append(-1)
            continue
        try:
            if not isinstance(data, str):
                raise TypeError
            sizes.append(len(b64decode(data)))
        except (binascii.Error, ValueError, TypeError):
            raise KinesisError("SerializationException", "Data must be a base64-encoded blob",
                               "bad_base64") from None

    def where(i: int, member: str) -> str:
        return f"records.{i}.member.{member}" if batch else member

    errors: list[str] = []
    reasons: list[str] = []
    if batch and len(records) > MAX_BATCH_RECORDS:
        errors.append(constraint("[...]", "records", "Member must have length less than or "
                                 f"equal to {MAX_BATCH_RECORDS}"))
        reasons.append("too_many_records")
    if batch and not records:
        errors.append(constraint("[]", "records", "Member must have length greater than or "
                                 "equal to 1"))
        reasons.append("no_records")
    for i, (e, size) in enumerate(zip(records, sizes, strict=True), start=1):
        if size < 0:
            errors.append(constraint("null", where(i, "data"), "Member must not be null"))
            reasons.append("bad_request")
        elif size > max_record_bytes:
            errors.append(constraint(_blob(size), where(i, "data"), "Member must have length "
                                     f"less than or equal to {max_record_bytes}"))
            reasons.append("record_too_large")
        pk = e.get("PartitionKey")
        if not isinstance(pk, str):
            errors.append(constraint("null", where(i, "partitionKey"), "Member must not be null"))
            reasons.append("bad_partition_key")
        elif not pk:
            errors.append(constraint(pk, where(i, "partitionKey"), "Member must have length "
                                     "greater than or equal to 1"))
            reasons.append("bad_partition_key")
        elif len(pk) > MAX_KEY_CHARS:
            errors.append(constraint(pk, where(i, "partitionKey"), "Member must have length "
                                     f"less than or equal to {MAX_KEY_CHARS}"))
            reasons.append("bad_partition_key")
        ehk = e.get("ExplicitHashKey")
        if ehk is not None and (not isinstance(ehk, str) or not HASH_KEY.match(ehk)):
            errors.append(constraint(ehk, where(i, "explicitHashKey"), "Member must satisfy "
                                     "regular expression pattern: 0|([1-9]\\d{0,38})"))
            reasons.append("bad_explicit_hash_key")
    if errors:
        raise validation_error(errors, reasons[0])
    for e in records:
        ehk = e.get("ExplicitHashKey")
        if ehk is not None and int(ehk) >= HASH_SPACE:
            raise KinesisError(
                "InvalidArgumentException",
                "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. "
                f"Specified value was {ehk}",
                "bad_explicit_hash_key",
            )
    total = sum(sizes) + sum(len(e["PartitionKey"].encode()) for e in records)
    # a stream whose records may exceed 5 MiB (MaxRecordSizeInKiB) takes such a record in
    # a request (AWS: "up to 10 MiB for the entire request")
    if batch and total > max(MAX_BATCH_BYTES, max_record_bytes):
        raise KinesisError("InvalidArgumentException", "Records size exceeds 5 MB limit",
                           "request_too_large")
    return total
