"""BOLT 1 primitives: BigSize, truncated integers and TLV streams.

Every decoder raises :class:`DecodeError` carrying the offending TLV type and
byte offset, so callers can build an ``invalid_onion_payload`` failure or a
log line without guessing what went wrong.
"""

import functools
from typing import Dict, Iterable, Mapping, Optional, Tuple

from coincurve import PublicKey


class DecodeError(ValueError):
    """Input that does not follow the wire format."""

    def __init__(self, message: str, tlv_type: int = 0, offset: int = 0):
        super().__init__(message)
        self.tlv_type = tlv_type
        self.offset = offset


def encode_bigsize(value: int) -> bytes:
    if value < 0:
        raise ValueError("bigsize cannot be negative")
    if value < 0xFD:
        return bytes([value])
    if value <= 0xFFFF:
        return b"\xfd" + value.to_bytes(2, "big")
    if value <= 0xFFFFFFFF:
        return b"\xfe" + value.to_bytes(4, "big")
    return b"\xff" + value.to_bytes(8, "big")


def decode_bigsize(data: bytes, offset: int = 0) -> Tuple[int, int]:
    """Return (value, new offset); rejects truncation and non-minimal encodings."""
    if offset >= len(data):
        raise DecodeError("truncated bigsize", offset=offset)
    first = data[offset]
    if first < 0xFD:
        return first, offset + 1
    width, minimum = {0xFD: (2, 0xFD), 0xFE: (4, 0x10000), 0xFF: (8, 0x100000000)}[first]
    end = offset + 1 + width
    if end > len(data):
        raise DecodeError("truncated bigsize", offset=offset)
    value = int.from_bytes(data[offset + 1:end], "big")
    if value < minimum:
        raise DecodeError("non-minimal bigsize", offset=offset)
    return value, end


def encode_tu(value: int) -> bytes:
    """Truncated unsigned integer: big-endian with leading zero bytes removed."""
    if value < 0:
        raise ValueError("truncated integer cannot be negative")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def decode_tu(value: bytes, max_bytes: int, tlv_type: int = 0) -> int:
    if len(value) > max_bytes:
        raise DecodeError(f"tu{max_bytes * 8} too long", tlv_type)
    if value[:1] == b"\x00":
        raise DecodeError("non-minimal truncated integer", tlv_type)
    return int.from_bytes(value, "big")


def encode_tlv_stream(records: Mapping[int, bytes]) -> bytes:
    out = bytearray()
    for tlv_type in sorted(records):
        value = records[tlv_type]
        out += encode_bigsize(tlv_type) + encode_bigsize(len(value)) + value
    return bytes(out)


def decode_tlv_stream(data: bytes, known_even: Iterable[int] = ()) -> Dict[int, bytes]:
    """Decode a TLV stream following BOLT 1.

    Types must strictly increase. An unknown even type is an error ("it's
    OK to be odd"): the sender marked it as something we must understand.
    """
    known = set(known_even)
    records: Dict[int, bytes] = {}
    offset, last, end = 0, -1, len(data)
    while offset < end:
        start = offset
        if data[offset] < 0xFD:  # one-byte type and length, the common case, inline
            tlv_type, offset = data[offset], offset + 1
        else:
            tlv_type, offset = decode_bigsize(data, offset)
        if tlv_type <= last:
            raise DecodeError("TLV types out of order or repeated", tlv_type, start)
        if offset < end and data[offset] < 0xFD:
            length, offset = data[offset], offset + 1
        else:
            length, offset = decode_bigsize(data, offset)
        if offset + length > len(data):
            raise DecodeError("truncated TLV value", tlv_type, start)
        if tlv_type % 2 == 0 and tlv_type not in known:
            raise DecodeError("unknown even TLV type", tlv_type, start)
        records[tlv_type] = data[offset:offset + length]
        offset += length
        last = tlv_type
    return records


def is_point(key: bytes) -> bool:
    """A compressed key that is really on the curve: something can pay or encrypt to it."""
    return _is_point(bytes(key))


@functools.lru_cache(maxsize=1 << 14)
def _is_point(key: bytes) -> bool:
    """Cached: the same recipients and payers come back HTLC after HTLC, and parsing a
    key was a sixth of a held HTLC's admission (bench/bench_core.py)."""
    if len(key) != 33 or key[0] not in (2, 3):
        return False
    try:
        PublicKey(key)
    except ValueError:
        return False
    return True


def find_tlv(prefixed_payload: bytes, wanted: int) -> Optional[Tuple[int, bytes]]:
    """(offset in the TLV stream, value) of type ``wanted``, or None without one.

    ``prefixed_payload`` is the hook's ``onion.payload``: a BigSize length,
    then the TLV stream. Only the headers are walked, up to ``wanted``.
    """
    length, offset = decode_bigsize(prefixed_payload, 0)
    if offset + length != len(prefixed_payload):
        raise DecodeError("payload length prefix does not match", 0, 0)
    end, stream_start = len(prefixed_payload), offset
    while offset < end:
        start = offset - stream_start
        tlv_type, offset = decode_bigsize(prefixed_payload, offset)
        value_len, offset = decode_bigsize(prefixed_payload, offset)
        if tlv_type == wanted:
            if offset + value_len > end:
                raise DecodeError(f"truncated TLV {wanted}", wanted, start)
            return start, prefixed_payload[offset:offset + value_len]
        if tlv_type > wanted:
            return None
        offset += value_len
    return None
