"""Review findings on the "woken at this height" set of Relay.due_slice."""

from factories import incoming, node_id, record
from test_hold import PAYMENT_HASH, arrive, held_relay, kinds

from asyncln.states import HoldState


def test_woken_set_clears_when_a_hook_raises_the_height():
    """An HTLC's hook call (tip_height) can raise the relay's height before the worker's
    block(): the payments woken at the previous height must still be polled at this one,
    and at every later poll (their heap entry was dropped as 'woken already')."""
    relay = held_relay()
    assert kinds(relay.block(1006)) == ["FindRoute"]
    relay.route_failed(PAYMENT_HASH, "recipient offline")
    assert relay.held[PAYMENT_HASH].next_poll_height == 1012
    # Another payer's HTLC arrives at 1012 before the block notification is handled.
    arrive(relay, rec=record(node=node_id(8)), inc=incoming(htlc_id=7), payment_hash="11" * 32,
           tip=1012)
    assert relay.height == 1012
    assert "FindRoute" in kinds(relay.block(1012))
    relay.route_failed(PAYMENT_HASH, "recipient offline")
    assert "FindRoute" in kinds(relay.block(1018))
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD
