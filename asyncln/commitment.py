"""The payer's amount commitment: what B must receive, sealed so that only B reads it.

A deposited invoice has no amount, so without this the last holder would
choose what B receives: it could deliver 1 sat, keep the rest, and still
settle A's HTLC with B's preimage. A seals the amount to B's note key (the
key of B's payment code, public and private alike) with the note's own
construction (asyncln/note.py: ECDH + ChaCha20-Poly1305), bound to the
payment hash. A holder carries the blob to B in B's final-hop payload
(``FINAL_TLV``) but can neither read nor change it, nor move it to another
payment; B refuses an HTLC for such an invoice that brings less
(asyncln/payee_check.py).

Sealing needs only B's public note key: a last holder that knows it (from
B's payment code) can seal a commitment of its own. docs/PROTOCOL.md
("Amount commitment") says what this does and does not prove.
"""

from typing import Optional, Tuple

from . import note

# In a holder's layer (asyncln/layer.py) and the clear record (asyncln/record.py):
# even, so that a holder that does not know it refuses rather than drops it.
LAYER_TLV = 16
# In B's final-hop onion payload: odd, so that B's lightningd hands it to the hook.
FINAL_TLV = 66105
AMOUNT_BYTES = 8
SEALED_BYTES = note.SEALED_OVERHEAD + AMOUNT_BYTES
# Associated data: the label, then the payment hash. Longer than the note's (the
# bare hash), so that a note can never be opened as a commitment, nor the reverse.
_LABEL = b"asyncln-amount-commitment:"


class CommitmentError(ValueError):
    """A commitment that cannot be sealed, or that B must not trust."""


def seal(amount_msat: int, note_key_hex: str, payment_hash: str,
         ephemeral_secret: Optional[bytes] = None) -> bytes:
    """A's side: ``amount_msat`` sealed to B's note key for ``payment_hash``.

    ``ephemeral_secret`` exists for test vectors only (see note.seal).
    """
    if not 1 <= amount_msat < 2 ** 64:
        raise CommitmentError(f"amount {amount_msat} is not a positive 64-bit msat value")
    try:
        return note.seal_bytes(amount_msat.to_bytes(AMOUNT_BYTES, "big"), note_key_hex,
                               _bound_to(payment_hash), ephemeral_secret)
    except note.NoteError as e:
        raise CommitmentError(str(e)) from None


def open_commitment(blob: bytes, secret_hex: str, payment_hash: str) -> int:
    """B's side: the committed amount; CommitmentError unless A sealed it to B for this hash."""
    if len(blob) != SEALED_BYTES:
        raise CommitmentError(f"a commitment is {SEALED_BYTES} bytes, not {len(blob)}")
    try:
        plaintext = note.open_bytes(blob, secret_hex, _bound_to(payment_hash))
    except note.NoteError as e:
        raise CommitmentError(str(e)) from None
    amount = int.from_bytes(plaintext, "big")
    if amount < 1:
        raise CommitmentError("the commitment names no amount")
    return amount


def final_tlvs(blob: Optional[bytes]) -> Tuple[Tuple[int, bytes], ...]:
    """What the last holder puts in the recipient's final-hop payload (record.final_tlvs)."""
    return () if blob is None else ((FINAL_TLV, blob),)


def from_final_tlvs(tlvs: Tuple[Tuple[int, bytes], ...]) -> Optional[bytes]:
    return dict(tlvs).get(FINAL_TLV)


def _bound_to(payment_hash: str) -> bytes:
    try:
        raw = bytes.fromhex(payment_hash)
    except (TypeError, ValueError):
        raise CommitmentError("payment hash is not hex") from None
    if len(raw) != 32:
        raise CommitmentError("payment hash must be 32 bytes")
    return _LABEL + raw
