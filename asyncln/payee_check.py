"""B's acceptance rule for its deposited amountless invoices and private offers (pure).

Such an invoice names no amount, so lightningd would take any HTLC for it,
and the last holder could short-pay B and still settle A's HTLC with B's
preimage. B takes one only with the payer's amount commitment
(asyncln/commitment.py) in its final-hop payload, sealed to B's note key,
for this payment hash, naming no more than the HTLC brings. B refuses
everything else as an unknown payment, as lightningd does for a wrong
invoice, so the holder learns nothing more than that.
"""

from typing import Optional

from . import commitment
from .wire import DecodeError, find_tlv


def refusal(payload_hex: str, payment_hash: str, received_msat: int,
            note_secret: Optional[str]) -> Optional[str]:
    """Why B must refuse this HTLC for a deposited amountless invoice, or None to take it.

    ``payload_hex``: the hook's ``onion.payload`` (length-prefixed);
    ``received_msat``: the HTLC's own amount, what B actually gets.
    """
    if note_secret is None:
        return "we have no note key to open the payer's amount commitment"
    try:
        found = find_tlv(bytes.fromhex(payload_hex), commitment.FINAL_TLV)
    except (DecodeError, ValueError) as e:
        return f"unreadable final payload: {e}"
    if found is None:
        return "no amount commitment from the payer"
    try:
        committed = commitment.open_commitment(found[1], note_secret, payment_hash)
    except commitment.CommitmentError as e:
        return f"the amount commitment is refused: {e}"
    if committed > received_msat:
        return f"the payer committed {committed}msat, the HTLC brings only {received_msat}msat"
    return None
