"""A recipient hidden from its payers: a payee key instead of a node id, and payee-built tails.

B publishes a *private* payment code naming its payee key (``makesecret``
derived, so it says nothing about B's node id) and its Rods. With each
invoice it deposits, B also deposits a *private offer*: the payment hash,
the invoice's expiry and final CLTV, a statement signed by the payee key,
and a *tail*: an asyncln onion layer for its Rod R, encrypted to R's key,
naming B and carrying the payment secret. A payer puts the tail in its own
layer for R (``inner_onion``, TLV 20) and never sees what is inside: only R
learns B. Proof of payment is the preimage plus B's signed statement about
that payment hash.
"""

import hashlib
import struct
from dataclasses import dataclass
from typing import Optional, Tuple

from coincurve import PrivateKey, PublicKey

from . import onion
from .layer import Layer
from .keys import public_key, secret_key  # noqa: F401 (the payee key: PAYEE_KEY_LABEL)
from .record import HintHop
from .wire import DecodeError

PAYEE_KEY_LABEL = "asyncln-payee-key"
MAX_FINAL_CLTV = 144  # a day: more than any recipient needs (lightningd's default is 18)
_STATEMENT = "asyncln-private-offer:"
_OWNER = "asyncln-payee-key-owner:"


def sign(makesecret_hex: str, message: bytes) -> str:
    """A DER signature by the payee key, as hex (coincurve hashes with SHA256)."""
    return PrivateKey(secret_key(makesecret_hex)).sign(message).hex()


def verify(payee_key: str, signature_hex: str, message: bytes) -> bool:
    try:
        return PublicKey(bytes.fromhex(payee_key)).verify(bytes.fromhex(signature_hex), message)
    except ValueError:
        return False


def statement(payment_hash: str, expires_at: int, rod: str) -> bytes:
    """What the payee key signs for each private offer: the proof of payment's other half."""
    return f"{_STATEMENT}{payment_hash}:{expires_at}:{rod}".encode()


def owner_statement(depositor: str, rod: str) -> bytes:
    """What the payee key signs in a deposit: this node keeps my pool at that Rod.

    Its own tag, so no offer statement (or anything else the key signs) can
    pass for it. The Rod checks it against the BOLT 8 sender of the deposit.
    """
    return f"{_OWNER}{depositor}:{rod}".encode()


@dataclass(frozen=True)
class PrivateOffer:
    """One presigned payment B deposited for payers who must not learn B's node id."""

    payment_hash: str
    expires_at: int
    min_final_cltv: int
    tail: bytes          # an asyncln onion packet for the Rod (onion.TAIL_PACKET_SIZE bytes)
    signature: str       # hex DER by the payee key over statement(hash, expires_at, rod)

    def encode(self) -> bytes:
        sig = bytes.fromhex(self.signature)
        return (bytes.fromhex(self.payment_hash) + struct.pack(">QHB", self.expires_at,
                                                               self.min_final_cltv, len(sig))
                + sig + self.tail)

    @classmethod
    def decode(cls, raw: bytes) -> "PrivateOffer":
        if len(raw) < 43:
            raise DecodeError("private offer is truncated")
        expires_at, cltv, sig_len = struct.unpack(">QHB", raw[32:43])
        tail = raw[43 + sig_len:]
        if len(tail) != onion.TAIL_PACKET_SIZE:
            raise DecodeError("private offer's tail has the wrong size")
        return cls(raw[:32].hex(), expires_at, cltv, tail, raw[43:43 + sig_len].hex())


def tail(rod_onion_key: str, recipient: str, payment_hash: str, payment_secret: str,
         min_final_cltv: int, hints: Tuple[Tuple[HintHop, ...], ...] = ()) -> bytes:
    """B's layer for its Rod. Its amount is a placeholder: the payer's layer for R sets it."""
    layer = Layer(amt_to_forward=1, outgoing_cltv_delta=min_final_cltv,
                  outgoing_node_id=recipient, payment_secret=payment_secret, total_msat=1,
                  route_hints=hints)
    packet, _ = onion.build([(rod_onion_key, layer)], payment_hash, size=onion.TAIL_PAYLOAD_SIZE)
    return packet


def check_offer(offer: PrivateOffer, payee_key: str, rod: str, now: int,
                used: set) -> Optional[str]:
    """Why a payer must not pay this offer, or None."""
    if not verify(payee_key, offer.signature, statement(offer.payment_hash, offer.expires_at, rod)):
        return "the offer is not signed by the code's payee key"
    if offer.expires_at <= now:
        return "the offer has expired"
    if offer.min_final_cltv > MAX_FINAL_CLTV:
        # Not under the signature: a Rod could raise it to lock our HTLC longer.
        return f"the offer asks {offer.min_final_cltv} blocks of final CLTV, above {MAX_FINAL_CLTV}"
    if offer.payment_hash in used:
        return f"the offer reuses payment hash {offer.payment_hash}"
    return None


def proof(preimage: str, offer_hash: str) -> bool:
    return hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == offer_hash
