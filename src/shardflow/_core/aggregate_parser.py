"""Parsing the protobuf ``AggregatedRecord`` message inside a KPL aggregate.

:func:`shardflow.aggregation.deaggregate` checks the frame (magic, MD5) and hands the
message between them to :func:`parse_aggregated_record`. The parser in Python
(:func:`parse_in_python`) is the reference: it accepts what a protobuf parser accepts (any
field order, unknown fields, non-canonical varints, tags checked then dropped); records in
the layout every encoder writes are read inline, any other through :func:`_parse_record`.
When protobuf's C parser (upb, the optional ``protobuf`` extra) is installed,
:func:`parse_upb` reads the message first, in about half the time per record, and hands
over to the Python parser whenever its answer could differ.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

from .protobuf import read_varint, read_varint_rest, skip_field

__all__ = ["parse_aggregated_record", "parse_in_python", "parse_upb"]

# Protobuf tags (field number << 3 | wire type). The hot path spells those of
# AggregatedRecord as literals: 0x0A partition_key_table, 0x12 explicit_hash_key_table,
# 0x1A records (all length-delimited). In Record:
_PK_INDEX = 0x08  # partition_key_index = 1, varint
_EHK_INDEX = 0x10  # explicit_hash_key_index = 2, varint
_DATA = 0x1A  # data = 3, length-delimited
_TAGS = 0x22  # tags = 4, length-delimited
_TAG_KEY = 0x0A  # Tag.key = 1, length-delimited


def parse_aggregated_record(
    blob: bytes, i: int, end: int
) -> list[tuple[str, str | None, bytes]] | None:
    """The ``(partition_key, explicit_hash_key or None, data)`` records of the protobuf
    ``AggregatedRecord`` message in ``blob[i:end]``; None when it is not a valid aggregate
    (see :func:`parse_in_python`, whose answer this always is).

    Raises IndexError or ValueError on malformed input (the caller maps both to None).
    """
    records = parse_upb(blob, i, end)
    return parse_in_python(blob, i, end) if records is None else records


def parse_upb(blob: bytes, i: int, end: int) -> list[tuple[str, str | None, bytes]] | None:
    """The records of ``blob[i:end]`` as :func:`parse_in_python` reads them, parsed by
    protobuf's C parser; None when it cannot vouch for that answer: upb is not installed,
    or the message does not parse, misses a required field (a record's key index or data,
    a tag's key), has a key that is not valid UTF-8 (upb hands it over as bytes; the
    Python parser replaces the bad bytes, as Java's protobuf does) or a key index beyond
    its table."""
    upb = _upb()
    if upb is None:
        return None
    message_class, decode_error, has_field = upb
    ehk = "explicit_hash_key_index"
    try:
        message = message_class.FromString(memoryview(blob)[i:end])
    except decode_error:
        return None
    if not message.IsInitialized():
        return None
    pks = list(message.partition_key_table)
    ehks = list(message.explicit_hash_key_table)
    if bytes in set(map(type, pks)) or bytes in set(map(type, ehks)):
        return None
    try:
        return [
            (
                pks[r.partition_key_index],
                ehks[r.explicit_hash_key_index] if has_field(r, ehk) else None,
                r.data,
            )
            for r in message.records
        ]
    except IndexError:
        return None


@functools.cache
def _upb() -> tuple[Any, type[Exception], Any] | None:
    """(the AggregatedRecord message class, protobuf's DecodeError, Record.HasField) from
    protobuf's upb implementation, loaded on first use; None when protobuf is not
    installed or is not upb (its pure-Python implementation is slower than ours)."""
    try:
        implementation = importlib.import_module("google.protobuf.internal.api_implementation")
        descriptor_pb2 = importlib.import_module("google.protobuf.descriptor_pb2")
        descriptor_pool = importlib.import_module("google.protobuf.descriptor_pool")
        message_factory = importlib.import_module("google.protobuf.message_factory")
        message = importlib.import_module("google.protobuf.message")
    except ImportError:
        return None
    if implementation.Type() != "upb":
        return None
    # The KPL's messages.proto (amazon-kinesis-producer, aws/kinesis/protobuf), proto2:
    # per message, its fields as (name, number, type, label, message type or "").
    f = descriptor_pb2.FieldDescriptorProto
    string, uint64, data, message_type = f.TYPE_STRING, f.TYPE_UINT64, f.TYPE_BYTES, f.TYPE_MESSAGE
    required, optional, repeated = f.LABEL_REQUIRED, f.LABEL_OPTIONAL, f.LABEL_REPEATED
    schema = {
        "Tag": [("key", 1, string, required, ""), ("value", 2, string, optional, "")],
        "Record": [
            ("partition_key_index", 1, uint64, required, ""),
            ("explicit_hash_key_index", 2, uint64, optional, ""),
            ("data", 3, data, required, ""),
            ("tags", 4, message_type, repeated, "Tag"),
        ],
        "AggregatedRecord": [
            ("partition_key_table", 1, string, repeated, ""),
            ("explicit_hash_key_table", 2, string, repeated, ""),
            ("records", 3, message_type, repeated, "Record"),
        ],
    }
    proto = descriptor_pb2.FileDescriptorProto(
        name="shardflow_kpl_messages.proto", package="shardflow_kpl", syntax="proto2"
    )
    for message_name, fields in schema.items():
        described = proto.message_type.add(name=message_name)
        for name, number, kind, label, of in fields:
            field = described.field.add(name=name, number=number, type=kind, label=label)
            if of:
                field.type_name = f".shardflow_kpl.{of}"
    pool = descriptor_pool.DescriptorPool()  # our own: no clash with other KPL modules
    pool.Add(proto)
    get_class = message_factory.GetMessageClass
    record_class = get_class(pool.FindMessageTypeByName("shardflow_kpl.Record"))
    return (
        get_class(pool.FindMessageTypeByName("shardflow_kpl.AggregatedRecord")),
        message.DecodeError,
        record_class.HasField,
    )


def parse_in_python(blob: bytes, i: int, end: int) -> list[tuple[str, str | None, bytes]] | None:
    """The ``(partition_key, explicit_hash_key or None, data)`` records of the protobuf
    ``AggregatedRecord`` message in ``blob[i:end]``, read in Python; None when it is not a
    valid aggregate (a length past ``end``, a key index beyond its table).

    Raises IndexError or ValueError on malformed input (the caller maps both to None).
    """
    pks: list[str] = []
    ehks: list[str] = []
    out: list[tuple[str, str | None, bytes]] = []
    append = out.append
    # Records whose key index points past the table read so far (the tables may follow
    # the records): (position in out, pk index, ehk index), resolved at the end.
    later: list[tuple[int, int, int]] = []
    pk_count = ehk_count = 0
    while i < end:
        tag = blob[i]
        i += 1
        if tag >= 0x80:
            tag, i = read_varint_rest(blob, i, tag)
        if tag == 0x1A:  # records
            n = blob[i]
            i += 1
            if n >= 0x80:
                b = blob[i]
                if b < 0x80:
                    n = (n & 0x7F) | (b << 7)
                    i += 1
                else:
                    n, i = read_varint_rest(blob, i, n)
            stop = i + n
            if stop > end:
                return None
            # Fast path for the layout every encoder writes: 08 pk [10 ehk] 1A len data,
            # one- or two-byte varints. Anything else goes through _parse_record.
            if blob[i] == 0x08:
                p = blob[i + 1]
                j = i + 2
                if p >= 0x80:
                    b = blob[j]
                    p = (p & 0x7F) | (b << 7) if b < 0x80 else -1
                    j += 1
                e = -1
                if blob[j] == 0x10:
                    e = blob[j + 1]
                    j += 2
                    if e >= 0x80:
                        b = blob[j]
                        e = (e & 0x7F) | (b << 7) if b < 0x80 else -2
                        j += 1
                if p >= 0 and e >= -1 and blob[j] == 0x1A:
                    n = blob[j + 1]
                    j += 2
                    if n >= 0x80:
                        b = blob[j]
                        n = (n & 0x7F) | (b << 7) if b < 0x80 else -1
                        j += 1
                    if j + n == stop and n >= 0 and p < pk_count and e < ehk_count:
                        append((pks[p], None if e < 0 else ehks[e], blob[j:stop]))
                        i = stop
                        continue
            p, e, data = _parse_record(blob, i, stop)
            if p < pk_count and e < ehk_count:
                append((pks[p], None if e < 0 else ehks[e], data))
            else:
                later.append((len(out), p, e))
                append(("", None, data))
            i = stop
        elif tag == 0x0A or tag == 0x12:  # key tables
            n = blob[i]
            i += 1
            if n >= 0x80:
                n, i = read_varint_rest(blob, i, n)
            stop = i + n
            if stop > end:
                return None
            # Invalid UTF-8 is replaced, as Java protobuf does for proto2 strings.
            if tag == 0x0A:
                pks.append(blob[i:stop].decode("utf-8", "replace"))
                pk_count += 1
            else:
                ehks.append(blob[i:stop].decode("utf-8", "replace"))
                ehk_count += 1
            i = stop
        else:  # unknown field, or a known number with another wire type
            i = skip_field(blob, i, tag, end)
    if i != end:
        return None
    if later:
        try:
            for at, p, e in later:
                out[at] = (pks[p], None if e < 0 else ehks[e], out[at][2])
        except IndexError:  # a key index beyond its table
            return None
    return out


def _parse_record(blob: bytes, i: int, stop: int) -> tuple[int, int, bytes]:
    """Parse one Record message in ``blob[i:stop]`` in full generality: any field order,
    repeated scalars (the last wins), tags, unknown fields, long varints.

    Returns (partition key index, explicit hash key index or -1, data); raises ValueError
    or IndexError when the record is malformed or misses a required field.
    """
    pk_index = ehk_index = -1
    data = None
    while i < stop:
        tag, i = read_varint(blob, i)
        if tag == _PK_INDEX:
            pk_index, i = read_varint(blob, i)
        elif tag == _EHK_INDEX:
            ehk_index, i = read_varint(blob, i)
        elif tag == _DATA:
            n, i = read_varint(blob, i)
            data = blob[i : i + n]
            i += n
        elif tag == _TAGS:
            n, i = read_varint(blob, i)
            _check_tag(blob, i, min(i + n, stop))
            i += n
        else:
            i = skip_field(blob, i, tag, stop)
    if i != stop:
        raise ValueError("field runs past its record")
    if pk_index < 0 or data is None:
        raise ValueError("record misses a required field")
    return pk_index, ehk_index, data


def _check_tag(blob: bytes, i: int, end: int) -> None:
    """Validate a Tag message in ``blob[i:end]``: its required key must be present."""
    has_key = False
    while i < end:
        tag, i = read_varint(blob, i)
        has_key |= tag == _TAG_KEY
        i = skip_field(blob, i, tag, end)
    if not has_key:
        raise ValueError("tag without key")
