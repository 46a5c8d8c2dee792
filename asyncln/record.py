"""The trampoline record that rides in the holding node's final-hop onion payload.

The payer puts it next to the ordinary ``amt_to_forward`` (2) and
``outgoing_cltv_value`` (4) fields of the payload addressed to the holding
node. docs/PROTOCOL.md describes every field and why each type is odd or even.
"""

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Optional, Tuple

from . import commitment
FinalTlvs = Tuple[Tuple[int, bytes], ...]

from .wire import (
    DecodeError,
    decode_tlv_stream,
    decode_tu,
    encode_bigsize,
    encode_tlv_stream,
    encode_tu,
    find_tlv,
    is_point,
)

RECORD_TYPE = 66101
RECORD_VERSION = 1

AMT_TO_FORWARD = 2
OUTGOING_CLTV_VALUE = 4
PAYMENT_DATA = 8          # BOLT 4: payment_secret, then total_msat (tu64)

# Inner TLV types of the record.
PLEASE_POLL = 1
NEXT_NODE_ID = 0
AMOUNT_MSAT = 2
FINAL_CLTV_DELTA = 4
PAYMENT_SECRET = 6
TOTAL_MSAT = 8
MAX_HOLD_BLOCKS = 10
REPORT_TO = 11
ROUTE_HINTS = 12
AMOUNT_COMMITMENT = commitment.LAYER_TLV  # 16, as in the onion's layer (asyncln/layer.py)
_KNOWN_EVEN = (NEXT_NODE_ID, AMOUNT_MSAT, FINAL_CLTV_DELTA, PAYMENT_SECRET,
               TOTAL_MSAT, MAX_HOLD_BLOCKS, ROUTE_HINTS, AMOUNT_COMMITMENT)
_REQUIRED = (NEXT_NODE_ID, AMOUNT_MSAT, FINAL_CLTV_DELTA, PAYMENT_SECRET)

# Route hints: as BOLT 11's `r` field, a hop is 51 bytes. The caps keep the
# record well inside the 1300-byte onion that the payer's other hops share.
HINT_HOP_BYTES = 51
MAX_HINT_ROUTES = 4
MAX_HINT_HOPS = 3


def without_defaults(data: dict) -> dict:
    """``data`` without its None and empty fields: a stored record's optional fields,
    which ``restore`` fills back in with their defaults (None, ())."""
    return {name: value for name, value in data.items() if value is not None and value != ()}


def restore(cls, data: dict):
    """``cls(**data)`` for a record read back from our own datastore, without the
    dataclass __init__: at 100,000 held records its keyword parsing was a large part of
    a restart (bench/bench_core.py). The same TypeError for missing or unknown fields,
    the same defaults, and __post_init__'s checks still run."""
    names, required, defaults, factories, post_init = _shape(cls)
    keys = data.keys()
    if not required <= keys or not keys <= names:
        raise TypeError(f"{cls.__name__} record lacks {sorted(required - keys)} "
                        f"or has unknown {sorted(keys - names)}")
    obj = object.__new__(cls)
    if len(keys) < len(names):  # some left out: their defaults first
        obj.__dict__.update(defaults)
        obj.__dict__.update({name: make() for name, make in factories if name not in keys})
    obj.__dict__.update(data)
    if post_init:
        obj.__post_init__()
    return obj


_SHAPES: dict = {}


def _shape(cls):
    """(field names, required ones, defaults, default factories, has __post_init__) of ``cls``."""
    if cls not in _SHAPES:
        every = [f for f in fields(cls) if f.init]
        defaults = {f.name: f.default for f in every if f.default is not MISSING}
        factories = tuple((f.name, f.default_factory) for f in every
                          if f.default_factory is not MISSING)
        optional = defaults.keys() | {name for name, _ in factories}
        _SHAPES[cls] = (frozenset(f.name for f in every),
                        frozenset(f.name for f in every if f.name not in optional),
                        defaults, factories, hasattr(cls, "__post_init__"))
    return _SHAPES[cls]


