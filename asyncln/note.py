"""End-to-end-encrypted notes from a payer A to a recipient B, stored by B's Rod.

The Rod holds the sealed bytes while B is offline and cannot read them. The
construction is ECIES: ECDH with a fresh ephemeral key, HMAC-SHA256 as the
key derivation, ChaCha20-Poly1305 as the AEAD. ChaCha20-Poly1305 comes from
``cryptography``, which pyln-proto already requires (``cryptography>=46``,
for its BOLT 8 transport), so notes add no dependency.

B's note key comes from ``makesecret string=NOTE_KEY_LABEL``, never from the
node key: no RPC hands out the node key or decrypts with it, a key that
already serves BOLT 8 and onions should not also open attacker-chosen
ciphertexts, and makesecret gives the same key after a restart or a restore
from hsm_secret without asyncln storing a secret. docs/PROTOCOL.md explains
the other choices.
"""

import hashlib
import hmac
from typing import Optional

from coincurve import PrivateKey
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import keys
from .wire import is_point

NOTE_KEY_LABEL = "asyncln-note-key"
MAX_NOTE_BYTES = 512
SEALED_OVERHEAD = 33 + 16  # ephemeral pubkey + Poly1305 tag
MAX_SEALED_BYTES = MAX_NOTE_BYTES + SEALED_OVERHEAD

_KDF_LABEL = b"asyncln-note"
# Every note has its own key, so one nonce value never meets the same key twice.
_NONCE = bytes(12)


class NoteError(ValueError):
    """A note that cannot be sealed or opened: too long, a bad key, a failing tag."""


def note_secret_key(secret_hex: str) -> bytes:
    """B's note secret key, from the hex ``secret`` that ``makesecret NOTE_KEY_LABEL`` returned."""
    try:
        return keys.secret_key(secret_hex)
    except ValueError as e:
        raise NoteError(str(e)) from None


def note_public_key(secret_hex: str) -> str:
    """The hex key B publishes in its payment code."""
    return PrivateKey(note_secret_key(secret_hex)).public_key.format().hex()


def seal(text: str, note_key_hex: str, payment_hash: str,
         ephemeral_secret: Optional[bytes] = None) -> bytes:
    """Encrypt ``text`` to B's note key, bound to one payment.

    ``ephemeral_secret`` exists for test vectors only: sealing two notes with
    the same one would reuse a key with the fixed nonce.
    """
    try:
        plaintext = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON input can carry
        raise NoteError("note is not valid Unicode text") from None
    if len(plaintext) > MAX_NOTE_BYTES:
        raise NoteError(f"note is {len(plaintext)} bytes, more than {MAX_NOTE_BYTES}")
    return seal_bytes(plaintext, note_key_hex, _hex(payment_hash, 32, "payment hash"),
                      ephemeral_secret)


def seal_bytes(plaintext: bytes, note_key_hex: str, associated_data: bytes,
               ephemeral_secret: Optional[bytes] = None) -> bytes:
    """The one sealing construction: ephemeral ECDH to B's note key, then the AEAD.

    Notes and amount commitments (asyncln/commitment.py) share it; each binds
    its own ``associated_data``, of a different length, so that one can never
    be opened as the other.
    """
    note_key = _hex(note_key_hex, 33, "note key")
    if not is_point(note_key):
        raise NoteError("note key is not a valid public key")
    ephemeral = PrivateKey(ephemeral_secret)
    cipher = ChaCha20Poly1305(_key(ephemeral.ecdh(note_key)))
    return ephemeral.public_key.format() + cipher.encrypt(_NONCE, plaintext, associated_data)


def open_note(sealed: bytes, secret_hex: str, payment_hash: str) -> str:
    """B's side: the note's text, or NoteError if it was not sealed to B for this payment."""
    if not SEALED_OVERHEAD <= len(sealed) <= MAX_SEALED_BYTES:
        raise NoteError(f"sealed note must be {SEALED_OVERHEAD} to {MAX_SEALED_BYTES} bytes")
    plaintext = open_bytes(sealed, secret_hex, _hex(payment_hash, 32, "payment hash"))
    try:
        return plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not UTF-8") from None


def open_bytes(sealed: bytes, secret_hex: str, associated_data: bytes) -> bytes:
    """B's side of :func:`seal_bytes`; NoteError unless sealed to B's key with this data."""
    if len(sealed) < SEALED_OVERHEAD:
        raise NoteError(f"sealed data must be at least {SEALED_OVERHEAD} bytes")
    ephemeral = sealed[:33]
    if not is_point(ephemeral):
        raise NoteError("sealed data's ephemeral key is not a valid public key")
    key = _key(PrivateKey(note_secret_key(secret_hex)).ecdh(ephemeral))
    try:
        return ChaCha20Poly1305(key).decrypt(_NONCE, sealed[33:], associated_data)
    except InvalidTag:
        raise NoteError("not sealed to this key for this payment, or altered") from None


def _key(shared_secret: bytes) -> bytes:
    """Domain-separate the ECDH output so it is never used raw, nor shared with another protocol."""
    return hmac.new(_KDF_LABEL, shared_secret, hashlib.sha256).digest()


def _hex(value: str, size: int, name: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise NoteError(f"{name} is not hex") from None
    if len(raw) != size:
        raise NoteError(f"{name} must be {size} bytes")
    return raw
