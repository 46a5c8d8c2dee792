"""A chain of holders' budgets over random chains: nobody's margin or fee is ever spent."""

from dataclasses import replace

import pytest
from factories import PAYMENT_HASH, incoming, payload, record
from hypothesis import assume, given
from hypothesis import strategies as st

from asyncln import failures, hold
from asyncln.chain import HEIGHT_SLACK, LEG_CLTV_BUDGET, check_leg, give_up_height, plan_chain
from asyncln.payer import DOWNSTREAM_CLTV_BUDGET
from asyncln.policy import Policy

policies = st.builds(Policy, max_hold_blocks=st.integers(1, 2016),
                     safety_blocks=st.integers(1, 300), fee_base_msat=st.integers(0, 10_000),
                     fee_ppm=st.integers(0, 10_000))
heights = st.integers(100, 1_000_000)


@st.composite
def chains(draw, tight=False):
    """(holders, amount, final_cltv, holds, routing fees); ``tight``: the least each leg allows."""
    holders = draw(st.lists(policies, min_size=1, max_size=4))
    named = [(f"holder{i}", policy) for i, policy in enumerate(holders)]
    holds = [1 if tight else draw(st.integers(1, p.max_hold_blocks)) for p in holders]
    fees = [0 if tight else draw(st.integers(0, 1_000_000)) for _ in holders]
    return (named, draw(st.integers(1, 10**10)), draw(st.integers(0, 200)), holds, fees)


def planned(chain):
    named, amount, final_cltv, holds, fees = chain
    return list(zip(plan_chain(named, amount, final_cltv, holds, fees), named, holds, fees))


@given(chains())
def test_legs_link_up_to_the_recipient(chain):
    _, amount, final_cltv, _, _ = chain
    legs = [leg for leg, *_ in planned(chain)]
    for leg, after in zip(legs, legs[1:]):
        assert (leg.amt_to_forward, leg.outgoing_cltv_delta) == (after.amount_in_msat,
                                                                 after.cltv_delta_in)
    assert (legs[-1].amt_to_forward, legs[-1].outgoing_cltv_delta) == (amount, final_cltv)


@given(chains())
def test_no_holder_forwards_more_than_it_received_less_its_fee(chain):
    for leg, (_, policy), hold, routing in planned(chain):
        assert leg.amount_in_msat - leg.amt_to_forward >= policy.fee(leg.amt_to_forward) + routing
        assert leg.max_hold_blocks == hold


@given(chains(), heights, st.data())
def test_no_outgoing_expiry_eats_the_safety_margin(chain, arrival, data):
    """Each holder waits any number of blocks before its give-up height, then forwards over
    a route of up to LEG_CLTV_BUDGET blocks plus the next node's delta."""
    for leg, (_, policy), hold, _ in planned(chain):
        incoming_expiry = arrival + leg.cltv_delta_in
        give_up = give_up_height(policy, incoming_expiry, arrival, leg.outgoing_cltv_delta,
                                 leg.max_hold_blocks)
        assert give_up == arrival + hold  # the whole planned hold, and >= arrival + 1
        start = data.draw(st.integers(arrival, give_up - 1))
        route_delay = data.draw(st.integers(leg.outgoing_cltv_delta,
                                            leg.outgoing_cltv_delta + LEG_CLTV_BUDGET))
        base = start + data.draw(st.integers(0, HEIGHT_SLACK))
        assert base + route_delay <= incoming_expiry - policy.safety_blocks


@given(policies, heights, st.integers(0, 5000), st.integers(0, 5000), st.integers(0, 3000),
       st.integers(0, HEIGHT_SLACK))
def test_give_up_height_keeps_the_margin_for_any_htlc(policy, height, left, delta, max_hold,
                                                      slack):
    expiry = height + left
    give_up = give_up_height(policy, expiry, height, delta, max_hold)
    assert give_up <= height + max(1, min(max_hold, policy.max_hold_blocks))
    assert give_up <= expiry - policy.safety_blocks - LEG_CLTV_BUDGET - delta
    last_start = give_up - 1
    if last_start >= height:
        assert last_start + slack + delta + LEG_CLTV_BUDGET <= expiry - policy.safety_blocks


@given(chains(), heights)
def test_check_leg_accepts_every_planned_leg(chain, arrival):
    for leg, (_, policy), _, _ in planned(chain):
        assert check_leg(policy, leg.amount_in_msat, arrival + leg.cltv_delta_in, arrival,
                         leg.amt_to_forward, leg.outgoing_cltv_delta, leg.max_hold_blocks) is None


@given(chains(tight=True), heights, st.booleans())
def test_check_leg_refuses_one_msat_or_one_block_less(chain, arrival, short_of_blocks):
    """With a one-block hold and no routing fee every leg is exactly the least a holder takes."""
    for leg, (_, policy), _, _ in planned(chain):
        amount_in = leg.amount_in_msat - (not short_of_blocks)
        expiry = arrival + leg.cltv_delta_in - short_of_blocks
        refusal = check_leg(policy, amount_in, expiry, arrival, leg.amt_to_forward,
                            leg.outgoing_cltv_delta, leg.max_hold_blocks)
        assert refusal == ("fee_or_expiry", {
            "fee_base_msat": policy.fee_base_msat, "fee_proportional_millionths": policy.fee_ppm,
            "cltv_expiry_delta": leg.cltv_delta_in - leg.outgoing_cltv_delta})


