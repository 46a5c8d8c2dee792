"""asyncln's peer-to-peer custom messages (BOLT 1 odd types >= 32768).

Each message is a 2-byte type followed by a TLV stream whose type 0 is the
message version. A decoder never returns a half-read message: it returns a
complete dataclass or raises DecodeError. One table, ``_SPECS``, says which
TLV type carries which dataclass field and how; encode and decode both read
it, so they cannot drift apart. docs/PROTOCOL.md lists every field.
"""

from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

from .note import MAX_SEALED_BYTES
from .policy import Policy
from .states import HoldState
from .wire import (
    DecodeError,
    decode_bigsize,
    decode_tlv_stream,
    decode_tu,
    encode_bigsize,
    encode_tlv_stream,
    encode_tu,
    is_point,
)

QUERY_INFO = 44701
INFO = 44703
PAYMENT_STATUS = 44705
ONLINE = 44707
DEPOSIT = 44709
POOL_STATUS = 44711
INVOICE_REQUEST = 44713
INVOICE_RESPONSE = 44715
NOTE = 44717
NOTE_ACK = 44719
CANCEL_REQUEST = 44721
CANCEL_ANSWER = 44723
NOTE_ANSWER = 44725

VERSION = 1
_VERSION = 0

MAX_MESSAGE_BYTES = 65535  # type included: BOLT 8 frames a message with a u16 length
MAX_DEPOSIT_BATCH = 32
MAX_BOLT11_CHARS = 2048
MAX_REASON_BYTES = 200
MAX_OFFER_BYTES = 600      # a private offer: hash, expiry, CLTV, signature and a 366-byte tail
MAX_DER_BYTES = 72         # an ECDSA signature, DER encoded


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


@dataclass(frozen=True)
class Deposit:
    """Presigned invoices B leaves with its Rod for payers while B is offline.

    An empty deposit only asks for a PoolStatus.
    """

    invoices: Tuple[str, ...]
    # Private offers (asyncln/payee.py), hex, one per invoice when present, and
    # the payee key payers will name: for payers who must not learn B's node id.
    offers: Tuple[str, ...] = ()
    payee_key: Optional[str] = None
    # The payee key's signature over payee.owner_statement(depositor, Rod), hex DER:
    # without it the Rod does not file the payee key.
    payee_key_sig: Optional[str] = None


@dataclass(frozen=True)
class PoolStatus:
    """The Rod's answer to a Deposit: what it now holds for B, and what it will take."""

    level: int                 # B's unexpired invoices the Rod holds now
    accepted: int              # how many of the last deposit it kept
    max_invoices: int
    min_expiry_seconds: int    # an invoice expiring sooner is refused
    refused: Tuple[str, ...] = ()


@dataclass(frozen=True)
class InvoiceRequest:
    """A payer asks a Rod for one of B's invoices; request_id pairs the answer with it."""

    request_id: str            # hex, 8 bytes
    recipient: str             # hex node id of B, or its payee key when ``private``
    amount_msat: int
    private: bool = False      # a private offer, not B's invoice (which names B)


@dataclass(frozen=True)
class InvoiceResponse:
    """The Rod's answer: an invoice, or an asyncln error code (errors.Code) saying why not."""

    request_id: str
    bolt11: Optional[str] = None
    error_code: Optional[int] = None
    error: str = ""
    offer: Optional[str] = None  # hex private offer, in answer to a private request


@dataclass(frozen=True)
class Note:
    """An end-to-end-encrypted note for B (note.seal), kept by the Rod until B acknowledges it."""

    recipient: str             # B's node id, or its payee key when ``private``
    payment_hash: str
    sealed: str                # hex
    private: bool = False


@dataclass(frozen=True)
class NoteAnswer:
    """The Rod's answer to a payer's Note: whether it stored the note for the recipient."""

    payment_hash: str
    stored: bool
    reason: str = ""
    error_code: Optional[int] = None  # why not, as an asyncln error code (asyncln/errors.py)


@dataclass(frozen=True)
class NoteAck:
    """B stored the note for this payment: the Rod may delete its copy."""

    payment_hash: str


@dataclass(frozen=True)
class CancelRequest:
    """The payer asks the holding node to fail its held HTLC back now."""

    payment_hash: str


