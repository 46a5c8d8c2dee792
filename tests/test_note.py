"""End-to-end-encrypted notes: roundtrips, tampering, refusals and fuzzing."""

import hashlib
import hmac

import pytest
from coincurve import PrivateKey, PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln.note import (
    MAX_NOTE_BYTES,
    MAX_SEALED_BYTES,
    SEALED_OVERHEAD,
    NoteError,
    note_public_key,
    note_secret_key,
    open_note,
    seal,
)
from asyncln.wire import is_point

FUZZ = settings(max_examples=2000, deadline=None)
SECRET = "5a" * 32          # what `makesecret` returned on B's node
OTHER_SECRET = "a5" * 32
HASH = "11" * 32
OTHER_HASH = "12" * 32
ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
EPHEMERAL = b"\x07" * 32

notes = st.text(max_size=MAX_NOTE_BYTES // 4)
hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)
secret_hexes = st.integers(1, 2**256 - 1).filter(lambda n: n % ORDER).map(
    lambda n: n.to_bytes(32, "big").hex())


def reference_seal(plaintext: bytes, note_key: str, payment_hash: str, ephemeral: bytes) -> bytes:
    """The construction as docs/PROTOCOL.md states it, written out independently."""
    shared_point = PublicKey(bytes.fromhex(note_key)).multiply(ephemeral)
    shared = hashlib.sha256(shared_point.format()).digest()
    key = hmac.new(b"asyncln-note", shared, hashlib.sha256).digest()
    return PrivateKey(ephemeral).public_key.format() + ChaCha20Poly1305(key).encrypt(
        bytes(12), plaintext, bytes.fromhex(payment_hash))


@given(notes, secret_hexes, hex32)
def test_roundtrip(text, secret, payment_hash):
    sealed = seal(text, note_public_key(secret), payment_hash)
    assert len(sealed) == len(text.encode()) + SEALED_OVERHEAD
    assert open_note(sealed, secret, payment_hash) == text


def test_matches_the_documented_construction():
    sealed = seal("pizza 🍕", note_public_key(SECRET), HASH, EPHEMERAL)
    assert sealed == reference_seal("pizza 🍕".encode(), note_public_key(SECRET), HASH, EPHEMERAL)


def test_every_note_gets_a_fresh_ephemeral_key():
    first, second = (seal("same", note_public_key(SECRET), HASH) for _ in range(2))
    assert first[:33] != second[:33] and first[33:] != second[33:]


@given(secret_hexes)
def test_note_key_is_a_valid_scalar_and_its_public_key(secret):
    private = note_secret_key(secret)
    assert len(private) == 32 and 0 < int.from_bytes(private, "big") < ORDER
    assert PrivateKey(private).public_key.format().hex() == note_public_key(secret)
    assert is_point(bytes.fromhex(note_public_key(secret)))


def test_note_key_edge_secrets():
    assert note_secret_key("ff" * 32) == (2**256 - 1 - ORDER).to_bytes(32, "big")
    for unusable in ("00" * 32, ORDER.to_bytes(32, "big").hex()):
        with pytest.raises(NoteError, match="not usable"):
            note_secret_key(unusable)
    for bad in ("5a" * 31, "zz" * 32, ""):
        with pytest.raises(NoteError, match="makesecret secret"):
            note_public_key(bad)


@given(st.text(min_size=1, max_size=40), st.data())
def test_any_tampered_byte_fails(text, data):
    sealed = seal(text, note_public_key(SECRET), HASH)
    index = data.draw(st.integers(0, len(sealed) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = sealed[:index] + bytes([sealed[index] ^ flip]) + sealed[index + 1:]
    with pytest.raises(NoteError):
        open_note(tampered, SECRET, HASH)


def test_truncated_or_extended_note_fails():
    sealed = seal("hello", note_public_key(SECRET), HASH)
    for changed in (sealed[:-1], sealed + b"\x00", sealed[:33] + sealed[34:]):
        with pytest.raises(NoteError):
            open_note(changed, SECRET, HASH)


def test_note_is_bound_to_its_payment_and_its_recipient():
    sealed = seal("for this payment", note_public_key(SECRET), HASH)
    with pytest.raises(NoteError, match="not sealed to this key for this payment"):
        open_note(sealed, SECRET, OTHER_HASH)
    with pytest.raises(NoteError, match="not sealed to this key for this payment"):
        open_note(sealed, OTHER_SECRET, HASH)


def test_size_limits():
    assert open_note(seal("a" * MAX_NOTE_BYTES, note_public_key(SECRET), HASH), SECRET, HASH)
    assert len(seal("a" * MAX_NOTE_BYTES, note_public_key(SECRET), HASH)) == MAX_SEALED_BYTES
    assert open_note(seal("", note_public_key(SECRET), HASH), SECRET, HASH) == ""
    for too_long in ("a" * (MAX_NOTE_BYTES + 1), "é" * (MAX_NOTE_BYTES // 2 + 1)):
        with pytest.raises(NoteError, match="more than 512"):
            seal(too_long, note_public_key(SECRET), HASH)


@pytest.mark.parametrize("text,key,payment_hash,message", [
    ("hi", "02" + "00" * 32, HASH, "not a valid public key"),
    ("hi", "04" + note_public_key(SECRET)[2:], HASH, "not a valid public key"),
    ("hi", note_public_key(SECRET)[:-2], HASH, "note key must be 33 bytes"),
    ("hi", "not hex", HASH, "note key is not hex"),
    ("hi", note_public_key(SECRET), HASH[:-2], "payment hash must be 32 bytes"),
    ("\ud800", note_public_key(SECRET), HASH, "not valid Unicode"),
])
def test_seal_refusals(text, key, payment_hash, message):
    with pytest.raises(NoteError, match=message):
        seal(text, key, payment_hash)


def test_open_refusals():
    key = note_public_key(SECRET)
    with pytest.raises(NoteError, match="must be 49 to 561 bytes"):
        open_note(b"\x02" * (SEALED_OVERHEAD - 1), SECRET, HASH)
    with pytest.raises(NoteError, match="must be 49 to 561 bytes"):
        open_note(b"\x02" * (MAX_SEALED_BYTES + 1), SECRET, HASH)
    with pytest.raises(NoteError, match="ephemeral key"):
        open_note(b"\x02" + bytes(32) + seal("x", key, HASH)[33:], SECRET, HASH)
    with pytest.raises(NoteError, match="not UTF-8"):
        open_note(reference_seal(b"\xff\xfe", key, HASH, EPHEMERAL), SECRET, HASH)
    with pytest.raises(NoteError, match="payment hash"):
        open_note(seal("x", key, HASH), SECRET, "xyz")


@FUZZ
@given(st.one_of(
    st.binary(max_size=MAX_SEALED_BYTES + 10),
    st.binary(max_size=80).map(lambda b: PrivateKey(EPHEMERAL).public_key.format() + b),
))
def test_fuzz_open_note(sealed):
    with pytest.raises(NoteError):
        open_note(sealed, SECRET, HASH)
