"""Cold review of issue 7 (record version 2: the asyncln onion, chains of holders): problems found.

Each test showed one problem (a strict xfail until it was fixed) and now guards the fix.
"""

import json

import pytest
from factories import (PAYER, PAYMENT_HASH, PREIMAGE, RECIPIENT, Request, incoming, node_id,
                       payload, record)
from test_node import RecordingRpc, forwarding, node

from asyncln import chain, failures, hold, onion, payer
from asyncln.layer import Layer
from asyncln.node import Node
from asyncln.policy import Policy
from asyncln.states import HoldState

S = node_id(4)                # the holder under test
R = node_id(5)                # the next holder (the payee's Rod)
X = node_id(6)                # a plain routing node between S and R
S_SECRET = "44" * 32          # what makesecret answers on S
R_SECRET = "55" * 32
POLICY = Policy()
HOLD = 10
ARRIVAL = 1000


def legs():
    """The payer's plan: S holds for R (with 5000msat to route there), R for the recipient."""
    return chain.plan_chain([(S, POLICY), (R, POLICY)], 100_000, 18, [HOLD, HOLD], [5000, 0])


def packet():
    to_s, to_r = legs()
    s_layer = Layer(amt_to_forward=to_s.amt_to_forward, outgoing_cltv_delta=to_s.outgoing_cltv_delta,
                    outgoing_node_id=R, max_hold_blocks=HOLD, report_to=PAYER)
    r_layer = Layer(amt_to_forward=to_r.amt_to_forward, outgoing_cltv_delta=to_r.outgoing_cltv_delta,
                    outgoing_node_id=RECIPIENT, max_hold_blocks=HOLD, payment_secret="22" * 32,
                    total_msat=to_r.amt_to_forward)
    raw, _ = onion.build([(onion.public_key(S_SECRET), s_layer),
                          (onion.public_key(R_SECRET), r_layer)], PAYMENT_HASH, b"\x07" * 32)
    return raw


def hook(height):
    """S's htlc_accepted call for the HTLC A sent at ARRIVAL, as lightningd makes it at ``height``."""
    to_s = legs()[0]
    expiry = ARRIVAL + 1 + to_s.cltv_delta_in
    payload = onion.final_payload(to_s.amount_in_msat, expiry, packet())
    hook_onion = {"payload": payload.hex(), "shared_secret": "33" * 32,
                  "forward_msat": to_s.amount_in_msat, "outgoing_cltv_value": expiry}
    htlc = {"short_channel_id": "103x1x0", "id": 0, "amount_msat": to_s.amount_in_msat,
            "cltv_expiry": expiry, "cltv_expiry_relative": expiry - height,
            "payment_hash": PAYMENT_HASH}
    return hook_onion, htlc


def holder(height, saved=()):
    rpc = RecordingRpc(getinfo={"id": S, "blockheight": height}, makesecret={"secret": S_SECRET},
                       signmessage={"zbase": "z"},
                       listdatastore={"datastore": [
                           {"key": ["asyncln", "held", h.payment_hash],
                            "string": json.dumps(h.to_json())} for h in saved]})
    return Node(rpc, lambda *a, **k: None, POLICY), rpc


def via_x():
    """S -> X -> R: X is a plain node charging 1000msat and 34 blocks."""
    to_r = legs()[1]
    return [{"id": X, "channel": "105x1x0", "direction": 0,
             "amount_msat": to_r.amount_in_msat + 1000, "delay": to_r.cltv_delta_in + 34},
            {"id": R, "channel": "106x1x0", "direction": 0,
             "amount_msat": to_r.amount_in_msat, "delay": to_r.cltv_delta_in}]


def forwarding_to_r(route=None, sent_at=ARRIVAL + HOLD - 1):
    """S took A's HTLC at ARRIVAL, found R offline for a few blocks, then sent to R."""
    shell, _ = holder(ARRIVAL)
    request = Request()
    shell.htlc_accepted(*hook(ARRIVAL), PAYER, request)
    assert request.result is None  # held
    to_r = legs()[1]
    with shell.lock:
        shell.relay.route_failed(PAYMENT_HASH, "R offline")
        shell.relay.block(sent_at)
        shell.relay.poll(PAYMENT_HASH)
        route = route or [{"id": R, "channel": "105x1x0", "direction": 0,
                           "amount_msat": to_r.amount_in_msat, "delay": to_r.cltv_delta_in}]
        [send] = [a for a in shell.relay.route_found(PAYMENT_HASH, route)
                  if isinstance(a, hold.SendPay)]
    assert send.onion is not None  # the attempt carries R's part of the asyncln onion
    return shell, send


# --- 1. a replayed HTLC is re-checked as if new, before it is recognised --------------------