@dataclass(frozen=True)
class CancelAnswer:
    """The holding node's answer to a CancelRequest."""

    payment_hash: str
    accepted: bool
    reason: str = ""
    error_code: Optional[int] = None  # why not, as an asyncln error code (asyncln/errors.py)


# An INFO message carries the sender's whole Policy.
Message = Union[QueryInfo, Policy, PaymentStatus, Online, Deposit, PoolStatus, InvoiceRequest,
                InvoiceResponse, Note, NoteAck, CancelRequest, CancelAnswer, NoteAnswer]


@dataclass(frozen=True)
class _Kind:
    """How one field's value becomes a TLV value and back."""

    pack: Callable[[Any], Optional[bytes]]  # None: leave the field out
    unpack: Callable[[bytes], Any]          # raises DecodeError naming what is wrong


_REQUIRED = object()


@dataclass(frozen=True)
class _Field:
    tlv: int
    name: str                  # the dataclass attribute
    kind: _Kind
    default: Any = _REQUIRED   # what an absent field decodes to


@dataclass(frozen=True)
class _Spec:
    msg_type: int
    cls: type
    fields: Tuple[_Field, ...]
    check: Optional[Callable[[Dict[str, Any]], None]] = None  # a rule across fields


def _tu(max_bytes: int, least: int = 0, most: Optional[int] = None) -> _Kind:
    def unpack(raw: bytes) -> int:
        value = decode_tu(raw, max_bytes)
        if value < least:
            raise DecodeError(f"must be at least {least}")
        if most is not None and value > most:
            raise DecodeError(f"must be at most {most}")
        return value
    return _Kind(encode_tu, unpack)


def _hex(least: int, most: int) -> _Kind:
    def unpack(raw: bytes) -> str:
        if not least <= len(raw) <= most:
            size = str(least) if least == most else f"{least} to {most}"
            raise DecodeError(f"must be {size} bytes")
        return raw.hex()
    return _Kind(bytes.fromhex, unpack)


def _text(limit: int) -> _Kind:
    """UTF-8, clipped by the sender: a reason never makes a message unsendable."""
    def unpack(raw: bytes) -> str:
        if len(raw) > limit:
            raise DecodeError(f"is longer than {limit} bytes")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise DecodeError("is not UTF-8") from None
    return _Kind(lambda text: _clip_utf8(text, limit), unpack)


def _code(codes: Mapping[int, Any]) -> _Kind:
    """One of a few values, as a one-byte code."""
    numbers = {value: code for code, value in codes.items()}

    def pack(value: Any) -> bytes:
        if value not in numbers:
            raise ValueError(f"{value!r} has no wire code")
        return bytes([numbers[value]])

    def unpack(raw: bytes) -> Any:
        if len(raw) != 1 or raw[0] not in codes:
            raise DecodeError("has an unknown code")
        return codes[raw[0]]
    return _Kind(pack, unpack)


def _list(item: _Kind, most: int) -> _Kind:
    """Up to ``most`` items, each a BigSize length then its bytes: a TLV type cannot repeat."""
    def pack(values: Tuple[Any, ...]) -> bytes:
        return b"".join(encode_bigsize(len(raw)) + raw for raw in map(item.pack, values))

    def unpack(raw: bytes) -> Tuple[Any, ...]:
        values, offset = [], 0
        while offset < len(raw):
            if len(values) == most:
                raise DecodeError(f"has more than {most} items")
            length, offset = decode_bigsize(raw, offset)
            if offset + length > len(raw):
                raise DecodeError(f"item {len(values)} is truncated")
            try:
                values.append(item.unpack(raw[offset:offset + length]))
            except DecodeError as err:
                raise DecodeError(f"item {len(values)} {err}") from None
            offset += length
        return tuple(values)
    return _Kind(pack, unpack)


def _unpack_point(raw: bytes) -> str:
    if not is_point(raw):
        raise DecodeError("is not a valid public key")
    return raw.hex()


def _unpack_bolt11(raw: bytes) -> str:
    # Checked, not parsed: the Rod and the payer run lightningd's `decode` on it anyway.
    if not 1 <= len(raw) <= MAX_BOLT11_CHARS:
        raise DecodeError(f"must be 1 to {MAX_BOLT11_CHARS} characters")
    if not raw.isascii():
        raise DecodeError("is not ASCII")
    return raw.decode("ascii")


