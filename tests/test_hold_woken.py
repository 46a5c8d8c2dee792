"""Review findings on the "woken at this height" set of Relay.due_slice."""

from dataclasses import replace

from factories import incoming, node_id, record
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hold import PAYMENT_HASH, POLICY, arrive, held_relay, kinds
from test_hold_slices import names, settled, sliced

from asyncln import hold
from asyncln.states import HoldState


def test_woken_set_clears_when_a_hook_raises_the_height():
    """An HTLC's hook call (tip_height) can raise the relay's height before the worker's
    block(): the payments woken at the previous height must still be polled at this one,
    and at every later poll (their heap entry was dropped as 'woken already')."""
    relay = held_relay(policy=replace(POLICY, poll_blocks=1))
    assert kinds(relay.block(1001)) == ["FindRoute"]
    relay.route_failed(PAYMENT_HASH, "recipient offline")
    assert relay.held[PAYMENT_HASH].next_poll_height == 1002
    # Another payer's HTLC arrives at 1002 before the block notification is handled.
    arrive(relay, rec=record(node=node_id(8)), inc=incoming(htlc_id=7), payment_hash="11" * 32,
           tip=1002)
    assert relay.height == 1002
    assert "FindRoute" in kinds(relay.block(1002))
    relay.route_failed(PAYMENT_HASH, "recipient offline")
    assert "FindRoute" in kinds(relay.block(1003))  # before the fix: never polled again
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD


@settings(max_examples=60, deadline=None)
@given(holds=st.lists(st.integers(2, 40), min_size=1, max_size=12),
       raised_first=st.lists(st.booleans(), min_size=1, max_size=30),
       sizes=st.lists(st.integers(1, 7), min_size=1, max_size=3), poll=st.integers(1, 3))
def test_a_hooks_height_first_changes_no_round(holds, raised_first, sizes, poll):
    """Height by height, the same wake-ups whether block() or a hook call's tip_height
    (Relay.replay, an HTLC arriving before the block notification is handled) raised it."""
    plain, raced = settled(holds), settled(holds)
    plain.policy = raced.policy = replace(plain.policy, poll_blocks=poll)
    for step, first in enumerate(raised_first):
        height = 1001 + step
        if first:
            raced.replay("ee" * 32, incoming(htlc_id=999), tip_height=height)
        rounds = []
        for relay in (plain, raced):
            actions = sliced(relay, height, sizes)
            for action in actions:
                if isinstance(action, hold.FindRoute):
                    relay.route_failed(action.payment_hash, "offline")
            rounds.append(names(actions))
        assert rounds[0] == rounds[1], height
