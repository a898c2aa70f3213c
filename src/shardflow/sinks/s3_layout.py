"""How S3Sink lays records out in S3: object keys, NDJSON lines, gzip bodies.

Object layout
    ``<prefix>/YYYY/MM/DD/HH/<stream>-<shard>-<first>-<last>.ndjson.gz`` where the hour is
    the UTC ``arrival_time`` of the object's first record and ``<first>``/``<last>`` are the
    sequence numbers of its first and last record, written ``<seq>_<sub>`` for records that
    came out of a KPL aggregate. Without ``stream`` the name starts at ``<shard>``; without
    compression it ends in ``.ndjson``. A ``prefix`` gets a ``/`` appended unless empty.

Lines
    One JSON value per line. A record whose data is a JSON document (UTF-8) is written as
    is (outer whitespace stripped, line breaks between tokens turned into spaces, nothing
    re-encoded, so big numbers survive). Any other record becomes an envelope object
    ``{"data_base64", "partition_key", "sequence_number", "sub_sequence_number",
    "shard_id", "arrival_time", "explicit_hash_key"}`` (time in ISO 8601 UTC).

Bodies are the lines joined, gzip-compressed without a time stamp, so the same lines
always give the same bytes (what makes a replay rewrite an object identically).
"""

from __future__ import annotations

import base64
import gzip
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TypeAlias

import orjson

from ..models import Record

__all__ = [
    "HOUR_US",
    "Encoded",
    "Layout",
    "Position",
    "encode",
    "encode_record",
    "hour_of",
    "position_text",
]

_GZIP_LEVEL = 6
_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
_US = timedelta(microseconds=1)
HOUR_US = 3_600_000_000
"""Microseconds in an hour: ``epoch_us // HOUR_US`` numbers a record's UTC hour."""
_POSITION = r"\d+(?:_\d+)?"
_NAME_TAIL = re.compile(rf"^{_POSITION}-({_POSITION})$")

Position: TypeAlias = tuple[int, int]
"""A record's place in its shard, as :attr:`Record.position` gives it."""
Encoded: TypeAlias = tuple[Record, Position, int, bytes]
"""A record ready to buffer: itself, its position, its arrival time in epoch
microseconds, and its NDJSON line."""


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=_UTC) if when.tzinfo is None else when.astimezone(_UTC)


def _epoch_us(when: datetime) -> int:
    if not isinstance(when, datetime):
        raise TypeError(f"arrival_time must be a datetime, got {type(when).__name__}")
    return (_utc(when) - _EPOCH) // _US


def hour_of(record: Record) -> str:
    """The ``YYYY/MM/DD/HH`` part of a key for an object starting at ``record``."""
    return _utc(record.arrival_time).strftime("%Y/%m/%d/%H")


def position_text(record: Record) -> str:
    """The record's position as written in object names: ``<seq>`` or ``<seq>_<sub>``."""
    if record.sub_sequence_number is None:
        return record.sequence_number
    return f"{record.sequence_number}_{record.sub_sequence_number}"


def _parse_position(text: str) -> Position:
    seq, _, sub = text.partition("_")
    return (int(seq), int(sub) if sub else -1)


def encode_record(record: Record) -> bytes:
    """The record as one NDJSON line, newline included (see the module docstring)."""
    data = record.data
    if not isinstance(data, bytes):
        raise TypeError(f"Record.data must be bytes, got {type(data).__name__}")
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    else:
        line = data.strip()
        if b"\n" in line or b"\r" in line:
            # Raw line breaks in valid JSON can only be whitespace between tokens.
            line = line.replace(b"\r", b" ").replace(b"\n", b" ")
        return line + b"\n"
    envelope = {
        "data_base64": base64.b64encode(data).decode("ascii"),
        "partition_key": record.partition_key,
        "sequence_number": record.sequence_number,
        "sub_sequence_number": record.sub_sequence_number,
        "shard_id": record.shard_id,
        "arrival_time": _utc(record.arrival_time),
        "explicit_hash_key": record.explicit_hash_key,
    }
    return orjson.dumps(envelope, option=orjson.OPT_UTC_Z | orjson.OPT_APPEND_NEWLINE)


def encode(record: Record) -> Encoded:
    """Check and encode one record given to ``S3Sink.write``; raises TypeError or
    ValueError for a malformed one."""
    if not isinstance(record, Record):
        raise TypeError(f"S3Sink.write takes Records, got {type(record).__name__}")
    try:
        position = record.position
    except ValueError:
        raise ValueError(
            f"record has a malformed sequence number {record.sequence_number!r}"
        ) from None
    return record, position, _epoch_us(record.arrival_time), encode_record(record)


@dataclass(frozen=True, slots=True)
class Layout:
    """Keys and bodies of one sink's objects (``prefix`` already ends in ``/`` or is
    empty)."""

    prefix: str
    stream: str | None
    gzip: bool

    @property
    def extension(self) -> str:
        return ".ndjson.gz" if self.gzip else ".ndjson"

    @property
    def content_type(self) -> str:
        return "application/gzip" if self.gzip else "application/x-ndjson"

    def shard_prefix(self, hour: str, shard_id: str) -> str:
        """What every key of ``shard_id``'s objects starting in ``hour`` begins with."""
        name_prefix = f"{self.stream}-" if self.stream else ""
        return f"{self.prefix}{hour}/{name_prefix}{shard_id}-"

    def key(self, hour: str, shard_id: str, first: Record, last: Record) -> str:
        return (
            f"{self.shard_prefix(hour, shard_id)}"
            f"{position_text(first)}-{position_text(last)}{self.extension}"
        )

    def parse_key(self, key: str, shard_prefix: str) -> tuple[str, Position] | None:
        """``(first position text, last position)`` of a listed key that starts with
        ``shard_prefix``; None for a key this layout did not make."""
        if not key.endswith(self.extension):
            return None
        tail = key[len(shard_prefix) : -len(self.extension)]
        match = _NAME_TAIL.match(tail)
        if match is None:
            return None
        first = tail[: len(tail) - len(match.group(1)) - 1]
        return first, _parse_position(match.group(1))

    def body(self, lines: list[bytes]) -> bytes:
        """The object's bytes (gzip or plain); CPU-bound, run it in a worker thread."""
        data = b"".join(lines)
        return gzip.compress(data, compresslevel=_GZIP_LEVEL, mtime=0) if self.gzip else data
