"""asyncln's own keys (note, onion, payee), each from ``makesecret`` with its own label.

Never the node key: no RPC decrypts or does ECDH with it, and makesecret
gives the same key after a restart or a restore from hsm_secret without
asyncln storing a secret. makesecret already derives a label-specific secret
from the HSM secret, so it only needs reducing to a scalar; a value the
reduction changes turns up with probability about 2^-128.
"""

from coincurve import PrivateKey

_CURVE_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def secret_key(makesecret_hex: str) -> bytes:
    """ValueError when ``makesecret_hex`` is not 32 bytes of hex, or reduces to zero."""
    try:
        secret = bytes.fromhex(makesecret_hex)
    except (TypeError, ValueError):
        raise ValueError("makesecret secret is not hex") from None
    if len(secret) != 32:
        raise ValueError("makesecret secret must be 32 bytes")
    scalar = int.from_bytes(secret, "big") % _CURVE_ORDER
    if scalar == 0:
        raise ValueError("makesecret secret is not usable as a key")
    return scalar.to_bytes(32, "big")


def public_key(makesecret_hex: str) -> str:
    """The hex compressed key published for ``secret_key``."""
    return PrivateKey(secret_key(makesecret_hex)).public_key.format().hex()
