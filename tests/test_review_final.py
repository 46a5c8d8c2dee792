"""Cold review of the latest changes (replays first, unknown next holder, payee tails, holder failures).

Each test showed one problem (a strict xfail until it was fixed) and now guards the fix.
"""

from dataclasses import replace

import pytest
from factories import PAYER, PAYMENT_HASH, OTHER, incoming, node_id, record

from asyncln import failures, hold, onion, payee
from asyncln.policy import Policy
from asyncln.states import HoldState

POLICY = Policy()
R1 = node_id(5)
R2 = node_id(6)


def to_holder(next_node, max_hold=50):
    """A version-2 record: hold for the next holder, who takes the rest of the onion."""
    return replace(record(node=next_node, max_hold=max_hold), payment_secret="",
                   next_onion="00" * 716)


def failed_back(actions):
    return [a for a in actions if isinstance(a, hold.FailIncoming)]


def test_a_stale_unknown_verdict_never_fails_a_later_htlc_for_another_next_holder():
    relay = hold.Relay(POLICY, 1000)
    relay.admit(PAYMENT_HASH, incoming(), to_holder(R1), 0, 110_000, 1500)
    assert PAYMENT_HASH in relay.searching          # the FindRoute for R1 is out
    for answer in relay.cancel(PAYMENT_HASH)[-1:]:  # operator (RPC thread) while it runs
        relay.answered(PAYMENT_HASH, answer.htlc)   # and lightningd got the fail
    # The payer tries again with the same hash, this time through another next holder.
    verdict, actions = relay.admit(PAYMENT_HASH, incoming(htlc_id=1, secret="44" * 32),
                                   to_holder(R2), 0, 110_000, 1500)
    assert isinstance(verdict, hold.Hold)
    assert not [a for a in actions if isinstance(a, hold.FindRoute)]  # R2 is not searched for
    # The old search for R1 now answers: R1 is in neither gossip nor our peers.
    relay.block(1000 + POLICY.poll_blocks)  # even at a later poll
    actions = relay.route_failed(PAYMENT_HASH, "Unknown destination", unknown_node=R1)
    assert failed_back(actions) == []
    assert relay.held[PAYMENT_HASH].state != HoldState.FAILED


def test_a_single_unknown_answer_does_not_end_a_hold_the_payer_asked_to_poll():
    relay = hold.Relay(POLICY, 1000)
    relay.admit(PAYMENT_HASH, incoming(), to_holder(R1, max_hold=50), 0, 110_000, 1500)
    actions = relay.route_failed(PAYMENT_HASH, "Unknown destination", unknown_node=R1)
    assert failed_back(actions) == []


def test_a_rod_cannot_change_the_final_cltv_of_a_signed_offer():
    secret = "66" * 32
    rod = OTHER
    tail = payee.tail(onion.public_key("55" * 32), PAYER, PAYMENT_HASH, "22" * 32, 18)
    signature = payee.sign(secret, payee.statement(PAYMENT_HASH, 2_000_000_000, rod))
    offer = payee.PrivateOffer(PAYMENT_HASH, 2_000_000_000, 18, tail, signature)
    assert payee.check_offer(offer, payee.public_key(secret), rod, 1_000_000_000, set()) is None
    inflated = replace(offer, min_final_cltv=1000)
    assert payee.check_offer(inflated, payee.public_key(secret), rod, 1_000_000_000,
                             set()) is not None
