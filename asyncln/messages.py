"""asyncln's peer-to-peer custom messages (BOLT 1 odd types >= 32768).

Each message is a 2-byte type followed by a TLV stream whose type 0 is the
message version. A decoder never returns a half-read message: it returns a
complete dataclass or raises DecodeError. docs/PROTOCOL.md lists every field.
"""

from dataclasses import dataclass
from typing import Optional, Union

from .policy import Policy
from .states import HoldState
from .wire import DecodeError, decode_tlv_stream, decode_tu, encode_tlv_stream, encode_tu

QUERY_INFO = 44701
INFO = 44703
PAYMENT_STATUS = 44705
ONLINE = 44707
MESSAGE_TYPES = (QUERY_INFO, INFO, PAYMENT_STATUS, ONLINE)

VERSION = 1
_VERSION = 0

# INFO fields
_RELAY = 1
_FEE_BASE = 2
_FEE_PPM = 4
_POLL_BLOCKS = 6
_MAX_HOLD = 8
_SAFETY = 10
_MAX_HELD_MSAT = 12
_MAX_HELD = 14
_MIN_HELD_MSAT = 15  # odd: a payer that ignores it is refused at admission, nothing worse

# PAYMENT_STATUS fields
_REASON = 1
_HASH = 2
_STATE = 4
_GIVE_UP = 6
_NEXT_POLL = 8
_ATTEMPTS = 10
_STATES = {1: HoldState.HELD, 2: HoldState.FAILED}
_STATE_CODES = {name: code for code, name in _STATES.items()}


@dataclass(frozen=True)
class QueryInfo:
    """"Do you hold payments, and on what terms?" """


@dataclass(frozen=True)
class PaymentStatus:
    """The holding node tells the payer what happened to its HTLC."""

    payment_hash: str
    state: HoldState
    give_up_height: int
    next_poll_height: int
    attempts: int
    reason: str


@dataclass(frozen=True)
class Online:
    """"I am back: deliver what you hold for me now." """


# An INFO message carries the sender's whole Policy.
Message = Union[QueryInfo, Policy, PaymentStatus, Online]


def encode(msg: Message) -> str:
    """Hex of the full message, as ``sendcustommsg`` wants it."""
    fields = {_VERSION: bytes([VERSION])}
    if isinstance(msg, QueryInfo):
        msg_type = QUERY_INFO
    elif isinstance(msg, Online):
        msg_type = ONLINE
    elif isinstance(msg, Policy):
        msg_type = INFO
        if msg.relay:
            fields[_RELAY] = b""
        fields.update({
            _FEE_BASE: encode_tu(msg.fee_base_msat), _FEE_PPM: encode_tu(msg.fee_ppm),
            _POLL_BLOCKS: encode_tu(msg.poll_blocks), _MAX_HOLD: encode_tu(msg.max_hold_blocks),
            _SAFETY: encode_tu(msg.safety_blocks), _MAX_HELD_MSAT: encode_tu(msg.max_held_msat),
            _MAX_HELD: encode_tu(msg.max_held), _MIN_HELD_MSAT: encode_tu(msg.min_held_msat),
        })
    else:
        msg_type = PAYMENT_STATUS
        fields.update({
            _REASON: _clip_utf8(msg.reason, 400), _HASH: bytes.fromhex(msg.payment_hash),
            _STATE: bytes([_STATE_CODES[msg.state]]), _GIVE_UP: encode_tu(msg.give_up_height),
            _NEXT_POLL: encode_tu(msg.next_poll_height), _ATTEMPTS: encode_tu(msg.attempts),
        })
    return (msg_type.to_bytes(2, "big") + encode_tlv_stream(fields)).hex()


def decode(payload: str) -> Optional[Message]:
    """Decode a custommsg payload; None when the type is not asyncln's."""
    try:
        data = bytes.fromhex(payload)
    except ValueError:
        raise DecodeError("payload is not hex")
    if len(data) < 2:
        raise DecodeError("message shorter than its type")
    msg_type = int.from_bytes(data[:2], "big")
    if msg_type not in MESSAGE_TYPES:
        return None
    known = {
        QUERY_INFO: (), ONLINE: (),
        INFO: (_FEE_BASE, _FEE_PPM, _POLL_BLOCKS, _MAX_HOLD, _SAFETY, _MAX_HELD_MSAT, _MAX_HELD),
        PAYMENT_STATUS: (_HASH, _STATE, _GIVE_UP, _NEXT_POLL, _ATTEMPTS),
    }[msg_type]
    fields = decode_tlv_stream(data[2:], (_VERSION,) + known)
    if fields.get(_VERSION) != bytes([VERSION]):
        raise DecodeError(f"unsupported message version {fields.get(_VERSION, b'').hex() or 'none'}")
    missing = [t for t in known if t not in fields]
    if missing:
        raise DecodeError(f"message {msg_type} lacks fields {missing}")

    def u(tlv_type: int) -> int:
        return decode_tu(fields[tlv_type], 8, tlv_type)

    if msg_type == QUERY_INFO:
        return QueryInfo()
    if msg_type == ONLINE:
        return Online()
    if msg_type == INFO:
        return Policy(relay=_RELAY in fields, fee_base_msat=u(_FEE_BASE), fee_ppm=u(_FEE_PPM),
                      poll_blocks=u(_POLL_BLOCKS), max_hold_blocks=u(_MAX_HOLD),
                      safety_blocks=u(_SAFETY), max_held_msat=u(_MAX_HELD_MSAT),
                      max_held=u(_MAX_HELD),
                      min_held_msat=u(_MIN_HELD_MSAT) if _MIN_HELD_MSAT in fields else 0)
    if len(fields[_HASH]) != 32:
        raise DecodeError("payment_hash must be 32 bytes", _HASH)
    state = _STATES.get(int.from_bytes(fields[_STATE], "big"))
    if state is None or len(fields[_STATE]) != 1:
        raise DecodeError("unknown payment state", _STATE)
    try:
        reason = fields.get(_REASON, b"").decode()
    except UnicodeDecodeError:
        raise DecodeError("reason is not UTF-8", _REASON)
    return PaymentStatus(payment_hash=fields[_HASH].hex(), state=state,
                         give_up_height=u(_GIVE_UP), next_poll_height=u(_NEXT_POLL),
                         attempts=u(_ATTEMPTS), reason=reason)


def _clip_utf8(text: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``text`` without splitting a character."""
    return text.encode()[:limit].decode(errors="ignore").encode()
