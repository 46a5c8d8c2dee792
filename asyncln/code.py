"""The payment code: one signed string naming a recipient B, its Rods and its note key.

B shares it once (as text or a QR code); a payer who has it can ask B's Rods
for a presigned invoice while B is offline. The format mirrors BOLT 12's
``lno1`` strings: a human-readable prefix, then a TLV stream written with the
bech32 character set and no checksum, because B's signature already protects
every byte. docs/PROTOCOL.md describes each field and why its type is even.

This module only builds and parses: the shell signs ``signed_message()`` with
``signmessage``; a payer checks it against ``node_id`` with asyncln/signature.py,
never with ``checkmessage``, which a crafted signature aborts.
"""

from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

from .wire import DecodeError, decode_tlv_stream, encode_tlv_stream, is_point

CODE_PREFIX = "aln1"
DEPOSIT_DESCRIPTION = "asyncln-rod:"
CODE_VERSION = 1
MAX_CODE_CHARS = 2000
SIGNED_PREFIX = "asyncln-code:"

VERSION = 0
NODE_ID = 2
RODS = 4
NOTE_KEY = 6
PAYEE_KEY = 8  # even: instead of the node id, for a recipient hidden from its payers
ROD_KEYS = 9   # odd: a payer that ignores it learns a Rod's key from the Rod's own info
SIGNATURE = 240
_KNOWN_EVEN = (VERSION, NODE_ID, RODS, NOTE_KEY, PAYEE_KEY, SIGNATURE)

_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_VALUES = {c: i for i, c in enumerate(_BECH32)}
_ZBASE32 = frozenset(b"ybndrfg8ejkmcpqxot1uwisza345h769")


@dataclass(frozen=True)
class Rod:
    """An always-online node that keeps B's presigned invoices."""

    node_id: str                     # hex, 33-byte compressed pubkey
    addresses: Tuple[str, ...] = ()  # "host:port" strings, as `connect` takes them
    onion_key: Optional[str] = None      # its asyncln onion key (record version 2)...
    onion_key_sig: Optional[str] = None  # ...signed by the Rod's node key (zbase32)


