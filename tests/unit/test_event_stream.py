"""The consumer's event-stream decoder (AWS's binary framing of SubscribeToShard):
messages split anywhere across chunks, every header type skipped or read, and corrupt
frames refused. Frames are built here from the format's description (prelude of total
length, headers length and CRC32; headers; payload; message CRC32)."""

from __future__ import annotations

import struct
from zlib import crc32

import pytest

from shardflow.consumer._transport import EventStreamDecoder, encode_message


def frame(raw_headers: bytes, payload: bytes) -> bytes:
    prelude = struct.pack(">II", 12 + len(raw_headers) + len(payload) + 4, len(raw_headers))
    message = prelude + struct.pack(">I", crc32(prelude)) + raw_headers + payload
    return message + struct.pack(">I", crc32(message))


def header(name: str, kind: int, value: bytes) -> bytes:
    return bytes([len(name)]) + name.encode() + bytes([kind]) + value


def test_messages_split_at_every_byte_come_out_whole_and_in_order() -> None:
    messages = [
        encode_message({":message-type": "event", ":event-type": "initial-response"}, b"{}"),
        encode_message({":message-type": "event", ":event-type": "SubscribeToShardEvent"},
                       b'{"Records":[],"ContinuationSequenceNumber":"1"}'),
        encode_message({":message-type": "exception",
                        ":exception-type": "InternalFailureException"}, b'{"message":"x"}'),
    ]
    stream = b"".join(messages)
    for cut in range(1, len(stream)):
        decoder = EventStreamDecoder()
        out = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:])
        assert [h[":event-type"] if ":event-type" in h else h[":exception-type"]
                for h, _ in out] == ["initial-response", "SubscribeToShardEvent",
                                     "InternalFailureException"]
        assert out[1][1] == b'{"Records":[],"ContinuationSequenceNumber":"1"}'
        assert not decoder.pending


def test_headers_of_every_type_are_skipped_and_strings_read() -> None:
    raw = (header("t", 0, b"") + header("f", 1, b"") + header("b", 2, b"\x01")
           + header("s", 3, b"\x00\x02") + header("i", 4, b"\x00" * 4)
           + header("l", 5, b"\x00" * 8) + header("by", 6, b"\x00\x03abc")
           + header(":event-type", 7, b"\x00\x03abc") + header("ts", 8, b"\x00" * 8)
           + header("u", 9, b"\x00" * 16))
    [(headers, payload)] = EventStreamDecoder().feed(frame(raw, b"{}"))
    assert headers == {":event-type": "abc"}
    assert payload == b"{}"


@pytest.mark.parametrize("where", [0, 9, 20, -1])
def test_a_corrupt_frame_is_refused(where: int) -> None:
    data = bytearray(encode_message({":event-type": "x"}, b"payload"))
    data[where] ^= 0x01
    with pytest.raises(ValueError, match=r"CRC|length"):
        EventStreamDecoder().feed(bytes(data))
