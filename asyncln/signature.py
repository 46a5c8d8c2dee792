"""lightningd's ``signmessage`` signatures, checked here instead of with ``checkmessage``.

lightningd v26.06.6 aborts (signal 6) in ``checkmessage`` when a signature's
first byte (recovery id + 31) is outside 31..34: it hands the recovery id to
libsecp256k1 unchecked, and libsecp256k1 calls its illegal-argument callback.
Signatures reach us from payment codes and peers, so asyncln never passes one
to lightningd: it recovers the signer's key itself.

The format (``lightningd/signmessage.c``, as lnd's): zbase32 of 65 bytes,
``[31 + recovery id] || r || s``, an ECDSA signature over
``sha256(sha256("Lightning Signed Message:" + message))``.
"""

import hashlib
from typing import Optional

from coincurve import PrivateKey, PublicKey

PREFIX = b"Lightning Signed Message:"
SIGNATURE_BYTES = 65
ZBASE32_CHARS = 104  # 65 bytes are exactly 104 5-bit groups, no padding
RECOVERY_BASE = 31
_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_ZBASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
_ZBASE32_VALUES = {c: i for i, c in enumerate(_ZBASE32)}


def digest(message: str) -> bytes:
    return hashlib.sha256(hashlib.sha256(PREFIX + message.encode("utf-8")).digest()).digest()


def decode(zbase: str) -> Optional[bytes]:
    """The 65 signature bytes, or None unless the shape is one lightningd could parse.

    That is: exactly 104 lower-case zbase32 characters, a recovery byte of
    31..34, and r and s both in 1..n-1.
    """
    if not isinstance(zbase, str) or len(zbase) != ZBASE32_CHARS:
        return None
    value = 0
    for char in zbase:
        if char not in _ZBASE32_VALUES:
            return None
        value = (value << 5) | _ZBASE32_VALUES[char]
    raw = value.to_bytes(SIGNATURE_BYTES, "big")
    r, s = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")
    if not RECOVERY_BASE <= raw[0] <= RECOVERY_BASE + 3 or not (0 < r < _ORDER and 0 < s < _ORDER):
        return None
    return raw


def encode(raw: bytes) -> str:
    """zbase32 of 65 bytes, as lightningd's ``to_zbase32``."""
    value = int.from_bytes(raw, "big")
    return "".join(_ZBASE32[(value >> (5 * i)) & 31] for i in reversed(range(ZBASE32_CHARS)))


def signer(message: str, zbase: str) -> Optional[str]:
    """The node id (hex, compressed) whose key made ``zbase`` over ``message``; None if none."""
    raw = decode(zbase)
    if raw is None:
        return None
    try:
        key = PublicKey.from_signature_and_message(raw[1:] + bytes([raw[0] - RECOVERY_BASE]),
                                                   digest(message), hasher=None)
    except ValueError:  # no point recovers from this (r, s, recovery id)
        return None
    return key.format(compressed=True).hex()


def signed_by(message: str, zbase: str, node_id: Optional[str]) -> bool:
    """What ``checkmessage message zbase pubkey`` says in ``verified``, without lightningd."""
    return node_id is not None and signer(message, zbase) == node_id.lower()


def sign(secret: bytes, message: str) -> str:
    """What ``signmessage`` returns in ``zbase`` for a node whose key is ``secret``."""
    raw = PrivateKey(secret).sign_recoverable(digest(message), hasher=None)
    return encode(bytes([RECOVERY_BASE + raw[64]]) + raw[:64])