@dataclass(frozen=True)
class HintHop:
    """One hop of an invoice's route hint: the channel from ``node_id`` towards the recipient."""

    node_id: str
    short_channel_id: str  # "BLOCKxTXxOUT"
    fee_base_msat: int
    fee_ppm: int
    cltv_delta: int

    def encode(self) -> bytes:
        block, tx, out = (int(n) for n in self.short_channel_id.split("x"))
        return (bytes.fromhex(self.node_id) + ((block << 40) | (tx << 16) | out).to_bytes(8, "big")
                + self.fee_base_msat.to_bytes(4, "big") + self.fee_ppm.to_bytes(4, "big")
                + self.cltv_delta.to_bytes(2, "big"))

    @classmethod
    def decode(cls, raw: bytes) -> "HintHop":
        if not is_point(raw[:33]):
            raise DecodeError("route hint node is not a valid public key", RECORD_TYPE)
        scid = int.from_bytes(raw[33:41], "big")
        return cls(raw[:33].hex(), f"{scid >> 40}x{(scid >> 16) & 0xFFFFFF}x{scid & 0xFFFF}",
                   int.from_bytes(raw[41:45], "big"), int.from_bytes(raw[45:49], "big"),
                   int.from_bytes(raw[49:51], "big"))


def encode_hints(routes: Tuple[Tuple[HintHop, ...], ...]) -> bytes:
    """Each route: a hop count byte, then its hops."""
    return b"".join(bytes([len(route)]) + b"".join(hop.encode() for hop in route)
                    for route in routes)


def decode_hints(value: bytes) -> Tuple[Tuple[HintHop, ...], ...]:
    routes, offset = [], 0
    while offset < len(value):
        count = value[offset]
        end = offset + 1 + count * HINT_HOP_BYTES
        if not 1 <= count <= MAX_HINT_HOPS or end > len(value):
            raise DecodeError("malformed route hint", ROUTE_HINTS)
        routes.append(tuple(HintHop.decode(value[start:start + HINT_HOP_BYTES])
                            for start in range(offset + 1, end, HINT_HOP_BYTES)))
        offset = end
    if not routes or len(routes) > MAX_HINT_ROUTES:
        raise DecodeError(f"route hints must hold 1 to {MAX_HINT_ROUTES} routes", ROUTE_HINTS)
    return tuple(routes)


