"""B's acceptance rule for its deposited amountless invoices: the payer's commitment or nothing."""

import pytest
from factories import node_id
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import commitment, note, onion, payee, payer, peel
from asyncln.hold import Incoming
from asyncln.policy import Policy
from asyncln.payee_check import refusal
from asyncln.wire import encode_bigsize, encode_tlv_stream, encode_tu

SECRET = "5a" * 32
KEY = note.note_public_key(SECRET)
HASH = "11" * 32
OTHER_HASH = "12" * 32

amounts = st.integers(1, 2 ** 63)


def payload(blob=None, amount=100_000, extra=None):
    """B's final-hop payload as the hook shows it: length-prefixed, as the holder sends it."""
    fields = {2: encode_tu(amount), 4: encode_tu(1100), **(extra or {})}
    if blob is not None:
        fields[commitment.FINAL_TLV] = blob
    stream = encode_tlv_stream(fields)
    return (encode_bigsize(len(stream)) + stream).hex()


@given(amounts, st.integers(0, 2 ** 20))
def test_an_honest_commitment_is_taken_and_overpaying_is_fine(amount, extra):
    blob = commitment.seal(amount, KEY, HASH)
    assert refusal(payload(blob), HASH, amount + extra, SECRET) is None


@given(amounts, st.integers(1, 2 ** 20))
def test_one_msat_less_than_committed_is_refused(amount, short):
    blob = commitment.seal(amount + short, KEY, HASH)
    assert "committed" in refusal(payload(blob), HASH, amount, SECRET)


def test_a_missing_commitment_is_refused():
    assert "no amount commitment" in refusal(payload(), HASH, 100_000, SECRET)


def test_a_commitment_for_another_payment_is_refused():
    """A holder cannot replay a generous commitment from another payment to B."""
    blob = commitment.seal(1, KEY, OTHER_HASH)
    assert "refused" in refusal(payload(blob), HASH, 100_000, SECRET)


def test_a_commitment_to_another_key_is_refused():
    """A holder cannot seal its own lower amount: it does not have B's note secret."""
    blob = commitment.seal(1, note.note_public_key("a5" * 32), HASH)
    assert "refused" in refusal(payload(blob), HASH, 100_000, SECRET)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, commitment.SEALED_BYTES - 1), st.integers(1, 255))
def test_a_tampered_commitment_is_refused(position, flip):
    blob = bytearray(commitment.seal(100_000, KEY, HASH))
    blob[position] ^= flip
    assert refusal(payload(bytes(blob)), HASH, 100_000, SECRET) is not None


def test_without_our_note_key_nothing_is_taken():
    blob = commitment.seal(100_000, KEY, HASH)
    assert "no note key" in refusal(payload(blob), HASH, 100_000, None)


@pytest.mark.parametrize("raw", ["", "zz", "05020203", payload()[:-2]])
def test_an_unreadable_payload_is_refused(raw):
    assert refusal(raw, HASH, 100_000, SECRET) is not None


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200), amounts)
def test_fuzz_never_raises_and_takes_only_an_opened_commitment(raw, received):
    """Arbitrary bytes in the payload or the TLV: a refusal, never an exception, never a take."""
    for candidate in (raw.hex(), payload(raw)):
        assert refusal(candidate, HASH, received, SECRET) is not None


def test_end_to_end_a_private_offer_from_the_payers_plan_to_bs_check():
    """A (knowing only the code's payee and note keys) -> the Rod peels -> B checks what arrives."""
    rod_secret, rod_id, b = "11" * 32, node_id(3), node_id(2)
    tail = payee.tail(onion.public_key(rod_secret), b, HASH, "33" * 32, 18)
    offer = payee.PrivateOffer(HASH, 2_000_000_000, 18, tail, "00")
    invoice = payer.committed(payer.private_invoice(offer, node_id(5), 50_000), KEY)
    layer = payer.tail_layer(invoice, 10, offer.tail)
    packet, _ = onion.build([(onion.public_key(rod_secret), layer)], HASH)
    record, _, _ = peel.read(onion.final_payload(60_000, 2000, packet), HASH,
                             onion.secret_key(rod_secret), rod_id, Policy(),
                             Incoming("1x1x1", 0, 60_000, 2000), 1000)
    assert record.next_node == b and record.amount_msat == 50_000
    [(tlv, blob)] = record.final_tlvs
    delivered = {tlv: blob}
    assert refusal(payload(amount=50_000, extra=delivered), HASH, 50_000, SECRET) is None
    assert refusal(payload(amount=49_999, extra=delivered), HASH, 49_999, SECRET) is not None
