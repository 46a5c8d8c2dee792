"""The asyncln onion (record version 2): per-holder layers, encrypted to each holder's asyncln key.

It rides as the odd TLV ``ONION_TLV`` in a holder's final-hop payload of
lightningd's own onion, next to ``amt_to_forward`` and ``outgoing_cltv_value``.
A holder peels one layer and learns only where the HTLC goes next
(asyncln/layer.py); only the last holder sees the recipient's payment data.

Keys come from ``makesecret string=ONION_KEY_LABEL``, never the node key: a
plugin cannot do ECDH with the node key. A node publishes the public key in
its ``info`` message, signed by its node key (``signmessage`` over
:func:`key_statement`), so that a payer who is not its peer (it learned the
key from a payment code) can check it (asyncln/signature.py).
"""

import os
from typing import List, Optional, Sequence, Tuple

from . import sphinx
from .keys import public_key, secret_key  # noqa: F401 (the holder's key: ONION_KEY_LABEL)
from .layer import Layer
from .record import (AMT_TO_FORWARD, OUTGOING_CLTV_VALUE, PAYMENT_DATA, RECORD_TYPE, FinalTlvs,
                     check_final_tlvs)
from .wire import encode_bigsize, encode_tlv_stream, encode_tu, find_tlv

ONION_TLV = RECORD_TYPE + 2   # 66103: odd, as lightningd hands unknown odd final-hop TLVs to the hook
ONION_KEY_LABEL = "asyncln-onion-key"
PAYLOAD_SIZE = 650            # room for two layers and a route hint inside lightningd's 1300 bytes
PACKET_SIZE = 1 + 33 + PAYLOAD_SIZE + sphinx.HMAC_LEN
# A payee-built tail rides inside the payer's layer for the Rod: it must be smaller.
TAIL_PAYLOAD_SIZE = 300
TAIL_PACKET_SIZE = 1 + 33 + TAIL_PAYLOAD_SIZE + sphinx.HMAC_LEN


def key_statement(onion_key: str) -> str:
    """What a node signs with ``signmessage`` to vouch for its asyncln key."""
    return f"asyncln-onion-key:{onion_key}"


def build(holders: Sequence[Tuple[str, Layer]], payment_hash: str,
          session_key: Optional[bytes] = None,
          size: int = PAYLOAD_SIZE) -> Tuple[bytes, List[bytes]]:
    """The onion for ``holders`` [(asyncln key, layer)], bound to the payment hash.

    ValueError when the layers do not fit in PAYLOAD_SIZE.
    """
    hops = []
    for key, layer in holders:
        stream = layer.encode()
        hops.append((bytes.fromhex(key), encode_bigsize(len(stream)) + stream))
    packet, secrets = sphinx.create_onion(session_key or os.urandom(32), hops,
                                          bytes.fromhex(payment_hash), size)
    return packet.serialize(), secrets


def peel(raw: bytes, secret: bytes, payment_hash: str,
         size: int = PAYLOAD_SIZE) -> Tuple[Layer, Optional[bytes]]:
    """Our layer and the packet for the next holder (None when we are the last one).

    DecodeError (OnionError included) for anything that is not a well-formed
    layer addressed to us.
    """
    peeled = sphinx.peel(sphinx.Packet.parse(raw, size), secret, bytes.fromhex(payment_hash))
    layer = Layer.decode(peeled.payload)
    following = peeled.next_packet.serialize() if peeled.next_packet else None
    return layer, following


def forward_payload(short_channel_id: str, amt_to_forward: int, outgoing_cltv_value: int) -> bytes:
    """BOLT 4's payload telling a hop to forward over ``short_channel_id``, length-prefixed."""
    block, tx, out = (int(part) for part in short_channel_id.split("x"))
    stream = encode_tlv_stream({2: encode_tu(amt_to_forward), 4: encode_tu(outgoing_cltv_value),
                                6: ((block << 40) | (tx << 16) | out).to_bytes(8, "big")})
    return encode_bigsize(len(stream)) + stream


def route_hops(route: Sequence[dict], base: int, last_payload: bytes) -> List[dict]:
    """``createonion`` hops for a ``sendpay``-style route ending with ``last_payload``.

    ``base`` is the height outgoing expiries count from (lightningd's + 1).
    """
    hops = [{"pubkey": hop["id"],
             "payload": forward_payload(onward["channel"], onward["amount_msat"],
                                        base + onward["delay"]).hex()}
            for hop, onward in zip(route, route[1:])]
    return hops + [{"pubkey": route[-1]["id"], "payload": last_payload.hex()}]


def final_payload(amt_to_forward: int, outgoing_cltv_value: int, packet: bytes) -> bytes:
    """A holder's whole final-hop payload, length-prefixed as ``createonion`` wants it."""
    stream = encode_tlv_stream({2: encode_tu(amt_to_forward), 4: encode_tu(outgoing_cltv_value),
                                ONION_TLV: packet})
    return encode_bigsize(len(stream)) + stream


def recipient_payload(amt_to_forward: int, outgoing_cltv_value: int, payment_secret: str,
                      total_msat: int, final_tlvs: FinalTlvs = ()) -> bytes:
    """The recipient's BOLT 4 final-hop payload, length-prefixed, as ``createonion`` wants it.

    What ``sendpay`` would build (amount, expiry, payment_data), plus the odd
    ``final_tlvs`` the payer asked us to carry. A holder builds it itself so
    that every attempt goes by ``sendonion``, which lightningd accepts beside
    a part a crash left pending (docs/PROTOCOL.md, "Outgoing attempts").
    """
    check_final_tlvs(final_tlvs)
    stream = encode_tlv_stream({
        AMT_TO_FORWARD: encode_tu(amt_to_forward),
        OUTGOING_CLTV_VALUE: encode_tu(outgoing_cltv_value),
        PAYMENT_DATA: bytes.fromhex(payment_secret) + encode_tu(total_msat),
        **dict(final_tlvs)})
    return encode_bigsize(len(stream)) + stream


def find_onion(prefixed_payload: bytes) -> Optional[Tuple[int, bytes]]:
    """(offset in the TLV stream, packet) of our onion in the hook's payload, or None."""
    return find_tlv(prefixed_payload, ONION_TLV)