@given(policies, heights, st.integers(1, 10**10), st.integers(0, 500), st.integers(0, 3000))
def test_retrying_with_the_reported_terms_is_accepted_with_the_asked_hold(
        policy, height, amount, delta, max_hold):
    refusal = check_leg(policy, amount, height, height, amount, delta, max_hold)
    assert refusal is not None
    terms = refusal[1]
    fee = terms["fee_base_msat"] + amount * terms["fee_proportional_millionths"] // 1_000_000
    expiry = height + delta + terms["cltv_expiry_delta"]
    assert check_leg(policy, amount + fee, expiry, height, amount, delta, max_hold) is None
    assert give_up_height(policy, expiry, height, delta, max_hold) == \
        height + max(1, min(max_hold, policy.max_hold_blocks))


@given(policies, heights, st.integers(0, 5000), st.integers(0, 500), st.integers(0, 3000))
def test_check_leg_takes_a_leg_exactly_when_one_attempt_fits(policy, height, left, delta,
                                                             max_hold):
    accepted = check_leg(policy, 10**9, height + left, height, 1, delta, max_hold) is None
    assert accepted == (give_up_height(policy, height + left, height, delta, max_hold) > height)


@pytest.mark.parametrize("args", [
    ([], [], []),                                  # no holder
    ([("s", Policy())], [], [0]),                  # lengths differ
    ([("s", Policy())], [1], []),
    ([("s", Policy())], [0], [0]),                 # hold < 1
    ([("s", Policy(max_hold_blocks=10))], [11], [0]),  # beyond the holder's own cap
    ([("s", Policy())], [1], [-1]),                # negative routing fee
])
def test_plan_chain_refuses_bad_input(args):
    holders, holds, fees = args
    with pytest.raises(ValueError):
        plan_chain(holders, 1000, 18, holds, fees)


@pytest.mark.parametrize("amount,final_cltv", [(0, 18), (1000, -1)])
def test_plan_chain_refuses_bad_amount_or_cltv(amount, final_cltv):
    with pytest.raises(ValueError):
        plan_chain([("s", Policy())], amount, final_cltv, [1], [0])


def test_leg_budget_is_todays_downstream_budget():
    assert LEG_CLTV_BUDGET == DOWNSTREAM_CLTV_BUDGET


def test_a_two_holder_chain_by_hand():
    """A -> S -> R -> B with default terms: R's fee is on B's amount, S's on R's."""
    s, r = Policy(fee_base_msat=1000, fee_ppm=1000), Policy(fee_base_msat=0, fee_ppm=10_000)
    legs = plan_chain([("S", s), ("R", r)], 1_000_000, 18, [6, 100], [500, 2000])
    # R: 1_000_000 + 10_000 fee + 2000 routing; S: 1_012_000 + 1000 + 1012 fee + 500 routing.
    assert [leg.amount_in_msat for leg in legs] == [1_014_512, 1_012_000]
    # R: 18 + 99 + 2 + 144 + 144 = 407; S: 407 + 5 + 2 + 144 + 144 = 702.
    assert [leg.cltv_delta_in for leg in legs] == [702, 407]
    assert [leg.outgoing_cltv_delta for leg in legs] == [407, 18]


@given(policies, st.integers(1000, 1_000_000), st.integers(0, 3000), st.integers(0, 500),
       st.one_of(st.none(), st.integers(0, 3000)))
def test_the_relays_give_up_height_is_the_chains_for_a_clear_record(policy, height, left, delta,
                                                                    max_hold):
    """One give-up bound: hold.Relay takes chain.give_up_height (route budget included),
    for version-1 records too, and holds exactly when it leaves one attempt."""
    policy = replace(policy, min_held_msat=1, max_held_msat=10**12,
                     max_held_msat_per_peer=10**12)
    rec = record(amount=100_000, final_cltv=delta, max_hold=max_hold)
    amount = 100_000 + policy.fee(100_000)
    inc = incoming(amount=amount, cltv_expiry=height + left)
    relay = hold.Relay(policy, height)
    verdict, _ = relay.htlc_accepted(PAYMENT_HASH, inc, payload(rec, amount, inc.cltv_expiry),
                                     amount, inc.cltv_expiry)
    expected = give_up_height(policy, inc.cltv_expiry, height, delta, max_hold)
    assert isinstance(verdict, hold.Hold) == (expected > height)
    if isinstance(verdict, hold.Hold):
        assert relay.held[PAYMENT_HASH].give_up_height == expected
        assert expected <= inc.cltv_expiry - policy.safety_blocks - LEG_CLTV_BUDGET - delta
    else:
        assert int(verdict.failure_message[:4], 16) == failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT
