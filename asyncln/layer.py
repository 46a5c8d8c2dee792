"""One holder's instructions: the TLV stream inside its layer of the payer's asyncln onion.

Where bolts PR #836 (trampoline) defines a field, the type and layout are
its own, so a trampoline-aware reader finds nothing new: ``amt_to_forward``
(2), ``payment_data`` (8, BOLT 4's layout), ``outgoing_node_id`` (14) and the
nested onion (20). The expiry is the exception: #836's ``outgoing_cltv_value``
(4) is absolute, but a holder forwards at a height nobody knows in advance,
so the payer gives a delta instead (6), and the different type keeps the two
from being confused. The other fields are today's record fields
(asyncln/record.py), with the same types and the same reasons to be odd or
even: anything that decides where money goes or for how long is even.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

from . import commitment
from .record import HintHop, TrampolineRecord, decode_hints, encode_hints
from .wire import DecodeError, decode_tlv_stream, decode_tu, encode_tlv_stream, encode_tu, is_point

AMT_TO_FORWARD = 2
OUTGOING_CLTV_DELTA = 6
PAYMENT_DATA = 8
MAX_HOLD_BLOCKS = 10
ROUTE_HINTS = 12
OUTGOING_NODE_ID = 14
AMOUNT_COMMITMENT = commitment.LAYER_TLV  # 16
INNER_ONION = 20
PLEASE_POLL = 1
REPORT_TO = 11
_KNOWN_EVEN = (AMT_TO_FORWARD, OUTGOING_CLTV_DELTA, PAYMENT_DATA, MAX_HOLD_BLOCKS, ROUTE_HINTS,
               OUTGOING_NODE_ID, AMOUNT_COMMITMENT, INNER_ONION)
_SECRET_BYTES = 32


@dataclass(frozen=True)
class Layer:
    """What one holder does with the HTLC it holds.

    ``outgoing_node_id`` is the next holder, or the recipient when
    ``payment_secret`` is set. It may be absent only when ``inner_onion``
    carries the rest: a tail the payee built for this holder (its Rod), so
    the payer need not know where the money finally goes.
    """

    amt_to_forward: int                  # what the next node must receive
    outgoing_cltv_delta: int             # blocks the next node's HTLC must have left on arrival
    outgoing_node_id: Optional[str]      # hex pubkey; None only when inner_onion is set
    please_poll: bool = True
    max_hold_blocks: Optional[int] = None  # the payer's cap on this holder's hold
    payment_secret: Optional[str] = None   # hex; set => the next node is the final recipient
    total_msat: Optional[int] = None       # set exactly when payment_secret is
    route_hints: Tuple[Tuple[HintHop, ...], ...] = ()
    report_to: Optional[str] = None        # the payer; first holder only
    inner_onion: Optional[bytes] = None
    # The payer's amount sealed for the recipient (asyncln/commitment.py), last holder only:
    # it delivers the bytes unread, in the recipient's final-hop payload.
    amount_commitment: Optional[bytes] = None

    def __post_init__(self):
        """Relations between fields, checked once for the payer's layers and the decoder's."""
        if self.amt_to_forward < 1:
            raise ValueError("amt_to_forward must be at least 1msat")
        if self.outgoing_node_id is None and self.inner_onion is None:
            raise ValueError("a layer needs outgoing_node_id or inner_onion")
        if self.inner_onion == b"":
            raise ValueError("inner_onion is empty")
        if (self.payment_secret is None) != (self.total_msat is None):
            raise ValueError("payment_secret and total_msat come together (payment_data)")
        if self.total_msat is not None and self.total_msat < self.amt_to_forward:
            raise ValueError("total_msat is below amt_to_forward")
        if self.payment_secret is not None and self.outgoing_node_id is None:
            raise ValueError("payment_data without outgoing_node_id: no recipient to pay")
        if self.amount_commitment is not None:
            if self.payment_secret is None and self.inner_onion is None:
                raise ValueError("an amount commitment rides only in the last holder's layer")
            if len(self.amount_commitment) != commitment.SEALED_BYTES:
                raise ValueError(f"an amount commitment is {commitment.SEALED_BYTES} bytes")

    @property
    def is_final(self) -> bool:
        """payment_data present: deliver to the recipient with it."""
        return self.payment_secret is not None

    def encode(self) -> bytes:
        """The TLV stream, without a length prefix (the onion layer frames it)."""
        fields = {AMT_TO_FORWARD: encode_tu(self.amt_to_forward),
                  OUTGOING_CLTV_DELTA: encode_tu(self.outgoing_cltv_delta)}
        if self.outgoing_node_id is not None:
            fields[OUTGOING_NODE_ID] = bytes.fromhex(self.outgoing_node_id)
        if self.payment_secret is not None:
            fields[PAYMENT_DATA] = bytes.fromhex(self.payment_secret) + encode_tu(self.total_msat)
        if self.please_poll:
            fields[PLEASE_POLL] = b""
        if self.max_hold_blocks is not None:
            fields[MAX_HOLD_BLOCKS] = encode_tu(self.max_hold_blocks)
        if self.route_hints:
            fields[ROUTE_HINTS] = encode_hints(self.route_hints)
        if self.report_to is not None:
            fields[REPORT_TO] = bytes.fromhex(self.report_to)
        if self.amount_commitment is not None:
            fields[AMOUNT_COMMITMENT] = self.amount_commitment
        if self.inner_onion is not None:
            fields[INNER_ONION] = self.inner_onion
        return encode_tlv_stream(fields)

    @classmethod
    def decode(cls, stream: bytes) -> "Layer":
        """The layer a holder peeled; DecodeError on anything it must not act on."""
        fields = decode_tlv_stream(stream, _KNOWN_EVEN)
        for required in (AMT_TO_FORWARD, OUTGOING_CLTV_DELTA):
            if required not in fields:
                raise DecodeError(f"layer lacks field {required}", required)
        if fields.get(PLEASE_POLL, b""):
            raise DecodeError("please_poll carries no value", PLEASE_POLL)
        secret = total = None
        if PAYMENT_DATA in fields:
            data = fields[PAYMENT_DATA]
            if len(data) < _SECRET_BYTES:
                raise DecodeError("payment_data is shorter than its 32-byte secret", PAYMENT_DATA)
            secret = data[:_SECRET_BYTES].hex()
            total = decode_tu(data[_SECRET_BYTES:], 8, PAYMENT_DATA)
        max_hold = fields.get(MAX_HOLD_BLOCKS)
        values = dict(
            amt_to_forward=decode_tu(fields[AMT_TO_FORWARD], 8, AMT_TO_FORWARD),
            outgoing_cltv_delta=decode_tu(fields[OUTGOING_CLTV_DELTA], 4, OUTGOING_CLTV_DELTA),
            outgoing_node_id=_point(fields, OUTGOING_NODE_ID),
            please_poll=PLEASE_POLL in fields,
            max_hold_blocks=None if max_hold is None else decode_tu(max_hold, 4, MAX_HOLD_BLOCKS),
            payment_secret=secret,
            total_msat=total,
            route_hints=decode_hints(fields[ROUTE_HINTS]) if ROUTE_HINTS in fields else (),
            report_to=_point(fields, REPORT_TO),
            inner_onion=fields.get(INNER_ONION),
            amount_commitment=fields.get(AMOUNT_COMMITMENT),
        )
        try:
            return cls(**values)
        except ValueError as e:  # the relations __post_init__ checks
            raise DecodeError(str(e)) from e

    def to_record(self) -> TrampolineRecord:
        """A final layer as today's record, so the holder delivers it as it always has."""
        if not self.is_final:
            raise ValueError("only a final layer (with payment_data) delivers to the recipient")
        return TrampolineRecord(
            next_node=self.outgoing_node_id, amount_msat=self.amt_to_forward,
            final_cltv_delta=self.outgoing_cltv_delta, payment_secret=self.payment_secret,
            total_msat=self.total_msat, please_poll=self.please_poll,
            max_hold_blocks=self.max_hold_blocks, report_to=self.report_to,
            route_hints=self.route_hints, final_tlvs=commitment.final_tlvs(self.amount_commitment))


def _point(fields: dict, tlv_type: int) -> Optional[str]:
    value = fields.get(tlv_type)
    if value is None:
        return None
    if not is_point(value):
        raise DecodeError("not a valid public key", tlv_type)
    return value.hex()
