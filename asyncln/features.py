"""asyncln's feature bit, advertised in init and node_announcement features.

Odd (optional): a peer that does not know it connects and gossips as usual.
"""

FEATURE_BIT = 171


def feature_hex(bit: int = FEATURE_BIT) -> str:
    """Hex feature bitfield with only ``bit`` set, as plugin manifests take it."""
    return (1 << bit).to_bytes(bit // 8 + 1, "big").hex()


def has_feature(features_hex: str, bit: int = FEATURE_BIT) -> bool:
    """True when the peer sets our bit, or its compulsory (even) twin."""
    try:
        value = int(features_hex or "0", 16)
    except ValueError:
        return False
    return bool(value >> bit & 1 or value >> (bit - 1) & 1)