@dataclass(frozen=True)
class PaymentCode:
    """What a payer needs to reach B while B is offline."""

    node_id: Optional[str]      # B, hex; None in a private code, which names payee_key instead
    rods: Tuple[Rod, ...]       # at least one
    note_key: str               # hex 33-byte pubkey for notes (see note.py)
    # zbase32 from signmessage over signed_message(); in a private code, hex DER
    # by the payee key (asyncln/payee.py)
    signature: str = ""
    # Odd records below 240 from a newer writer: ignored, but kept because the
    # signature covers them and signed_message() must reproduce what B signed.
    extra_records: Tuple[Tuple[int, bytes], ...] = ()
    payee_key: Optional[str] = None  # hex: B's makesecret key, so payers never learn B's node id

    def signed_message(self) -> str:
        """The text B signs: every record below the signature, exactly as encoded."""
        return SIGNED_PREFIX + encode_tlv_stream(self._unsigned_records()).hex()

    def encode(self) -> str:
        if not self.signature:
            raise ValueError("a payment code must be signed before it is shared")
        records = self._unsigned_records()
        records[SIGNATURE] = self.signature.encode("ascii")
        text = CODE_PREFIX + _to_bech32(encode_tlv_stream(records))
        PaymentCode.decode(text)  # never hand out a code that payers would refuse
        return text

    @classmethod
    def decode(cls, text: str) -> "PaymentCode":
        """Parse and check everything but the signature; DecodeError on any bad input."""
        data = _from_bech32(text)
        # Type 0 always comes first, so a newer code says "unknown version"
        # rather than tripping over whichever new even field it carries.
        if len(data) < 3 or data[:2] != b"\x00\x01":
            raise DecodeError("payment code must start with its 1-byte version", VERSION)
        if data[2] != CODE_VERSION:
            raise DecodeError(f"unknown payment code version {data[2]}", VERSION)
        fields = decode_tlv_stream(data, _KNOWN_EVEN)
        for required, name in ((RODS, "rods"), (NOTE_KEY, "note key"), (SIGNATURE, "signature")):
            if required not in fields:
                raise DecodeError(f"payment code lacks its {name}", required)
        if (NODE_ID in fields) == (PAYEE_KEY in fields):
            raise DecodeError("payment code needs exactly one of node id and payee key", NODE_ID)
        if max(fields) > SIGNATURE:
            raise DecodeError("payment code has a record after its signature", max(fields))
        node = _point(fields[NODE_ID], "node id", NODE_ID) if NODE_ID in fields else None
        payee = _point(fields[PAYEE_KEY], "payee key", PAYEE_KEY) if PAYEE_KEY in fields else None
        rods = _decode_rods(fields[RODS])
        if node is not None and any(rod.node_id == node for rod in rods):
            raise DecodeError("a rod cannot be the recipient itself", RODS)
        return cls(
            node_id=node,
            rods=rods,
            note_key=_point(fields[NOTE_KEY], "note key", NOTE_KEY),
            signature=_signature(fields[SIGNATURE]) if node else _hex_signature(fields[SIGNATURE]),
            extra_records=tuple((t, v) for t, v in fields.items() if t % 2 == 1 and t != ROD_KEYS),
            payee_key=payee,
        )._with_rod_keys(fields.get(ROD_KEYS))

    def _with_rod_keys(self, raw: Optional[bytes]) -> "PaymentCode":
        """Attach each Rod's onion key and signature; only one canonical encoding is accepted."""
        if raw is None:
            return self
        keys, offset = {}, 0
        while offset < len(raw):
            if offset + 67 > len(raw) or offset + 67 + raw[offset + 66] > len(raw):
                raise DecodeError("truncated rod key", ROD_KEYS, offset)
            rod_id = _point(raw[offset:offset + 33], "rod id", ROD_KEYS)
            key = _point(raw[offset + 33:offset + 66], "rod onion key", ROD_KEYS)
            end = offset + 67 + raw[offset + 66]
            keys[rod_id] = (key, _signature(raw[offset + 67:end]))
            offset = end
        rods = tuple(replace(r, onion_key=keys[r.node_id][0], onion_key_sig=keys[r.node_id][1])
                     if r.node_id in keys else r for r in self.rods)
        code = replace(self, rods=rods)
        if _encode_rod_keys(rods) != raw:
            raise DecodeError("rod keys must follow the rods, once each", ROD_KEYS)
        return code

    def _unsigned_records(self) -> Dict[int, bytes]:
        records = dict(self.extra_records)
        records.update({
            VERSION: bytes([CODE_VERSION]),
            RODS: _encode_rods(self.rods),
            NOTE_KEY: bytes.fromhex(self.note_key),
        })
        if self.node_id is not None:
            records[NODE_ID] = bytes.fromhex(self.node_id)
        if self.payee_key is not None:
            records[PAYEE_KEY] = bytes.fromhex(self.payee_key)
        if any(rod.onion_key for rod in self.rods):
            records[ROD_KEYS] = _encode_rod_keys(self.rods)
        return records


def deposit_description(rod_id: str) -> str:
    """Every invoice B deposits names the Rod it is for; A and the Rod both insist on it.

    Without it, a Rod could serve A an invoice B issued to the Rod itself
    and settle its own bill with A's money.
    """
    return DEPOSIT_DESCRIPTION + rod_id


def _encode_rod_keys(rods: Tuple[Rod, ...]) -> bytes:
    """Per Rod with a key, in the Rods' order: id, onion key, signature length, signature."""
    out = bytearray()
    for rod in rods:
        if rod.onion_key:
            sig = (rod.onion_key_sig or "").encode("ascii")
            out += bytes.fromhex(rod.node_id) + bytes.fromhex(rod.onion_key) + bytes([len(sig)]) + sig
    return bytes(out)


