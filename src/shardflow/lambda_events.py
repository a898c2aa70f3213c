"""User records from an AWS Lambda Kinesis event: what a Lambda function needs to read a
stream written by shardflow's producer (``aggregate=True``) or the KPL.

Lambda hands a function the raw Kinesis records of one shard's batch: ``kinesis.data``
is base64 and a KPL aggregate arrives as one record, not unpacked. :func:`lambda_records`
decodes the data, unpacks aggregates (sub-sequence numbers as the KCL numbers them) and
returns :class:`~shardflow.models.Record` values, the same the Consumer delivers::

    from shardflow import lambda_records

    def handler(event, context):
        for record in lambda_records(event):
            process(record.json())

The event carries no shard hash-key range, so by default every sub-record is returned.
Given the stream's ``shards``, an aggregate holding a sub-record that hashes outside the
shard it was read from is dropped whole, as the KCL's ``AggregatorUtil.deaggregate``
does: such an aggregate landed through a stale shard map and shardflow's producer (like
the KPL) sends all its records again, so without ``shards`` they are seen twice.

A value module: it makes no AWS calls (it uses the codec, the models and the partition
key hash and range rule of :mod:`shardflow.shardmap`).
"""

from __future__ import annotations

import binascii
import logging
from base64 import b64decode
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from .aggregation import MAGIC, deaggregate
from .consumer.record_conversion import aggregate_rows, as_records
from .models import Record, Shard
from .shardmap import all_within

__all__ = ["lambda_records"]

log = logging.getLogger("shardflow.lambda")


def lambda_records(
    event: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    *,
    shards: Iterable[Shard] | None = None,
) -> list[Record]:
    """The user records of a Lambda Kinesis event, in event order, aggregates unpacked.

    ``event`` is the event Lambda passed to the handler, or its ``"Records"`` list. Each
    record's ``shard_id`` comes from its ``eventID`` (``"shardId-...:<sequence number>"``),
    ``arrival_time`` from ``kinesis.approximateArrivalTimestamp`` (UTC). A plain record has
    ``sub_sequence_number`` None; the user records of a KPL aggregate share its sequence
    number and are numbered from 0. Data that only looks like an aggregate (bad MD5 or
    protobuf) is returned as plain data, as the KCL does (see ``deaggregate``).

    ``shards`` (e.g. ``Shard.from_api`` of each ListShards entry, fetched at cold start)
    turns on the KCL's whole-aggregate drop for records of the shards it lists; records of
    a shard it does not list are kept (logged once per call). Dropped aggregates are
    logged with the number of user records they held.

    Raises ValueError naming the record for an event that is not a Kinesis event or has
    a missing or malformed field (e.g. data that is not base64), TypeError for an event of
    the wrong type. Never calls AWS.
    """
    items = _event_records(event)
    ranges = _ranges(shards)
    out: list[Record] = []
    unknown: set[str] = set()
    dropped_aggregates = dropped_records = 0
    for number, item in enumerate(items):
        shard_id, seq, key, data, arrival = _fields(number, item)
        subs = deaggregate(data) if data.startswith(MAGIC) else None
        if subs is None:
            out.append(Record(data, key, seq, None, shard_id, arrival))
            continue
        if ranges is not None:
            bounds = ranges.get(shard_id)
            if bounds is None:
                unknown.add(shard_id)
            elif not all_within(subs, *bounds):
                dropped_aggregates += 1
                dropped_records += len(subs)
                continue
        out += as_records(aggregate_rows(subs, seq, shard_id, arrival))
    if dropped_aggregates:
        log.info(
            "dropped %d aggregates (%d user records) holding records that hash outside "
            "their shard, as the KCL does; the producer sends them again",
            dropped_aggregates,
            dropped_records,
        )
    if unknown:
        log.warning(
            "no hash-key range given for %s: their aggregates are kept whole",
            ", ".join(sorted(unknown)),
        )
    return out


def _event_records(event: object) -> Sequence[Mapping[str, Any]]:
    if isinstance(event, Mapping):
        if "Records" not in event:
            raise ValueError("not a Lambda event: it has no 'Records' list")
        event = event["Records"]
    if isinstance(event, (str, bytes)) or not isinstance(event, Sequence):
        raise TypeError(
            "lambda_records() takes a Lambda Kinesis event or its 'Records' list, "
            f"got {type(event).__name__}"
        )
    return event


def _ranges(shards: Iterable[Shard] | None) -> dict[str, tuple[int, int]] | None:
    if shards is None:
        return None
    ranges: dict[str, tuple[int, int]] = {}
    for shard in shards:
        if not isinstance(shard, Shard):
            raise TypeError(f"shards must hold shardflow Shard values, got {type(shard).__name__}")
        ranges[shard.shard_id] = (shard.starting_hash_key, shard.ending_hash_key)
    return ranges


def _fields(number: int, item: Any) -> tuple[str, str, str, bytes, datetime]:
    """(shard id, sequence number, partition key, data, arrival time) of one event record.

    The well-formed case is read directly; anything unexpected goes to :func:`_refuse`,
    which names what is wrong.
    """
    try:
        kinesis = item["kinesis"]
        seq = kinesis["sequenceNumber"]
        key = kinesis["partitionKey"]
        stamp = kinesis["approximateArrivalTimestamp"]
        text = kinesis["data"]
        shard_id, _, event_seq = item["eventID"].partition(":")
        if (  # exact types: a bool is no timestamp
            type(seq) is not str
            or type(key) is not str
            or type(text) is not str
            or type(stamp) not in _NUMBERS
            or not key
            or not shard_id
            or event_seq != seq
        ):
            raise ValueError  # explained below
        data = b64decode(text, validate=True)
        arrival = datetime.fromtimestamp(stamp, _UTC)
    except (LookupError, TypeError, AttributeError, ValueError, OverflowError, OSError):
        raise _refuse(number, item) from None
    return shard_id, seq, key, data, arrival


_NUMBERS = (int, float)
_UTC = timezone.utc


def _refuse(number: int, item: object) -> ValueError:
    """The ValueError naming what is wrong with ``Records[number]``."""
    where = f"Records[{number}]"
    if not isinstance(item, Mapping):
        return ValueError(f"{where} is not an object: {type(item).__name__}")
    kinesis = item.get("kinesis")
    if not isinstance(kinesis, Mapping):
        source = item.get("eventSource", "unknown")
        return ValueError(f"{where} is not a Kinesis record (eventSource {source!r})")
    for owner, name, prefix in (
        (kinesis, "sequenceNumber", "kinesis."),
        (kinesis, "partitionKey", "kinesis."),
        (kinesis, "data", "kinesis."),
        (item, "eventID", ""),
    ):
        value = owner.get(name)
        if not isinstance(value, str) or not value:
            return ValueError(f"{where}: {prefix}{name} is missing or not a string")
    seq, event_id = kinesis["sequenceNumber"], item["eventID"]
    shard_id, colon, event_seq = event_id.partition(":")
    if not colon or not shard_id or event_seq != seq:
        return ValueError(f"{where}: eventID {event_id!r} is not '<shard id>:{seq}'")
    try:
        b64decode(kinesis["data"], validate=True)
    except binascii.Error:
        return ValueError(f"{where}: kinesis.data is not base64")
    stamp = kinesis.get("approximateArrivalTimestamp")
    if type(stamp) not in _NUMBERS:
        return ValueError(
            f"{where}: kinesis.approximateArrivalTimestamp is missing or not a number"
        )
    return ValueError(f"{where}: kinesis.approximateArrivalTimestamp is out of range")
