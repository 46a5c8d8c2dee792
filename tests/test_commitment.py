"""The payer's amount commitment: roundtrips, tampering, domain separation and fuzzing."""

import hashlib
import hmac

import pytest
from coincurve import PrivateKey, PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import note
from asyncln.commitment import SEALED_BYTES, CommitmentError, open_commitment, seal

FUZZ = settings(max_examples=1000, deadline=None)
SECRET = "5a" * 32
OTHER_SECRET = "a5" * 32
KEY = note.note_public_key(SECRET)
HASH = "11" * 32
OTHER_HASH = "12" * 32
EPHEMERAL = b"\x07" * 32

amounts = st.integers(1, 2 ** 64 - 1)
hex32 = st.binary(min_size=32, max_size=32).map(bytes.hex)


def test_matches_the_documented_construction():
    """docs/PROTOCOL.md, written out independently: the note's sealing, other associated data."""
    shared = hashlib.sha256(PublicKey(bytes.fromhex(KEY)).multiply(EPHEMERAL).format()).digest()
    key = hmac.new(b"asyncln-note", shared, hashlib.sha256).digest()
    expected = PrivateKey(EPHEMERAL).public_key.format() + ChaCha20Poly1305(key).encrypt(
        bytes(12), (5000).to_bytes(8, "big"),
        b"asyncln-amount-commitment:" + bytes.fromhex(HASH))
    assert seal(5000, KEY, HASH, EPHEMERAL) == expected


@given(amounts, hex32)
def test_roundtrip(amount, payment_hash):
    blob = seal(amount, KEY, payment_hash)
    assert len(blob) == SEALED_BYTES
    assert open_commitment(blob, SECRET, payment_hash) == amount


def test_a_commitment_does_not_open_for_another_payment_or_key():
    blob = seal(5000, KEY, HASH)
    with pytest.raises(CommitmentError):
        open_commitment(blob, SECRET, OTHER_HASH)
    with pytest.raises(CommitmentError):
        open_commitment(blob, OTHER_SECRET, HASH)


@given(st.integers(0, SEALED_BYTES - 1), st.integers(1, 255))
def test_any_flipped_bit_is_refused(position, flip):
    blob = bytearray(seal(5000, KEY, HASH))
    blob[position] ^= flip
    with pytest.raises(CommitmentError):
        open_commitment(bytes(blob), SECRET, HASH)


def test_a_note_never_opens_as_a_commitment_nor_the_reverse():
    """An 8-byte note has a commitment's size; the associated data tells them apart."""
    sealed_note = note.seal("12345678", KEY, HASH)
    assert len(sealed_note) == SEALED_BYTES
    with pytest.raises(CommitmentError):
        open_commitment(sealed_note, SECRET, HASH)
    with pytest.raises(note.NoteError):
        note.open_note(seal(5000, KEY, HASH), SECRET, HASH)


@pytest.mark.parametrize("amount", [0, -1, 2 ** 64])
def test_no_commitment_to_an_amount_outside_64_bits(amount):
    with pytest.raises(CommitmentError):
        seal(amount, KEY, HASH)


@pytest.mark.parametrize("key,payment_hash", [("02" + "00" * 32, HASH), (KEY, "11" * 31),
                                              (KEY, "zz"), ("nothex", HASH)])
def test_bad_key_or_hash_is_refused(key, payment_hash):
    with pytest.raises(CommitmentError):
        seal(5000, key, payment_hash)


@FUZZ
@given(st.binary(max_size=2 * SEALED_BYTES), hex32)
def test_fuzz_open_raises_only_commitment_error(blob, payment_hash):
    try:
        open_commitment(blob, SECRET, payment_hash)
    except CommitmentError:
        pass