def _encode_rods(rods: Tuple[Rod, ...]) -> bytes:
    """Per rod: 33-byte id, address count, then each address as length + UTF-8."""
    out = bytearray()
    for rod in rods:
        out += bytes.fromhex(rod.node_id) + bytes([len(rod.addresses)])
        for address in rod.addresses:
            raw = address.encode("utf-8")
            out += bytes([len(raw)]) + raw
    return bytes(out)


def _decode_rods(value: bytes) -> Tuple[Rod, ...]:
    rods: List[Rod] = []
    offset = 0
    while offset < len(value):
        if offset + 34 > len(value):
            raise DecodeError("truncated rod", RODS, offset)
        node = _point(value[offset:offset + 33], "rod id", RODS)
        count, offset = value[offset + 33], offset + 34
        addresses = []
        for _ in range(count):
            if offset >= len(value) or offset + 1 + value[offset] > len(value):
                raise DecodeError("truncated rod address", RODS, offset)
            end = offset + 1 + value[offset]
            addresses.append(_address(value[offset + 1:end], offset))
            offset = end
        if any(rod.node_id == node for rod in rods):
            raise DecodeError("duplicate rod", RODS, offset)
        rods.append(Rod(node, tuple(addresses)))
    if not rods:
        raise DecodeError("payment code names no rod", RODS)
    return tuple(rods)


def _address(raw: bytes, offset: int) -> str:
    try:
        address = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError("rod address is not UTF-8", RODS, offset) from None
    # Addresses end up in logs and in `connect` calls: no empty or control text.
    if not address or not address.isprintable():
        raise DecodeError("rod address is empty or not printable", RODS, offset)
    return address


def _hex_signature(raw: bytes) -> str:
    """A private code's signature: a DER signature by the payee key, as hex."""
    try:
        text = raw.decode("ascii")
        bytes.fromhex(text)
    except ValueError:
        raise DecodeError("signature is not hex", SIGNATURE) from None
    if not 16 <= len(text) <= 160 or text != text.lower():
        raise DecodeError("signature is not a DER signature in lower-case hex", SIGNATURE)
    return text


def _point(raw: bytes, name: str, tlv_type: int) -> str:
    if not is_point(raw):
        raise DecodeError(f"{name} is not a valid public key", tlv_type)
    return raw.hex()


def _signature(raw: bytes) -> str:
    if not raw:
        raise DecodeError("payment code signature is empty", SIGNATURE)
    if not set(raw) <= _ZBASE32:
        raise DecodeError("payment code signature is not zbase32", SIGNATURE)
    return raw.decode("ascii")


def _to_bech32(data: bytes) -> str:
    """5-bit groups, most significant first, the last one zero-padded."""
    groups = (len(data) * 8 + 4) // 5
    value = int.from_bytes(data, "big") << (groups * 5 - len(data) * 8)
    return "".join(_BECH32[(value >> (5 * i)) & 31] for i in reversed(range(groups)))


def _from_bech32(text: str) -> bytes:
    if len(text) > MAX_CODE_CHARS:
        raise DecodeError(f"payment code longer than {MAX_CODE_CHARS} characters")
    if not text.isascii():
        raise DecodeError("payment code has characters outside bech32")
    lower = text.lower()
    if text != lower and text != text.upper():
        raise DecodeError("payment code mixes upper and lower case")
    if not lower.startswith(CODE_PREFIX):
        raise DecodeError(f"payment code does not start with {CODE_PREFIX}")
    words = lower[len(CODE_PREFIX):]
    value = 0
    for position, char in enumerate(words):
        if char not in _BECH32_VALUES:
            raise DecodeError(f"invalid character {char!r} in payment code",
                              offset=len(CODE_PREFIX) + position)
        value = (value << 5) | _BECH32_VALUES[char]
    size, padding = divmod(len(words) * 5, 8)
    if padding > 4:
        raise DecodeError("payment code has a whole group of padding")
    if value & ((1 << padding) - 1):
        raise DecodeError("payment code has non-zero padding bits")
    return (value >> padding).to_bytes(size, "big")