def test_a_replay_after_a_restart_reattaches_a_hold_whose_attempt_is_in_flight():
    first, _ = forwarding_to_r()
    saved = first.relay.held[PAYMENT_HASH]
    assert saved.state == HoldState.FORWARDING
    # S restarts a few blocks later, while R still holds (R's own hold is HOLD blocks).
    restart_height = ARRIVAL + HOLD + 5
    shell, _ = holder(restart_height, [saved])
    request = Request()
    shell.htlc_accepted(*hook(restart_height), PAYER, request)
    assert request.result is None, f"the replayed HTLC was answered: {request.result}"
    assert shell.relay.held[PAYMENT_HASH].attached


def run_queued(shell):
    while shell._jobs:
        shell._jobs.popleft()()


def test_a_replay_of_a_completed_hold_gets_the_preimage_again():
    first, _ = forwarding_to_r()
    with first.lock:
        first.relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    saved = first.relay.held[PAYMENT_HASH]
    assert saved.state == HoldState.COMPLETE
    restart_height = ARRIVAL + HOLD + 5
    shell, _ = holder(restart_height, [saved])
    request = Request()
    shell.htlc_accepted(*hook(restart_height), PAYER, request)
    run_queued(shell)
    assert request.result == {"result": "resolve", "payment_key": PREIMAGE}


def test_turning_accept_clear_off_never_fails_a_replayed_hold_in_flight():
    first = node(RecordingRpc())
    forwarding(first)
    saved = first.relay.held[PAYMENT_HASH]
    assert saved.state == HoldState.FORWARDING
    rpc = RecordingRpc(listdatastore={"datastore": [
        {"key": ["asyncln", "held", PAYMENT_HASH], "string": json.dumps(saved.to_json())}]})
    shell = Node(rpc, lambda *a, **k: None, Policy(accept_clear=False))
    inc = incoming()
    hook_onion = {"payload": payload(record()).hex(), "shared_secret": inc.shared_secret,
                  "forward_msat": 110_000, "outgoing_cltv_value": 1500}
    htlc = {"short_channel_id": inc.channel, "id": inc.htlc_id, "amount_msat": inc.amount_msat,
            "cltv_expiry": inc.cltv_expiry, "payment_hash": PAYMENT_HASH}
    request = Request()
    shell.htlc_accepted(hook_onion, htlc, inc.peer, request)
    assert request.result is None, f"the replayed HTLC was answered: {request.result}"


# --- 2. any node on the way to R can end the hold with a trampoline code --------------------

def sendpay_failure(send, failcode, erring_node, erring_index):
    return {"code": 204, "message": "failed",
            "data": {"payment_hash": PAYMENT_HASH, "partid": send.partid, "groupid": 1,
                     "failcode": failcode, "erring_node": erring_node,
                     "erring_index": erring_index, "raw_message": f"{failcode:04x}"}}


def test_the_next_holders_own_trampoline_failure_is_passed_upstream():
    """Sound today: R gave up, S fails A's HTLC at once with R's failure."""
    shell, send = forwarding_to_r(via_x(), sent_at=ARRIVAL + 2)
    shell.attempt_failed(sendpay_failure(send, failures.TEMPORARY_TRAMPOLINE_FAILURE, R, 2))
    assert shell.relay.held[PAYMENT_HASH].state == HoldState.FAILED


def test_a_trampoline_code_from_a_routing_node_does_not_end_the_hold():
    shell, send = forwarding_to_r(via_x(), sent_at=ARRIVAL + 2)
    shell.attempt_failed(sendpay_failure(send, failures.TEMPORARY_TRAMPOLINE_FAILURE, X, 1))
    held = shell.relay.held[PAYMENT_HASH]
    assert held.state == HoldState.HELD, held.last_error


# --- 3. a chain's CLTV: both holds stack up, past what any route may carry ------------------

# askrene's getroutes refuses routes whose total delay exceeds maxdelay, 2016 by default
# (BOLT 4's max_htlc_cltv); CLN's max-locktime-blocks is 2016 too.
MAX_HTLC_CLTV = 2016


def test_a_chain_with_the_default_hold_fits_in_one_htlc():
    invoice = payer.Invoice("lnbcrt1", PAYMENT_HASH, "22" * 32, RECIPIENT, 100_000, 18,
                            expires_at=None)
    hold_for = payer.hold_blocks(None, POLICY, invoice, now=0)
    layers, leg = payer.chain_layers(invoice, (S, POLICY), (R, POLICY), hold_for, 10_000, PAYER)
    assert leg.cltv_delta_in <= MAX_HTLC_CLTV, (hold_for, leg.cltv_delta_in)
    assert sum(layer.max_hold_blocks for layer in layers) <= hold_for
