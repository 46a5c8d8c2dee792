"""The paying side: plan the onion to a holding node and track the payment.

Pure functions over plain data. The shell gathers the invoice (``decode``),
the holding node's terms (its INFO message), a route to it (``getroutes``)
and the block height, then calls :func:`plan`; later it feeds payment
outcomes and status messages through :func:`on_status`, :func:`on_success`
and :func:`on_failure`.
"""

from dataclasses import asdict, dataclass, replace
from typing import List, Optional, Tuple

from . import failures
from .messages import PaymentStatus
from .policy import Policy
from .record import FinalPayload, TrampolineRecord
from .wire import encode_bigsize, encode_tlv_stream, encode_tu

PENDING = "pending"
HELD = "held"
COMPLETE = "complete"
FAILED = "failed"
OPEN = (PENDING, HELD)

# CLTV the payer adds for hops between the holding node and the recipient:
# enough for a few intermediate nodes at CLN's default cltv-delta of 34.
DOWNSTREAM_CLTV_BUDGET = 144


class PlanError(ValueError):
    """The payment cannot be made as asked; carries an RPC error code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


MAXFEE_TOO_LOW = 2111
HOLD_TOO_SHORT = 2112


@dataclass(frozen=True)
class Pay:
    payment_hash: str
    bolt11: str
    destination: str
    trampoline: str
    amount_msat: int
    amount_sent_msat: int
    cltv_expiry: int
    max_hold_blocks: int
    created_at: int
    trampoline_index: int  # erring_index lightningd reports for the holding node (we are 0)
    status: str = PENDING
    give_up_height: Optional[int] = None
    next_poll_height: Optional[int] = None
    payment_preimage: Optional[str] = None
    reason: Optional[str] = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "Pay":
        return cls(**data)


@dataclass(frozen=True)
class Invoice:
    """The fields of a decoded BOLT11 invoice that asyncln needs."""

    bolt11: str
    payment_hash: str
    payment_secret: str
    destination: str
    amount_msat: int
    min_final_cltv_expiry: int


def default_maxfee(amount_msat: int, info: Policy) -> int:
    """The holding node's fee plus 1 sat and 0.5% for its onward route."""
    return info.fee(amount_msat) + 1000 + amount_msat // 200


def hold_blocks(requested: Optional[int], info: Policy) -> int:
    hold = info.max_hold_blocks if requested is None else min(requested, info.max_hold_blocks)
    if hold < 1:
        raise PlanError("max_hold_blocks must be at least 1", HOLD_TOO_SHORT)
    return hold


def trampoline_amount(invoice: Invoice, maxfee_msat: int, fees_to_trampoline: int,
                      info: Policy) -> int:
    """What the holding node must receive: all fee left after reaching it.

    The holding node keeps its own fee and spends the rest, if it must, on
    routing to the recipient; the payer's total fee never exceeds maxfee_msat.
    """
    amount = invoice.amount_msat + maxfee_msat - fees_to_trampoline
    if amount < invoice.amount_msat + info.fee(invoice.amount_msat):
        raise PlanError(f"maxfee_msat {maxfee_msat} does not cover the holding node's fee "
                        f"{info.fee(invoice.amount_msat)} plus {fees_to_trampoline} to reach it",
                        MAXFEE_TOO_LOW)
    return amount


def final_cltv_to_trampoline(invoice: Invoice, hold: int, info: Policy) -> int:
    """Blocks of CLTV the HTLC must still have when it reaches the holding node."""
    return hold + info.safety_blocks + invoice.min_final_cltv_expiry + DOWNSTREAM_CLTV_BUDGET


def plan(invoice: Invoice, path: List[dict], height: int, hold: int,
         please_poll: bool = True) -> Tuple[List[dict], dict, int]:
    """Build ``createonion`` hops and the ``sendonion`` first hop.

    ``path`` is one ``getroutes`` route to the holding node (v26.06 fields).
    Returns (hops, first_hop, cltv_expiry at the holding node). lightningd
    bases ``first_hop.delay`` on its block height + 1, and so do we.
    """
    base = height + 1
    trampoline_hop = path[-1]
    cltv_expiry = base + trampoline_hop["cltv_out"]
    record = TrampolineRecord(
        next_node=invoice.destination, amount_msat=invoice.amount_msat,
        final_cltv_delta=invoice.min_final_cltv_expiry,
        payment_secret=invoice.payment_secret, total_msat=invoice.amount_msat,
        please_poll=please_poll, max_hold_blocks=hold)
    hops = []
    for hop, onward in zip(path, path[1:]):
        hops.append({"pubkey": hop["node_id_out"],
                     "payload": _forward_payload(onward, base).hex()})
    final = FinalPayload(amt_to_forward=trampoline_hop["amount_out_msat"],
                         outgoing_cltv_value=cltv_expiry, record=record)
    hops.append({"pubkey": trampoline_hop["node_id_out"], "payload": final.encode().hex()})
    first_hop = {"id": path[0]["node_id_out"], "amount_msat": path[0]["amount_out_msat"],
                 "delay": path[0]["cltv_out"]}
    return hops, first_hop, cltv_expiry


def _forward_payload(onward: dict, base: int) -> bytes:
    """A BOLT 4 forwarding payload telling a hop to use ``onward``'s channel."""
    block, tx, out = (int(part) for part in onward["short_channel_id_dir"].split("/")[0].split("x"))
    stream = encode_tlv_stream({
        2: encode_tu(onward["amount_out_msat"]),
        4: encode_tu(base + onward["cltv_out"]),
        6: ((block << 40) | (tx << 16) | out).to_bytes(8, "big"),
    })
    return encode_bigsize(len(stream)) + stream


def on_status(pay: Pay, status: PaymentStatus, sender: str) -> Optional[Pay]:
    """A PAYMENT_STATUS message; None when it must be ignored."""
    if sender != pay.trampoline or pay.status not in OPEN:
        return None
    if status.state == HELD:
        return replace(pay, status=HELD, give_up_height=status.give_up_height,
                       next_poll_height=status.next_poll_height)
    return replace(pay, reason=status.reason)


def on_success(pay: Pay, preimage: str) -> Optional[Pay]:
    if pay.status == COMPLETE:
        return None
    return replace(pay, status=COMPLETE, payment_preimage=preimage, reason=None)


def on_failure(pay: Pay, failcode: Optional[int], erring_index: Optional[int],
               message: str) -> Optional[Pay]:
    """``erring_index`` counts our onion's hops (sendonion knows no node ids)."""
    if pay.status not in OPEN:
        return None
    from_trampoline = erring_index == pay.trampoline_index
    if from_trampoline and pay.reason:
        reason = pay.reason  # the holding node told us why
    elif from_trampoline and failcode == failures.TEMPORARY_NODE_FAILURE and pay.status == HELD:
        reason = "recipient stayed offline: the holding node gave up"
    else:
        reason = message
    return replace(pay, status=FAILED, reason=reason)
