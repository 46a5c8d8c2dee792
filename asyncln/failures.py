"""BOLT 4 failure messages the holding node returns upstream, as hook-ready hex.

The codes are chosen in docs/PROTOCOL.md ("Failure codes"); this module only
encodes them.
"""

import struct

from .wire import encode_bigsize

NODE = 0x2000
PERM = 0x4000

TEMPORARY_NODE_FAILURE = NODE | 2
INVALID_ONION_PAYLOAD = PERM | 22
INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS = PERM | 15
FINAL_INCORRECT_CLTV_EXPIRY = 18
FINAL_INCORRECT_HTLC_AMOUNT = 19
# bolts PR #836 (trampoline) numbers.
TEMPORARY_TRAMPOLINE_FAILURE = NODE | 25
TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT = NODE | 26
UNKNOWN_NEXT_TRAMPOLINE = PERM | 27
# What each means when a next holder sends it (lightningd does not name them yet).
TRAMPOLINE_FAILURES = {
    TEMPORARY_TRAMPOLINE_FAILURE: "the next holder gave up (temporary_trampoline_failure)",
    TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT:
        "the next holder wants more fee or CLTV (trampoline_fee_or_expiry_insufficient)",
    UNKNOWN_NEXT_TRAMPOLINE: "the next holder cannot go on (unknown_next_trampoline)",
}


def temporary_node_failure() -> str:
    return struct.pack(">H", TEMPORARY_NODE_FAILURE).hex()


def invalid_onion_payload(tlv_type: int, offset: int) -> str:
    return (struct.pack(">H", INVALID_ONION_PAYLOAD) + encode_bigsize(tlv_type)
            + struct.pack(">H", min(offset, 0xFFFF))).hex()


def final_incorrect_cltv_expiry(cltv_expiry: int) -> str:
    return struct.pack(">HI", FINAL_INCORRECT_CLTV_EXPIRY, cltv_expiry).hex()


def final_incorrect_htlc_amount(amount_msat: int) -> str:
    return struct.pack(">HQ", FINAL_INCORRECT_HTLC_AMOUNT, amount_msat).hex()


def trampoline_fee_or_expiry_insufficient(fee_base_msat: int, fee_ppm: int,
                                          cltv_expiry_delta: int) -> str:
    """#836: what the holder would need, so that the payer can retry with it."""
    return struct.pack(">HIIH", TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT,
                       min(fee_base_msat, 0xFFFFFFFF), min(fee_ppm, 0xFFFFFFFF),
                       min(cltv_expiry_delta, 0xFFFF)).hex()


def unknown_next_trampoline() -> str:
    return struct.pack(">H", UNKNOWN_NEXT_TRAMPOLINE).hex()


def temporary_trampoline_failure() -> str:
    return struct.pack(">H", TEMPORARY_TRAMPOLINE_FAILURE).hex()


def incorrect_or_unknown_payment_details(htlc_msat: int, height: int) -> str:
    """BOLT 4's answer to a payment the recipient will not take, as lightningd's own invoices give it."""
    return struct.pack(">HQI", INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS, htlc_msat, height).hex()
