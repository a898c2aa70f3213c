"""Parsing the protobuf ``AggregatedRecord`` message inside a KPL aggregate.

:func:`shardflow.aggregation.deaggregate` checks the frame (magic, MD5) and hands the
message between them to :func:`parse_aggregated_record`. The parser accepts what a
protobuf parser accepts: any field order, unknown fields, non-canonical varints, and tags
(checked, then dropped). Records in the layout every encoder writes are read inline; any
other record goes through :func:`_parse_record`.
"""

from __future__ import annotations

from .protobuf import read_varint, read_varint_rest, skip_field

__all__ = ["parse_aggregated_record"]

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
    (a length past ``end``, a key index beyond its table).

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
