"""Protobuf (proto2) wire-format primitives: varints and skipping unknown fields.

Just what the KPL aggregate codec (:mod:`shardflow.aggregation`) needs, written by hand so
that there is no protobuf dependency and tuned for CPython: small varints come from a
precomputed table, and reading is split so that callers can decode one-byte varints inline
and call :func:`read_varint_rest` only for longer ones.
"""

from __future__ import annotations

__all__ = [
    "MAX_GROUP_DEPTH",
    "MAX_UINT64",
    "VARINT",
    "VARINT_TABLE_SIZE",
    "encode_varint",
    "read_varint",
    "read_varint_rest",
    "skip_field",
    "varint",
    "varint_len",
]

MAX_UINT64 = (1 << 64) - 1
MAX_GROUP_DEPTH = 100  # protobuf's default recursion limit, for nested unknown groups


# --- encoding ---------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """The varint encoding of a non-negative ``value``."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


VARINT_TABLE_SIZE = 4096
VARINT: tuple[bytes, ...] = tuple(encode_varint(n) for n in range(VARINT_TABLE_SIZE))
"""``VARINT[n]`` is ``encode_varint(n)`` for ``n < VARINT_TABLE_SIZE``."""


def varint(value: int) -> bytes:
    """``encode_varint(value)``, from the table when it is small enough."""
    return VARINT[value] if value < VARINT_TABLE_SIZE else encode_varint(value)


def varint_len(value: int) -> int:
    """Bytes of the varint encoding of a non-negative ``value``."""
    return (value.bit_length() + 6) // 7 or 1


# --- decoding ---------------------------------------------------------------------------


def read_varint_rest(blob: bytes, i: int, value: int) -> tuple[int, int]:
    """Finish a varint whose first byte (>= 0x80) was ``value`` and whose next byte is at
    ``blob[i]``; return (value, index after it).

    Raises ValueError for a varint over 64 bits or longer than 10 bytes, IndexError when
    the bytes run out.
    """
    value &= 0x7F
    shift = 7
    while True:
        b = blob[i]
        i += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            if value > MAX_UINT64:
                raise ValueError("varint too large")
            return value, i
        shift += 7
        if shift >= 70:
            raise ValueError("varint too long")


def read_varint(blob: bytes, i: int) -> tuple[int, int]:
    """The varint at ``blob[i]`` and the index after it. Raises as :func:`read_varint_rest`."""
    value = blob[i]
    if value < 0x80:
        return value, i + 1
    return read_varint_rest(blob, i + 1, value)


def skip_field(blob: bytes, i: int, tag: int, limit: int, depth: int = 0) -> int:
    """Skip the value of an unknown field with ``tag`` starting at ``blob[i]``; return the
    next index.

    Raises ValueError on field number 0, an invalid wire type, an unmatched end-group,
    groups nested deeper than protobuf's recursion limit, or a value running past
    ``limit``; IndexError when the bytes run out.
    """
    wire = tag & 7
    if tag >> 3 == 0 or tag > 0xFFFFFFFF:
        raise ValueError("field number out of range")
    if wire == 0:
        _, i = read_varint(blob, i)
    elif wire == 2:
        n, i = read_varint(blob, i)
        i += n
    elif wire == 1:
        i += 8
    elif wire == 5:
        i += 4
    elif wire == 3:  # a group: fields up to the end-group tag of the same number
        if depth >= MAX_GROUP_DEPTH:
            raise ValueError("groups nested too deeply")
        while True:
            inner, i = read_varint(blob, i)
            if inner == tag + 1:
                break
            i = skip_field(blob, i, inner, limit, depth + 1)
    else:  # an end-group without its start, or wire type 6 or 7
        raise ValueError(f"unexpected wire type {wire}")
    if i > limit:
        raise ValueError("field runs past its message")
    return i
