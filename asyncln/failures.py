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
FINAL_INCORRECT_CLTV_EXPIRY = 18
FINAL_INCORRECT_HTLC_AMOUNT = 19
TRAMPOLINE_FEE_INSUFFICIENT = NODE | 51
TRAMPOLINE_EXPIRY_TOO_SOON = NODE | 52


def temporary_node_failure() -> str:
    return struct.pack(">H", TEMPORARY_NODE_FAILURE).hex()


def invalid_onion_payload(tlv_type: int, offset: int) -> str:
    return (struct.pack(">H", INVALID_ONION_PAYLOAD) + encode_bigsize(tlv_type)
            + struct.pack(">H", min(offset, 0xFFFF))).hex()


def final_incorrect_cltv_expiry(cltv_expiry: int) -> str:
    return struct.pack(">HI", FINAL_INCORRECT_CLTV_EXPIRY, cltv_expiry).hex()


def final_incorrect_htlc_amount(amount_msat: int) -> str:
    return struct.pack(">HQ", FINAL_INCORRECT_HTLC_AMOUNT, amount_msat).hex()


def trampoline_fee_insufficient() -> str:
    return struct.pack(">H", TRAMPOLINE_FEE_INSUFFICIENT).hex()


def trampoline_expiry_too_soon() -> str:
    return struct.pack(">H", TRAMPOLINE_EXPIRY_TOO_SOON).hex()
