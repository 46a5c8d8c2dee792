"""Payee privacy: private offers, the payee-built tail, and what the Rod makes of it."""

import hashlib

import pytest
from factories import node_id
from hypothesis import given
from hypothesis import strategies as st

from asyncln import onion, payee, peel
from asyncln.hold import Incoming, Reject
from asyncln.layer import Layer
from asyncln.policy import Policy
from asyncln.wire import DecodeError

ROD_SECRET, PAYEE_SECRET = "11" * 32, "22" * 32
B, R = node_id(2), onion.public_key(ROD_SECRET)
ROD_ID = node_id(3)
HASH = hashlib.sha256(b"preimage").hexdigest()


def offer(expires_at=2_000_000_000, payment_hash=HASH, rod=ROD_ID):
    tail = payee.tail(R, B, payment_hash, "33" * 32, 18)
    sig = payee.sign(PAYEE_SECRET, payee.statement(payment_hash, expires_at, rod))
    return payee.PrivateOffer(payment_hash, expires_at, 18, tail, sig)


def test_an_offer_round_trips_and_is_checked_against_the_payee_key():
    made = offer()
    assert payee.PrivateOffer.decode(made.encode()) == made
    key = payee.public_key(PAYEE_SECRET)
    assert payee.check_offer(made, key, ROD_ID, 1_000, set()) is None
    assert "not signed" in payee.check_offer(made, key, node_id(4), 1_000, set())
    assert "not signed" in payee.check_offer(made, node_id(5), ROD_ID, 1_000, set())
    assert "expired" in payee.check_offer(made, key, ROD_ID, 2_000_000_000, set())
    assert "reuses" in payee.check_offer(made, key, ROD_ID, 1_000, {HASH})


@given(st.binary(max_size=600))
def test_a_malformed_offer_raises_only_decode_error(raw):
    try:
        payee.PrivateOffer.decode(raw)
    except DecodeError:
        pass


def read_at_rod(outer: Layer, height=1000, amount=60_000, expiry=2000):
    packet, _ = onion.build([(R, outer)], HASH)
    return peel.read(onion.final_payload(amount, expiry, packet), HASH,
                     onion.secret_key(ROD_SECRET), ROD_ID, Policy(),
                     Incoming("1x1x1", 0, amount, expiry), height)


def test_the_rod_completes_the_payers_layer_with_the_payees_tail():
    outer = Layer(amt_to_forward=50_000, outgoing_cltv_delta=20, outgoing_node_id=None,
                  inner_onion=offer().tail, max_hold_blocks=10)
    record, _, refusal = read_at_rod(outer)
    assert refusal is None
    assert (record.next_node, record.amount_msat, record.total_msat) == (B, 50_000, 50_000)
    assert (record.payment_secret, record.final_cltv_delta, record.max_hold_blocks) == (
        "33" * 32, 20, 10)


def test_a_tail_for_another_rod_or_payment_is_refused():
    other = payee.tail(onion.public_key("44" * 32), B, HASH, "33" * 32, 18)
    for tail in (other, offer(payment_hash="ab" * 32).tail, offer().tail[:-1] + b"\x00"):
        outer = Layer(amt_to_forward=50_000, outgoing_cltv_delta=20, outgoing_node_id=None,
                      inner_onion=tail, max_hold_blocks=10)
        verdict = read_at_rod(outer)
        assert isinstance(verdict, Reject) and "tail" in verdict.reason


def test_the_payers_layers_never_carry_the_recipient_in_clear():
    tail = offer().tail
    outer = Layer(amt_to_forward=50_000, outgoing_cltv_delta=20, outgoing_node_id=None,
                  inner_onion=tail, max_hold_blocks=10)
    assert bytes.fromhex(B) not in outer.encode() and bytes.fromhex(B) not in tail


@pytest.mark.parametrize("bad", ["", "zz", "00" * 80])
def test_verify_refuses_garbage_signatures(bad):
    assert not payee.verify(payee.public_key(PAYEE_SECRET), bad, b"x")