@dataclass(frozen=True)
class TrampolineRecord:
    """What the payer asks the holding node to do with its HTLC."""

    next_node: str            # hex compressed pubkey of the recipient
    amount_msat: int          # what the recipient must receive
    final_cltv_delta: int     # recipient's min_final_cltv_expiry_delta
    payment_secret: str       # hex, from the recipient's invoice
    total_msat: int           # invoice total (equals amount_msat without MPP)
    please_poll: bool         # hold and re-try while the recipient is offline
    max_hold_blocks: Optional[int] = None  # payer's own cap on the hold
    report_to: Optional[str] = None  # the payer, asking for PAYMENT_STATUS reports (opt-in)
    route_hints: Tuple[Tuple[HintHop, ...], ...] = ()  # the invoice's, for a private recipient
    # Version 2 only, never on the wire in this form: the asyncln onion packet
    # (hex) for the next holder, which ``next_node`` then names.
    next_onion: Optional[str] = None
    # Extra odd TLVs for the recipient's final-hop payload, (type, value) by
    # rising type, which the last holder carries unread (e.g. the payer's
    # amount commitment, which the clear record carries as TLV 16).
    final_tlvs: FinalTlvs = ()

    def __post_init__(self):
        check_final_tlvs(self.final_tlvs)

    def encode(self) -> bytes:
        inner = {
            NEXT_NODE_ID: bytes.fromhex(self.next_node),
            AMOUNT_MSAT: encode_tu(self.amount_msat),
            FINAL_CLTV_DELTA: encode_tu(self.final_cltv_delta),
            PAYMENT_SECRET: bytes.fromhex(self.payment_secret),
            TOTAL_MSAT: encode_tu(self.total_msat),
        }
        if self.please_poll:
            inner[PLEASE_POLL] = b""
        if self.max_hold_blocks is not None:
            inner[MAX_HOLD_BLOCKS] = encode_tu(self.max_hold_blocks)
        if self.report_to is not None:
            inner[REPORT_TO] = bytes.fromhex(self.report_to)
        if self.route_hints:
            inner[ROUTE_HINTS] = encode_hints(self.route_hints)
        sealed = commitment.from_final_tlvs(self.final_tlvs)
        if sealed is not None:
            inner[AMOUNT_COMMITMENT] = sealed
        return bytes([RECORD_VERSION]) + encode_tlv_stream(inner)

    @classmethod
    def decode(cls, value: bytes) -> "TrampolineRecord":
        if not value:
            raise DecodeError("empty asyncln record", RECORD_TYPE)
        if value[0] != RECORD_VERSION:
            raise DecodeError(f"unknown asyncln record version {value[0]}", RECORD_TYPE)
        fields = decode_tlv_stream(value[1:], _KNOWN_EVEN)
        for required in _REQUIRED:
            if required not in fields:
                raise DecodeError(f"asyncln record lacks field {required}", RECORD_TYPE)
        node = fields[NEXT_NODE_ID]
        if not is_point(node):
            raise DecodeError("next_node_id is not a valid public key", RECORD_TYPE)
        report_to = fields.get(REPORT_TO)
        if report_to is not None and not is_point(report_to):
            raise DecodeError("report_to is not a valid public key", RECORD_TYPE)
        if len(fields[PAYMENT_SECRET]) != 32:
            raise DecodeError("payment_secret must be 32 bytes", RECORD_TYPE)
        if fields.get(PLEASE_POLL, b""):
            raise DecodeError("please_poll carries no value", RECORD_TYPE)
        amount = decode_tu(fields[AMOUNT_MSAT], 8, RECORD_TYPE)
        total = decode_tu(fields[TOTAL_MSAT], 8, RECORD_TYPE) if TOTAL_MSAT in fields else amount
        if amount == 0 or total < amount:
            raise DecodeError("amount is zero or exceeds total_msat", RECORD_TYPE)
        max_hold = fields.get(MAX_HOLD_BLOCKS)
        sealed = fields.get(AMOUNT_COMMITMENT)
        if sealed is not None and len(sealed) != commitment.SEALED_BYTES:
            raise DecodeError(f"an amount commitment is {commitment.SEALED_BYTES} bytes",
                              AMOUNT_COMMITMENT)
        return cls(
            next_node=node.hex(),
            amount_msat=amount,
            final_cltv_delta=decode_tu(fields[FINAL_CLTV_DELTA], 4, RECORD_TYPE),
            payment_secret=fields[PAYMENT_SECRET].hex(),
            total_msat=total,
            please_poll=PLEASE_POLL in fields,
            max_hold_blocks=None if max_hold is None else decode_tu(max_hold, 4, RECORD_TYPE),
            report_to=None if report_to is None else report_to.hex(),
            route_hints=decode_hints(fields[ROUTE_HINTS]) if ROUTE_HINTS in fields else (),
            final_tlvs=commitment.final_tlvs(sealed),
        )

    def to_json(self) -> dict:
        data = without_defaults(asdict(self))
        if self.final_tlvs:
            data["final_tlvs"] = [[tlv_type, value.hex()] for tlv_type, value in self.final_tlvs]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "TrampolineRecord":
        """Records saved before ``final_tlvs`` existed load with none."""
        data = dict(data)
        if data.get("route_hints"):
            data["route_hints"] = tuple(tuple(HintHop(**hop) for hop in route)
                                        for route in data["route_hints"])
        else:
            data.pop("route_hints", None)  # absent or empty: restore's default, ()
        if data.get("final_tlvs"):
            data["final_tlvs"] = tuple((int(tlv_type), bytes.fromhex(value))
                                       for tlv_type, value in data["final_tlvs"])
        else:
            data.pop("final_tlvs", None)
        return restore(cls, data)


def check_final_tlvs(tlvs: FinalTlvs) -> None:
    """ValueError unless every type is odd (the recipient may ignore it) and above
    BOLT 4's payment fields (2, 4, 8), with types rising, so the recipient's
    payload stays a valid TLV stream."""
    last = PAYMENT_DATA
    for tlv_type, value in tlvs:
        if not isinstance(value, bytes) or tlv_type % 2 == 0 or tlv_type <= last:
            raise ValueError(f"final TLV {tlv_type}: types must be odd, above 8 and rising, "
                             "values bytes")
        last = tlv_type


@dataclass(frozen=True)
class FinalPayload:
    """The holding node's whole final-hop payload, as the payer builds it."""

    amt_to_forward: int       # what the holding node must receive
    outgoing_cltv_value: int  # the incoming HTLC's expected cltv_expiry
    record: TrampolineRecord

    def encode(self) -> bytes:
        """Length-prefixed, as ``createonion`` wants each hop's payload."""
        stream = encode_tlv_stream({
            AMT_TO_FORWARD: encode_tu(self.amt_to_forward),
            OUTGOING_CLTV_VALUE: encode_tu(self.outgoing_cltv_value),
            RECORD_TYPE: self.record.encode(),
        })
        return encode_bigsize(len(stream)) + stream


def find_record(prefixed_payload: bytes) -> Optional[Tuple[int, bytes]]:
    """(offset in the TLV stream, raw record value) in the hook's ``onion.payload``, or None.

    Ordinary payments never carry the record, so this is the pass-through
    fast path and it only walks the TLV headers.
    """
    return find_tlv(prefixed_payload, RECORD_TYPE)
