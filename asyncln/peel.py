"""What a holder makes of the asyncln onion (record version 2): a record to hold, or a refusal.

Pure: the shell passes the hook's payload, our asyncln secret key and
lightningd's height. The holder learns only its layer: the node before it
(the HTLC's peer) and the node after it; the recipient's payment data only
when it is the last holder. Every refusal is one of BOLT 4's or bolts
#836's failure messages, and holds nothing.
"""

from dataclasses import replace
from typing import Optional, Tuple, Union

from . import failures, onion
from .hold import Incoming, Reject, leg_refusal
from .layer import Layer
from .policy import Policy
from .record import TrampolineRecord
from .wire import DecodeError

# The record to hold, the onion's offset in the payload, and a refusal the relay
# applies to a new HTLC only (a replay is answered as before: the height moved on).
Peeled = Tuple[TrampolineRecord, int, Optional[Reject]]


def read(payload: bytes, payment_hash: str, secret: Optional[bytes], us: str, policy: Policy,
         incoming: Incoming, height: int) -> Optional[Union[Peeled, Reject]]:
    """None when the payload carries no asyncln onion."""
    try:
        found = onion.find_onion(payload)
    except DecodeError as e:
        return Reject(failures.invalid_onion_payload(e.tlv_type, e.offset),
                      f"malformed onion payload: {e}")
    if found is None:
        return None
    offset, packet = found
    bad = failures.invalid_onion_payload(onion.ONION_TLV, offset)
    if secret is None:
        return Reject(bad, "we have no asyncln key (makesecret failed at startup)")
    try:
        layer, following = onion.peel(packet, secret, payment_hash)
    except DecodeError as e:
        return Reject(bad, f"asyncln onion refused: {e}")
    if layer.inner_onion is not None:
        try:
            layer = _with_tail(layer, onion.peel(layer.inner_onion, secret, payment_hash,
                                                 onion.TAIL_PAYLOAD_SIZE))
        except DecodeError as e:
            return Reject(bad, f"the payee's tail is refused: {e}")
        following = None
    if layer.outgoing_node_id == us:
        return Reject(failures.unknown_next_trampoline(), "the onion loops back to us")
    if not layer.is_final and following is None:
        return Reject(bad, "a layer for a next holder, but no onion for it")
    if layer.is_final and layer.total_msat is not None and layer.total_msat != layer.amt_to_forward:
        # Named here: the relay's own check would name the clear record's TLV, absent here.
        return _record(layer, following), offset, Reject(
            bad, "multi-part payments (total_msat above amt_to_forward) are not supported")
    refusal = leg_refusal(policy, incoming, height, layer.amt_to_forward,
                          layer.outgoing_cltv_delta, layer.max_hold_blocks)
    return _record(layer, following), offset, refusal


def _with_tail(outer: Layer, peeled: Tuple[Layer, Optional[bytes]]) -> Layer:
    """The payer's layer for us, completed by the tail the payee built for us (its Rod).

    The payee names itself and its payment data; the payer sets the amount,
    how long we hold, and commits to the amount for the payee (a tail's own
    commitment, if any, is dropped: only the payer's binds what it paid for).
    The tail must be the last layer and final.
    """
    tail, after = peeled
    if after is not None or not tail.is_final:
        raise DecodeError("a payee's tail must be the final layer", onion.ONION_TLV)
    return replace(tail, amt_to_forward=outer.amt_to_forward, total_msat=outer.amt_to_forward,
                   outgoing_cltv_delta=max(tail.outgoing_cltv_delta, outer.outgoing_cltv_delta),
                   please_poll=outer.please_poll, max_hold_blocks=outer.max_hold_blocks,
                   report_to=outer.report_to, amount_commitment=outer.amount_commitment)


def _record(layer: Layer, following: Optional[bytes]) -> TrampolineRecord:
    """The holder's internal record: deliver to the recipient, or to the next holder."""
    if layer.is_final:
        return layer.to_record()
    return TrampolineRecord(
        next_node=layer.outgoing_node_id, amount_msat=layer.amt_to_forward,
        final_cltv_delta=layer.outgoing_cltv_delta, payment_secret="",
        total_msat=layer.amt_to_forward, please_poll=layer.please_poll,
        max_hold_blocks=layer.max_hold_blocks, report_to=layer.report_to,
        next_onion=following.hex())