def _unpack_flag(raw: bytes) -> bool:
    if raw:
        raise DecodeError("carries no value")
    return True


def _key_with_sig(values: Dict[str, Any]) -> None:
    if values["payee_key_sig"] is not None and values["payee_key"] is None:
        raise DecodeError("deposit has a payee key signature without a payee key")


def _one_outcome(values: Dict[str, Any]) -> None:
    """The payer acts on exactly one of them: an answer with both or neither is ambiguous."""
    if [values["bolt11"], values["error_code"], values["offer"]].count(None) != 2:
        raise DecodeError("invoice_response needs exactly one of bolt11, offer and error_code")


_TU64 = _tu(8)
_HASH = _hex(32, 32)
_REQUEST_ID = _hex(8, 8)
_POINT = _Kind(bytes.fromhex, _unpack_point)
_BOLT11 = _Kind(str.encode, _unpack_bolt11)  # UTF-8, so a non-ASCII invoice fails as "not ASCII"
_FLAG = _Kind(lambda on: b"" if on else None, _unpack_flag)
_REASON = _text(MAX_REASON_BYTES)

# Even types: the receiver must understand them. Odd ones are informative.
_SPECS = {spec.msg_type: spec for spec in (
    _Spec(QUERY_INFO, QueryInfo, ()),
    _Spec(INFO, Policy, (
        _Field(1, "relay", _FLAG, False),
        _Field(2, "fee_base_msat", _TU64),
        _Field(4, "fee_ppm", _TU64),
        _Field(6, "poll_blocks", _TU64),
        _Field(8, "max_hold_blocks", _TU64),
        _Field(10, "safety_blocks", _TU64),
        _Field(12, "max_held_msat", _TU64),
        _Field(14, "max_held", _TU64),
        # Odd: a payer that ignores it is refused at admission, nothing worse.
        _Field(15, "min_held_msat", _TU64, 0),
        # Odd: the asyncln onion key (record version 2) and the node's signature of it
        # (signmessage over onion.key_statement), so a payer that is not our peer can check it.
        _Field(17, "onion_key", _POINT, None),
        _Field(19, "onion_key_sig", _text(MAX_REASON_BYTES), None),
    )),
    _Spec(PAYMENT_STATUS, PaymentStatus, (
        _Field(1, "reason", _text(400), ""),
        _Field(2, "payment_hash", _HASH),
        _Field(4, "state", _code({1: HoldState.HELD, 2: HoldState.FAILED})),
        _Field(6, "give_up_height", _TU64),
        _Field(8, "next_poll_height", _TU64),
        _Field(10, "attempts", _TU64),
    )),
    _Spec(ONLINE, Online, ()),
    _Spec(DEPOSIT, Deposit, (
        _Field(2, "invoices", _list(_BOLT11, MAX_DEPOSIT_BATCH)),
        # Odd: a Rod that ignores them still serves the invoices.
        _Field(3, "offers", _list(_hex(1, MAX_OFFER_BYTES), MAX_DEPOSIT_BATCH), ()),
        _Field(5, "payee_key", _POINT, None),
        # Odd, as 5: a Rod that ignores it files no payee key from a depositor it cannot check.
        _Field(7, "payee_key_sig", _hex(8, MAX_DER_BYTES), None),
    ), _key_with_sig),
    _Spec(POOL_STATUS, PoolStatus, (
        _Field(1, "refused", _list(_REASON, MAX_DEPOSIT_BATCH), ()),
        _Field(2, "level", _TU64),
        _Field(4, "accepted", _tu(8, most=MAX_DEPOSIT_BATCH)),
        _Field(6, "max_invoices", _TU64),
        _Field(8, "min_expiry_seconds", _TU64),
    )),
    _Spec(INVOICE_REQUEST, InvoiceRequest, (
        _Field(2, "request_id", _REQUEST_ID),
        _Field(4, "recipient", _POINT),
        _Field(6, "amount_msat", _tu(8, least=1)),
        # Odd: a Rod without private offers answers as for any unknown recipient.
        _Field(7, "private", _FLAG, False),
    )),
    _Spec(INVOICE_RESPONSE, InvoiceResponse, (
        _Field(1, "error", _REASON, ""),
        _Field(2, "request_id", _REQUEST_ID),
        _Field(4, "bolt11", _BOLT11, None),
        _Field(6, "error_code", _tu(2), None),
        _Field(7, "offer", _hex(1, MAX_OFFER_BYTES), None),
    ), _one_outcome),
    _Spec(NOTE, Note, (
        _Field(2, "recipient", _POINT),
        _Field(4, "payment_hash", _HASH),
        _Field(6, "sealed", _hex(1, MAX_SEALED_BYTES)),
        # Odd: a Rod that does not know it looks the payee key up as a node id, finds no
        # pool, and stores nothing.
        _Field(7, "private", _FLAG, False),
    )),
    _Spec(NOTE_ACK, NoteAck, (_Field(2, "payment_hash", _HASH),)),
    _Spec(CANCEL_REQUEST, CancelRequest, (_Field(2, "payment_hash", _HASH),)),
    _Spec(CANCEL_ANSWER, CancelAnswer, (
        _Field(1, "reason", _REASON, ""),
        _Field(2, "payment_hash", _HASH),
        _Field(4, "accepted", _code({0: False, 1: True})),
        # Odd: the reason says the same in words.
        _Field(5, "error_code", _tu(2), None),
    )),
    _Spec(NOTE_ANSWER, NoteAnswer, (
        _Field(1, "reason", _REASON, ""),
        _Field(2, "payment_hash", _HASH),
        _Field(4, "stored", _code({0: False, 1: True})),
        _Field(5, "error_code", _tu(2), None),
    )),
)}
_SPEC_OF_CLASS = {spec.cls: spec for spec in _SPECS.values()}

MESSAGE_TYPES = tuple(_SPECS)


def encode(msg: Message) -> str:
    """Hex of the full message, as ``sendcustommsg`` wants it.

    ValueError for a message lightningd could not send or the peer would
    refuse: the mistake shows here, not as a silent drop at the other end.
    """
    spec = _SPEC_OF_CLASS[type(msg)]
    records = {_VERSION: bytes([VERSION])}
    for field in spec.fields:
        value = getattr(msg, field.name)
        raw = None if value is None or value == () == field.default else field.kind.pack(value)
        if raw is not None:
            records[field.tlv] = raw
    data = spec.msg_type.to_bytes(2, "big") + encode_tlv_stream(records)
    if len(data) > MAX_MESSAGE_BYTES:
        raise ValueError(f"{type(msg).__name__} is {len(data)} bytes, "
                         f"more than the {MAX_MESSAGE_BYTES} a Lightning message can carry")
    try:
        _parse(spec, data[2:])
    except DecodeError as err:
        raise ValueError(f"{type(msg).__name__} would be refused: {err}") from None
    return data.hex()


def decode(payload: str) -> Optional[Message]:
    """Decode a custommsg payload; None when the type is not asyncln's."""
    try:
        data = bytes.fromhex(payload)
    except ValueError:
        raise DecodeError("payload is not hex")
    if len(data) < 2:
        raise DecodeError("message shorter than its type")
    spec = _SPECS.get(int.from_bytes(data[:2], "big"))
    return None if spec is None else _parse(spec, data[2:])


def _parse(spec: _Spec, stream: bytes) -> Message:
    fields = decode_tlv_stream(stream, [_VERSION] + [f.tlv for f in spec.fields if f.tlv % 2 == 0])
    if fields.get(_VERSION) != bytes([VERSION]):
        raise DecodeError(f"unsupported message version {fields.get(_VERSION, b'').hex() or 'none'}")
    missing = [f.tlv for f in spec.fields if f.default is _REQUIRED and f.tlv not in fields]
    if missing:
        raise DecodeError(f"message {spec.msg_type} lacks fields {missing}")
    values = {}
    for field in spec.fields:
        if field.tlv not in fields:
            values[field.name] = field.default
            continue
        try:
            values[field.name] = field.kind.unpack(fields[field.tlv])
        except DecodeError as err:
            raise DecodeError(f"{field.name} {err}", field.tlv) from None
    if spec.check:
        spec.check(values)
    return spec.cls(**values)


def _clip_utf8(text: str, limit: int) -> bytes:
    """At most ``limit`` bytes of ``text`` without splitting a character."""
    return text.encode()[:limit].decode(errors="ignore").encode()
