"""The holding node's state machine, one scenario at a time."""

import hashlib
from dataclasses import replace

import pytest
from factories import (
    OTHER,
    PAYER,
    PAYMENT_HASH,
    PREIMAGE,
    RECIPIENT,
    direct_route,
    incoming,
    node_id,
    payload,
    record,
)

from asyncln import failures, hold
from asyncln.errors import AsynclnError, Code
from asyncln.lightningd import Failed, InFlight, Lost, Succeeded
from asyncln.policy import Policy
from asyncln.record import RECORD_TYPE, find_record
from asyncln.states import HoldState

POLICY = Policy(poll_blocks=6, max_hold_blocks=100, safety_blocks=10,
                fee_base_msat=1000, fee_ppm=1000, max_held=2, max_held_msat=1_000_000)
ROOMY = replace(POLICY, max_held=10, max_held_msat=10_000_000)
TEMPORARY = failures.temporary_node_failure()
NOWHERE = node_id(9)  # an intermediate hop, never a recipient here
KEY = incoming().key   # names the hook request an answer is for
RESOLVE = hold.ResolveIncoming(PAYMENT_HASH, PREIMAGE, KEY)


def fail_back(reason, key=KEY):
    return hold.FailIncoming(PAYMENT_HASH, failures.temporary_trampoline_failure(), reason, key)


def deliver(relay, actions):
    """The shell delivered every answer among ``actions`` to lightningd."""
    for a in actions:
        if isinstance(a, (hold.ResolveIncoming, hold.FailIncoming)):
            relay.answered(a.payment_hash, a.htlc)
    return actions


def arrive(relay, rec=None, inc=None, payment_hash=PAYMENT_HASH, tip=None, **kw):
    rec = rec or record()
    inc = inc or incoming()
    return relay.htlc_accepted(payment_hash, inc, payload(rec, inc.amount_msat, inc.cltv_expiry),
                               kw.get("forward_msat", inc.amount_msat),
                               kw.get("outgoing_cltv", inc.cltv_expiry), tip)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def of(kind, actions):
    return [a for a in actions if isinstance(a, kind)]


def held_relay(height=1000, policy=POLICY, **arrive_kw):
    """One payment held after its first route search failed; next poll at height + 6."""
    relay = hold.Relay(policy, height)
    verdict, actions = arrive(relay, **arrive_kw)
    assert isinstance(verdict, hold.Hold)
    assert kinds(actions) == ["Persist", "FindRoute"]
    relay.route_failed(PAYMENT_HASH, "recipient offline")
    return relay


def forwarding_relay(policy=POLICY, **arrive_kw):
    """Attempt 1 in flight, sent at height 1006."""
    relay = held_relay(policy=policy, **arrive_kw)
    assert kinds(relay.block(1006)) == ["FindRoute"]
    rec = arrive_kw.get("rec") or record()
    assert kinds(relay.route_found(PAYMENT_HASH, direct_route(rec))) == ["Persist", "SendPay"]
    assert relay.held[PAYMENT_HASH].partid == 1
    return relay


def relay_in(state):
    if state == HoldState.HELD:
        return held_relay()
    if state == HoldState.FAILED:
        relay = held_relay()
        relay.block(1100)
        return relay
    relay = forwarding_relay()
    if state == HoldState.COMPLETE:
        relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    return relay


def restart(relay, policy=None, synced=None):
    stored = [hold.HeldPayment.from_json(h.to_json()) for h in relay.held.values()]
    return hold.Relay(policy or relay.policy, relay.height, stored,
                      synced=relay.synced if synced is None else synced)


def test_payment_without_record_passes_through():
    relay = hold.Relay(POLICY, 1000)
    assert relay.htlc_accepted(PAYMENT_HASH, incoming(), bytes.fromhex("0802020102040203e8"),
                               258, 1000) == (hold.Continue(), [])


def test_relay_off_passes_record_through():
    relay = hold.Relay(replace(POLICY, relay=False), 1000)
    assert arrive(relay) == (hold.Continue(), [])
    assert relay.held == {}


def test_deadlines_at_admission():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, rec=record(max_hold=30))
    held = relay.held[PAYMENT_HASH]
    assert held.give_up_height == 1030
    assert held.next_poll_height == 1006  # the first try counted as a poll
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, inc=incoming(cltv_expiry=1194))
    # 1194 - safety 10 - route budget 144 - final cltv 18 - slack 2 + 1 (chain.give_up_height)
    assert relay.held[PAYMENT_HASH].give_up_height == 1021


def test_tip_height_from_the_hook_raises_our_height():
    relay = hold.Relay(POLICY, 1000)
    _, actions = arrive(relay, tip=1004)
    assert relay.height == 1004
    assert relay.held[PAYMENT_HASH].hold_start == 1004
    assert of(hold.FindRoute, actions)[0].maxdelay == 1500 - 10 - 1004 - 2
    arrive(relay, inc=incoming(htlc_id=1), payment_hash="00" * 32, tip=990)
    assert relay.height == 1004  # never lowered


def test_tip_height_counts_for_the_expiry_check():
    relay = hold.Relay(POLICY, 1000)
    verdict, _ = arrive(relay, inc=incoming(cltv_expiry=1030), tip=1001)
    assert verdict.failure_message.startswith(f"{failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT:04x}")


def test_find_route_budget():
    relay = hold.Relay(POLICY, 1000)
    _, actions = arrive(relay)
    find = actions[1]
    assert find == hold.FindRoute(PAYMENT_HASH, RECIPIENT, 100_000, 18,
                                  maxfee_msat=110_000 - 100_000 - 1100,
                                  maxdelay=1500 - 10 - 1000 - 2)


def test_held_then_delivered_on_poll():
    relay = held_relay()
    held = relay.held[PAYMENT_HASH]
    assert held.state == HoldState.HELD and held.next_poll_height == 1006
    assert relay.block(1005) == []
    assert kinds(relay.block(1006)) == ["FindRoute"]
    actions = relay.route_found(PAYMENT_HASH, direct_route(record()))
    assert kinds(actions) == ["Persist", "SendPay"]
    assert relay.held[PAYMENT_HASH].state == HoldState.FORWARDING
    assert actions[0].held == relay.held[PAYMENT_HASH]
    actions = relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    assert kinds(actions) == ["Persist", "ResolveIncoming"]
    assert actions[-1] == RESOLVE
    assert relay.held[PAYMENT_HASH].state == HoldState.COMPLETE


def test_payer_is_told_when_held():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)
    actions = relay.route_failed(PAYMENT_HASH, "offline")
    notify = of(hold.NotifyPayer, actions)
    assert notify == [hold.NotifyPayer(PAYER, PAYMENT_HASH, HoldState.HELD, 1100, 1006, 1,
                                       "no route: offline")]


def test_peer_online_retries_only_its_payments():
    relay = held_relay()
    assert relay.peer_online(OTHER) == []
    assert kinds(relay.peer_online(RECIPIENT)) == ["FindRoute"]


def test_a_second_search_for_the_same_payment_waits_for_the_first():
    relay = held_relay()
    assert kinds(relay.peer_online(RECIPIENT)) == ["FindRoute"]
    assert relay.peer_online(RECIPIENT) == []
    assert relay.poll() == []
    assert relay.block(1006) == []


def test_gives_up_at_deadline_with_temporary_node_failure():
    relay = held_relay()
    actions = relay.block(1100)
    assert actions[-1] == fail_back("recipient stayed offline until the hold deadline")
    assert relay.held[PAYMENT_HASH].state == HoldState.FAILED
    assert kinds(actions) == ["Persist", "NotifyPayer", "FailIncoming"]


def test_never_fails_while_forwarding_even_past_deadline():
    relay = forwarding_relay()
    assert relay.block(1200) == []
    assert relay.held[PAYMENT_HASH].state == HoldState.FORWARDING
    actions = relay.attempt_failed(PAYMENT_HASH, 1, "WIRE_TEMPORARY_CHANNEL_FAILURE")
    assert isinstance(actions[-1], hold.FailIncoming)


def test_recipient_refusal_fails_back_at_once():
    relay = forwarding_relay()
    relay.attempt_failed(PAYMENT_HASH, 1, "unknown payment", refused_by=NOWHERE)
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD  # an intermediate's refusal: keep holding
    relay.block(1012)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    actions = relay.attempt_failed(PAYMENT_HASH, 2, "unknown payment", refused_by=RECIPIENT)
    assert actions[-1] == fail_back("recipient refused the payment: unknown payment")


def test_without_please_poll_one_attempt_only():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, rec=record(please_poll=False))
    actions = relay.route_failed(PAYMENT_HASH, "offline")
    assert isinstance(actions[-1], hold.FailIncoming)


@pytest.mark.parametrize("route_change,problem", [
    (lambda r: [dict(r[0], delay=1500 - 10 - 1001)], "blocks of CLTV"),
    (lambda r: [dict(r[0], delay=17)], "final CLTV"),
    (lambda r: [dict(r[0], amount_msat=99_999)], "requested amount"),
    (lambda r: [dict(r[0], id=NOWHERE)], "recipient"),
    (lambda r: [], "empty route"),
])
def test_unsafe_routes_are_not_used(route_change, problem):
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)
    actions = relay.route_found(PAYMENT_HASH, route_change(direct_route(record())))
    assert "SendPay" not in kinds(actions)
    assert problem in relay.held[PAYMENT_HASH].last_error
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD


def test_a_route_dearer_than_the_payer_left_fails_back_at_once_with_its_price():
    """Issue 12.5: the payer sends S its fee and an estimate of S's route, not its whole cap.
    A route that costs more is refused (never forwarded short) and quoted, #836's NODE|26,
    for the payer to retry with: holding on could not make it cheaper."""
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)  # 110,000 in, 100,000 out, our fee 1,100: 8,900 left for routing
    route = [{"id": NOWHERE, "channel": "1x1x1", "amount_msat": 108_901, "delay": 60}]
    actions = relay.route_found(PAYMENT_HASH, route + direct_route(record()))
    assert "SendPay" not in kinds(actions)
    [fail] = of(hold.FailIncoming, actions)
    margin = 100 - 1 + 2 + 144 + 10  # chain._margin for POLICY's whole hold
    assert fail.failure_message == failures.trampoline_fee_or_expiry_insufficient(
        1000 + 8901, 1000, margin)
    assert "the route costs 8901msat" in fail.reason
    assert relay.held[PAYMENT_HASH].state == HoldState.FAILED


def test_route_with_exact_margins_is_used():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)
    route = [{"id": NOWHERE, "channel": "1x1x1", "amount_msat": 108_900, "delay": 1500 - 10 - 1002}]
    route += direct_route(record())
    assert kinds(relay.route_found(PAYMENT_HASH, route)) == ["Persist", "SendPay"]


def test_route_answer_nobody_waits_for_is_ignored():
    relay = held_relay()
    before = relay.held[PAYMENT_HASH]
    assert relay.route_found(PAYMENT_HASH, direct_route(record())) == []
    assert relay.route_failed(PAYMENT_HASH, "late") == []
    assert relay.held[PAYMENT_HASH] == before


@pytest.mark.parametrize("rec,inc,kw,code", [
    (record(), incoming(amount=101_099), {}, failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT),
    (record(), incoming(cltv_expiry=1173), {}, failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT),
    (record(), incoming(), {"forward_msat": 110_001}, failures.FINAL_INCORRECT_HTLC_AMOUNT),
    (record(), incoming(), {"outgoing_cltv": 1501}, failures.FINAL_INCORRECT_CLTV_EXPIRY),
    (record(amount=900_000), incoming(amount=1_100_000), {}, failures.TEMPORARY_NODE_FAILURE),
])
def test_admission_rejections_change_nothing(rec, inc, kw, code):
    relay = hold.Relay(POLICY, 1000)
    verdict, actions = arrive(relay, rec=rec, inc=inc, **kw)
    assert isinstance(verdict, hold.Reject) and actions == []
    assert int(verdict.failure_message[:4], 16) == code
    assert relay.held == {}
    assert (relay.active_count, relay.active_msat) == (0, 0)


def test_expiry_one_block_above_the_limit_is_accepted():
    relay = hold.Relay(POLICY, 1000)
    verdict, _ = arrive(relay, inc=incoming(cltv_expiry=1174))  # room for the route budget too
    assert isinstance(verdict, hold.Hold)
    assert relay.held[PAYMENT_HASH].give_up_height == 1001


def test_malformed_record_fails_with_invalid_onion_payload():
    relay = hold.Relay(POLICY, 1000)
    raw = payload(record())
    bad = raw[:-40] + bytes(40)
    verdict, actions = relay.htlc_accepted(PAYMENT_HASH, incoming(), bad, 110_000, 1500)
    assert isinstance(verdict, hold.Reject) and actions == []
    assert verdict.failure_message.startswith("4016fe00010235")


def test_max_held_count():
    relay = hold.Relay(POLICY, 1000)
    for i in range(2):
        relay.htlc_accepted(f"{i:064x}", incoming(htlc_id=i, secret=f"{i:064x}"),
                            payload(record()), 110_000, 1500)
    verdict, _ = relay.htlc_accepted(f"{9:064x}", incoming(htlc_id=9, secret=f"{9:064x}"),
                                     payload(record()), 110_000, 1500)
    assert verdict == hold.Reject(TEMPORARY, "asyncln-max-held reached")


def test_second_htlc_with_same_hash_is_refused():
    relay = held_relay()
    verdict, _ = arrive(relay, inc=incoming(htlc_id=7, secret="44" * 32))
    assert isinstance(verdict, hold.Reject)
    assert verdict.failure_message == TEMPORARY
    assert relay.held[PAYMENT_HASH].incoming.htlc_id == 0


def test_a_replay_is_only_recognised_after_a_restart():
    """While the hook is pending, the same HTLC again is not a replay: refuse, change nothing."""
    relay = held_relay()
    before = relay.held[PAYMENT_HASH]
    verdict, actions = arrive(relay, inc=incoming(channel="800000x1x0"))
    assert verdict == hold.Reject(TEMPORARY, "another HTLC with this payment hash is already held")
    assert actions == []
    assert relay.held[PAYMENT_HASH] == before
    assert relay.held[PAYMENT_HASH].incoming.channel == "103x1x0"


def test_wrong_preimage_is_ignored():
    relay = held_relay()
    assert relay.attempt_succeeded(PAYMENT_HASH, "00" * 32) == []
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD


def test_cancel_rules():
    relay = forwarding_relay()
    with pytest.raises(AsynclnError) as refused:
        relay.cancel(PAYMENT_HASH)
    assert refused.value.code == Code.ATTEMPT_IN_FLIGHT
    relay.attempt_failed(PAYMENT_HASH, 1, "offline")
    actions = relay.cancel(PAYMENT_HASH)
    assert isinstance(actions[-1], hold.FailIncoming)
    with pytest.raises(AsynclnError) as again:
        relay.cancel(PAYMENT_HASH)
    assert again.value.code == Code.ALREADY_RESOLVED
    with pytest.raises(AsynclnError) as unknown:
        relay.cancel("00" * 32)
    assert unknown.value.code == Code.UNKNOWN_PAYMENT
    with pytest.raises(AsynclnError) as unknown_poll:
        relay.poll("00" * 32)
    assert unknown_poll.value.code == Code.UNKNOWN_PAYMENT


def test_restart_while_held_does_not_forward_before_replay():
    relay = restart(held_relay())
    assert relay.block(1006) == []  # not attached: the HTLC may be gone
    assert relay.poll() == []
    verdict, actions = arrive(relay)
    assert isinstance(verdict, hold.Hold) and kinds(actions) == ["FindRoute"]


def test_restart_past_the_deadline_still_forgets_an_unreplayed_record():
    relay = restart(held_relay())
    actions = relay.block(1100)
    assert kinds(actions) == ["Persist", "NotifyPayer"]  # nobody to answer
    assert relay.held[PAYMENT_HASH].state == HoldState.FAILED


def test_restart_while_forwarding_checks_the_attempt():
    relay = restart(forwarding_relay())
    verdict, actions = arrive(relay)
    assert actions == [hold.CheckAttempt(PAYMENT_HASH, 1)]
    assert relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)[-1] == RESOLVE


def test_replay_of_terminal_answers_the_same():
    relay = restart(relay_in(HoldState.COMPLETE))
    _, actions = arrive(relay)
    assert actions == [RESOLVE]


def test_terminal_records_are_forgotten_after_expiry():
    relay = held_relay()
    deliver(relay, relay.block(1100))
    assert relay.block(1500) == []
    assert relay.block(1501) == [hold.Forget(PAYMENT_HASH)]
    assert relay.held == {}
    assert relay.block(1600) == []


def test_completed_record_is_kept_for_its_htlc():
    relay = relay_in(HoldState.COMPLETE)
    verdict, _ = arrive(relay, inc=incoming(htlc_id=5, secret="44" * 32))
    assert verdict == hold.Reject(TEMPORARY, "another HTLC with this payment hash is already complete")
    _, actions = arrive(relay)  # the original HTLC, replayed after a restart
    assert actions == [RESOLVE]


def test_failed_record_gives_way_to_a_new_htlc_once_its_answer_was_delivered():
    relay = held_relay()
    fail = relay.block(1100)
    second = incoming(htlc_id=5, cltv_expiry=1700, secret="44" * 32)
    verdict, _ = arrive(relay, inc=second)  # decided, not yet delivered
    assert verdict == hold.Reject(TEMPORARY, "another HTLC with this payment hash is already failed")
    deliver(relay, fail)
    verdict, _ = arrive(relay, inc=second)
    assert isinstance(verdict, hold.Hold)
    assert relay.held[PAYMENT_HASH].incoming.htlc_id == 5


def test_failed_record_whose_answer_failed_does_not_give_way():
    relay = held_relay()
    fail = of(hold.FailIncoming, relay.block(1100))[0]
    relay.action_failed(fail, "lightningd went away")
    verdict, _ = arrive(relay, inc=incoming(htlc_id=5, cltv_expiry=1700, secret="44" * 32))
    assert verdict == hold.Reject(TEMPORARY, "another HTLC with this payment hash is already failed")
    assert relay.reconcile() == [fail]


def test_state_round_trips_through_json():
    relay = forwarding_relay()
    held = relay.held[PAYMENT_HASH]
    data = held.to_json()
    assert data["state"] == "forwarding" and "attached" not in data and "payer" not in data
    loaded = hold.HeldPayment.from_json(data)
    assert loaded == held and loaded.state is HoldState.FORWARDING and not loaded.attached


def test_version_0_1_record_loads_and_reports_to_nobody_new():
    """0.1 kept the previous hop as ``payer`` and no peer or shared secret."""
    held = hold.HeldPayment.from_json({
        "payment_hash": PAYMENT_HASH,
        "incoming": {"channel": "103x1x0", "htlc_id": 0, "amount_msat": 110_000, "cltv_expiry": 1500},
        "record": {"next_node": RECIPIENT, "amount_msat": 100_000, "final_cltv_delta": 18,
                   "payment_secret": "22" * 32, "total_msat": 100_000, "please_poll": True},
        "payer": PAYER, "hold_start": 1000, "give_up_height": 1100, "next_poll_height": 1006,
        "attempts": 1, "state": "held"})
    assert held.payer is None and held.partid == 0
    # A pre-0.2 record is matched on HTLC id, amount and expiry: its channel may
    # have been an alias that has since confirmed.
    for channel in ("103x1x0", REAL_SCID):
        relay = hold.Relay(POLICY, 1000, [held])
        verdict, actions = arrive(relay, inc=incoming(channel=channel))
        assert isinstance(verdict, hold.Hold) and kinds(actions) == ["Persist", "FindRoute"]  # upgraded on disk
    for changed in (dict(htlc_id=1), dict(amount=110_001), dict(cltv_expiry=1501)):
        relay = hold.Relay(POLICY, 1000, [held])
        verdict, _ = arrive(relay, inc=incoming(**changed))
        assert isinstance(verdict, hold.Reject)


# --- (a) replays after a restart, with the channel's scid changed -----------

REAL_SCID = "800000x1x0"  # the zero-conf channel confirmed: its alias gave way to a real scid


@pytest.mark.parametrize("state,expected", [
    (HoldState.HELD, lambda: [hold.FindRoute(PAYMENT_HASH, RECIPIENT, 100_000, 18, maxfee_msat=8900,
                                             maxdelay=1500 - 10 - 1000 - 2)]),
    (HoldState.FORWARDING, lambda: [hold.CheckAttempt(PAYMENT_HASH, 1)]),
    (HoldState.COMPLETE, lambda: [replace(RESOLVE, htlc=f"{REAL_SCID}/0")]),
    (HoldState.FAILED, lambda: [fail_back(hold.GAVE_UP, f"{REAL_SCID}/0")]),
])
def test_replay_with_a_new_scid_is_answered_as_before(state, expected):
    relay = restart(relay_in(state))
    before = relay.held[PAYMENT_HASH]
    verdict, actions = arrive(relay, inc=incoming(channel=REAL_SCID))
    assert isinstance(verdict, hold.Hold)
    assert actions == expected()
    now = relay.held[PAYMENT_HASH]
    assert now.state == state and now.partid == before.partid
    assert now.incoming == replace(before.incoming, channel=REAL_SCID)  # shown as it is now


@pytest.mark.parametrize("state", [HoldState.HELD, HoldState.FORWARDING, HoldState.COMPLETE])
@pytest.mark.parametrize("replayed_first", [False, True])
def test_another_htlc_with_the_hash_is_refused_even_from_the_same_slot(state, replayed_first):
    """Same peer, HTLC id, amount and expiry, but another onion: not a replay."""
    relay = restart(relay_in(state))
    if replayed_first:
        arrive(relay, inc=incoming(channel=REAL_SCID))
    before = relay.held[PAYMENT_HASH]
    verdict, actions = arrive(relay, inc=incoming(channel=REAL_SCID, secret="44" * 32))
    assert verdict == hold.Reject(
        TEMPORARY, f"another HTLC with this payment hash is already {state.value}")
    assert actions == []
    assert relay.held[PAYMENT_HASH] == before


@pytest.mark.parametrize("changed", [dict(peer=OTHER), dict(htlc_id=1), dict(amount=110_001),
                                     dict(cltv_expiry=1501)])
def test_replay_must_match_what_lightningd_keeps(changed):
    relay = restart(relay_in(HoldState.COMPLETE))
    verdict, actions = arrive(relay, inc=incoming(**changed))
    assert isinstance(verdict, hold.Reject) and actions == []


def test_replay_of_a_failed_record_then_a_new_htlc_gives_way():
    relay = restart(relay_in(HoldState.FAILED))
    deliver(relay, arrive(relay, inc=incoming(channel=REAL_SCID))[1])
    verdict, _ = arrive(relay, inc=incoming(htlc_id=1, secret="44" * 32, cltv_expiry=1700))
    assert isinstance(verdict, hold.Hold)
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD


def test_relay_off_still_reattaches_a_replay_of_a_known_record():
    relay = restart(relay_in(HoldState.HELD), policy=replace(POLICY, relay=False))
    verdict, actions = arrive(relay, inc=incoming(channel=REAL_SCID))
    assert isinstance(verdict, hold.Hold) and kinds(actions) == ["FindRoute"]
    assert relay.held[PAYMENT_HASH].attached
    # but a new one passes through
    verdict, actions = arrive(relay, payment_hash="00" * 32, inc=incoming(htlc_id=3, secret="55" * 32))
    assert verdict == hold.Continue() and actions == []
    assert "00" * 32 not in relay.held


# --- (b) lightningd not synced with the chain ------------------------------

def test_no_new_holds_while_unsynced():
    relay = hold.Relay(POLICY, 1000, synced=False)
    verdict, actions = arrive(relay)
    assert verdict == hold.Reject(TEMPORARY, "lightningd is still catching up with the chain")
    assert actions == [] and relay.held == {}


def test_no_new_holds_when_options_were_refused():
    relay = hold.Relay(POLICY, 1000, accept_new=False)
    verdict, _ = arrive(relay)
    assert isinstance(verdict, hold.Reject) and verdict.failure_message == TEMPORARY
    assert relay.held == {}


def test_no_route_search_while_unsynced():
    relay = held_relay()
    assert relay.chain(1001, False) == []
    assert not relay.synced
    assert relay.poll() == [] and relay.poll(PAYMENT_HASH) == []
    assert relay.peer_online(RECIPIENT) == []
    assert relay.block(1006) == []
    assert relay.chain(1007, False) == []
    held = relay.held[PAYMENT_HASH]
    assert held.attempts == 1 and PAYMENT_HASH not in relay.searching


def test_no_route_search_on_replay_while_unsynced():
    relay = restart(held_relay(), synced=False)
    verdict, actions = arrive(relay, inc=incoming(channel=REAL_SCID))
    assert isinstance(verdict, hold.Hold) and actions == []
    assert relay.held[PAYMENT_HASH].attached


def test_replays_of_settled_records_are_answered_while_unsynced():
    relay = restart(relay_in(HoldState.COMPLETE), synced=False)
    _, actions = arrive(relay)
    assert actions == [RESOLVE]
    relay = restart(relay_in(HoldState.FORWARDING), synced=False)
    _, actions = arrive(relay)
    assert actions == [hold.CheckAttempt(PAYMENT_HASH, 1)]


def test_give_up_still_happens_while_unsynced():
    relay = held_relay()
    relay.chain(1001, False)
    actions = relay.chain(1100, False)
    assert actions[-1] == fail_back(hold.GAVE_UP)
    relay = restart(held_relay(), synced=False)
    arrive(relay)  # replayed, and still unsynced
    assert relay.block(1099) == []
    assert of(hold.FailIncoming, relay.block(1100))


def test_unsynced_relay_sends_no_attempt_for_an_old_search():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)
    relay.chain(1000, False)
    actions = relay.route_found(PAYMENT_HASH, direct_route(record()))
    assert "SendPay" not in kinds(actions)
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD


def test_due_payments_are_tried_once_synced_at_a_new_height():
    relay = held_relay()
    relay.chain(1003, False)
    assert relay.chain(1006, False) == []
    assert kinds(relay.chain(1007, True)) == ["FindRoute"]


def test_due_payments_are_tried_once_synced_at_the_same_height():
    relay = held_relay()
    assert relay.chain(1006, False) == []
    assert kinds(relay.chain(1006, True)) == ["FindRoute"]


def test_a_payment_due_while_unsynced_is_tried_when_synced_even_without_a_block():
    """Synced again at the height it fell behind: what became due meanwhile goes now."""
    relay = held_relay()
    relay.chain(1003, False)
    assert kinds(relay.chain(1006, True)) == ["FindRoute"]


# --- (c) stale outcomes ------------------------------------------------------

def second_attempt_relay():
    relay = forwarding_relay()
    relay.attempt_failed(PAYMENT_HASH, 1, "temporary channel failure")
    relay.block(1012)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    held = relay.held[PAYMENT_HASH]
    assert held.state == HoldState.FORWARDING and held.partid == 2
    return relay


@pytest.mark.parametrize("partid", [None, 0, 1, 3])
@pytest.mark.parametrize("refused_by", [None, RECIPIENT, NOWHERE])
def test_a_stale_attempt_failure_never_changes_a_forwarding_record(partid, refused_by):
    relay = second_attempt_relay()
    before = relay.held[PAYMENT_HASH]
    assert relay.attempt_failed(PAYMENT_HASH, partid, "old news", refused_by) == []
    assert relay.attempt_checked(PAYMENT_HASH, partid, Failed("old news")) == []
    relay.block(1200)
    assert relay.attempt_failed(PAYMENT_HASH, partid, "old news", refused_by) == []
    assert relay.held[PAYMENT_HASH] == before
    assert relay.may_send(PAYMENT_HASH, 2)


def test_the_current_attempts_failure_counts():
    relay = second_attempt_relay()
    actions = relay.attempt_failed(PAYMENT_HASH, 2, "temporary channel failure")
    assert kinds(actions) == ["Persist", "NotifyPayer"]
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD


def test_a_stale_attempt_failure_is_ignored_when_held():
    relay = second_attempt_relay()
    relay.attempt_failed(PAYMENT_HASH, 2, "x")
    before = relay.held[PAYMENT_HASH]
    assert relay.attempt_failed(PAYMENT_HASH, 2, "x again") == []
    assert relay.attempt_failed(PAYMENT_HASH, 1, "x", refused_by=RECIPIENT) == []
    assert relay.held[PAYMENT_HASH] == before


def test_a_preimage_from_any_attempt_completes():
    relay = second_attempt_relay()
    actions = relay.attempt_checked(PAYMENT_HASH, 1, Succeeded(PREIMAGE))
    assert actions[-1] == RESOLVE


# --- (d) the height check just before sending -------------------------------

@pytest.mark.parametrize("route", [
    direct_route(record()),
    direct_route(record(), delay=40),
    [{"id": NOWHERE, "channel": "1x1x1", "amount_msat": 101_000, "delay": 58}] + direct_route(record()),
])
def test_sendpay_carries_the_highest_height_to_send_at(route):
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)
    send = of(hold.SendPay, relay.route_found(PAYMENT_HASH, route))[0]
    assert send.max_height == 1500 - POLICY.safety_blocks - send.route[0]["delay"] - 1
    spare = send.route[0]["delay"] - route[0]["delay"]  # shadow blocks: every hop alike
    assert send.partid == 1 and send.route == tuple({**hop, "delay": hop["delay"] + spare}
                                                    for hop in route)
    assert send.payment_secret == "22" * 32 and send.total_msat == 100_000
    # sent from max_height, the HTLC's expiry (height + 1 + delay) keeps the safety margin
    assert send.max_height + 1 + send.route[0]["delay"] + POLICY.safety_blocks == 1500
    assert send.max_height >= relay.height + 1


def test_send_refused_returns_the_record_to_held():
    relay = forwarding_relay()
    actions = relay.send_refused(PAYMENT_HASH, 1, "lightningd is catching up with the chain")
    held = relay.held[PAYMENT_HASH]
    assert actions == [hold.Persist(held)]
    assert held.state == HoldState.HELD
    assert held.last_error == "lightningd is catching up with the chain"
    assert held.next_poll_height == 1007
    assert not relay.may_send(PAYMENT_HASH, 1)
    assert relay.reconcile() == []  # nothing to check: never sent
    assert kinds(relay.block(1007)) == ["FindRoute"]
    send = of(hold.SendPay, relay.route_found(PAYMENT_HASH, direct_route(record())))[0]
    assert send.partid == 2


@pytest.mark.parametrize("how", ["send_refused", "persist_failed"])
def test_an_attempt_refused_past_the_deadline_fails_back_at_once(how):
    relay = held_relay()
    relay.block(1099)
    persist, send = relay.route_found(PAYMENT_HASH, direct_route(record()))
    relay.block(1100)  # the attempt may still succeed: no give-up yet
    if how == "send_refused":
        actions = relay.send_refused(PAYMENT_HASH, send.partid, "lightningd is at 1101")
    else:
        actions = relay.action_failed(persist, "datastore full")
    assert relay.held[PAYMENT_HASH].state == HoldState.FAILED
    assert of(hold.FailIncoming, actions)


def test_a_stale_send_refusal_changes_nothing():
    relay = second_attempt_relay()
    before = relay.held[PAYMENT_HASH]
    assert relay.send_refused(PAYMENT_HASH, 1, "late") == []
    assert relay.send_refused("00" * 32, 1, "unknown") == []
    assert relay.held[PAYMENT_HASH] == before


def test_may_send_says_yes_once_for_the_current_attempt():
    relay = second_attempt_relay()
    assert not relay.may_send(PAYMENT_HASH, 1)
    assert not relay.may_send("00" * 32, 2)
    assert relay.may_send(PAYMENT_HASH, 2)
    assert not relay.may_send(PAYMENT_HASH, 2)  # a yes commits: never sent twice


def test_may_send_says_no_once_the_attempt_is_over():
    relay = second_attempt_relay()
    relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    assert not relay.may_send(PAYMENT_HASH, 2)
    relay = second_attempt_relay()
    relay.attempt_failed(PAYMENT_HASH, 2, "x")
    assert not relay.may_send(PAYMENT_HASH, 2)


# --- (e) actions the shell could not carry out ------------------------------

def test_failed_persist_of_an_attempt_stops_it_before_sending():
    relay = held_relay()
    relay.block(1006)
    persist, send = relay.route_found(PAYMENT_HASH, direct_route(record()))
    assert relay.action_failed(persist, "datastore full") == []
    held = relay.held[PAYMENT_HASH]
    assert held.state == HoldState.HELD
    assert held.last_error == "could not save the attempt: datastore full"
    assert not relay.may_send(send.payment_hash, send.partid)
    assert relay.reconcile() == [hold.Persist(held)]
    assert relay.reconcile() == []
    assert kinds(relay.block(1007)) == ["FindRoute"]


def test_failed_persist_of_an_attempt_already_handed_to_sendpay_keeps_it_in_flight():
    relay = held_relay()
    relay.block(1006)
    persist, send = relay.route_found(PAYMENT_HASH, direct_route(record()))
    assert relay.may_send(send.payment_hash, send.partid)  # the shell committed to sending
    assert relay.action_failed(persist, "datastore full") == []
    assert relay.held[PAYMENT_HASH].state == HoldState.FORWARDING
    assert relay.block(1200) == []  # no fail-back while it may succeed
    assert relay.reconcile() == [hold.Persist(relay.held[PAYMENT_HASH]),
                                 hold.CheckAttempt(PAYMENT_HASH, 1)]


def test_failed_persist_of_an_older_attempt_does_not_stop_the_current_one():
    relay = held_relay()
    relay.block(1006)
    old_persist, _ = relay.route_found(PAYMENT_HASH, direct_route(record()))
    relay.attempt_failed(PAYMENT_HASH, 1, "x")
    relay.block(1012)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    relay.action_failed(old_persist, "late error")
    assert relay.may_send(PAYMENT_HASH, 2)
    assert relay.reconcile() == [hold.Persist(relay.held[PAYMENT_HASH]), hold.CheckAttempt(PAYMENT_HASH, 2)]


@pytest.mark.parametrize("state", list(HoldState))
def test_failed_persist_is_written_again_on_reconcile(state):
    relay = relay_in(state)
    persist = hold.Persist(relay.held[PAYMENT_HASH])
    assert relay.action_failed(persist, "x") == []
    assert hold.Persist(relay.held[PAYMENT_HASH]) in relay.reconcile()


@pytest.mark.parametrize("state", [HoldState.COMPLETE, HoldState.FAILED])
def test_failed_answer_is_given_again_on_reconcile(state):
    relay = held_relay()
    if state == HoldState.COMPLETE:
        relay.block(1006)
        relay.route_found(PAYMENT_HASH, direct_route(record()))
        actions = relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    else:
        actions = relay.block(1100)
    answer = actions[-1]
    assert isinstance(answer, (hold.ResolveIncoming, hold.FailIncoming))
    assert relay.action_failed(answer, "rpc went away") == []
    assert relay.held[PAYMENT_HASH].attached
    assert relay.reconcile() == [answer]  # owed until delivered
    relay.answered(PAYMENT_HASH, "another/1")  # another HTLC's delivery changes nothing
    assert relay.reconcile() == [answer]
    relay.answered(PAYMENT_HASH, answer.htlc)
    assert relay.reconcile() == []
    assert not relay.held[PAYMENT_HASH].attached


def test_a_failed_answer_for_a_replaced_htlc_does_not_rearm_the_new_one():
    relay = held_relay()
    fail = deliver(relay, relay.block(1100))[-1]
    second = incoming(htlc_id=5, cltv_expiry=1700, secret="44" * 32)
    assert isinstance(arrive(relay, inc=second)[0], hold.Hold)  # the first's answer went out
    before = relay.held[PAYMENT_HASH]
    assert relay.action_failed(fail, "x") == []
    relay.answered(PAYMENT_HASH, fail.htlc)  # a stale report for the first HTLC
    assert relay.held[PAYMENT_HASH] == before and relay.held[PAYMENT_HASH].attached
    assert relay.reconcile() == []


@pytest.mark.parametrize("state", [HoldState.COMPLETE, HoldState.FAILED])
def test_an_owed_answer_outlives_the_records_expiry(state):
    relay = held_relay()
    if state == HoldState.COMPLETE:
        relay.block(1006)
        relay.route_found(PAYMENT_HASH, direct_route(record()))
        answer = relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)[-1]
    else:
        answer = relay.block(1100)[-1]
    relay.action_failed(answer, "lightningd's rpc was busy")
    actions = relay.block(1501)  # Node.block: check_chain, then reconcile
    actions += relay.reconcile()
    assert answer in actions


def test_failed_route_search_is_a_route_failure():
    relay, twin = hold.Relay(POLICY, 1000), hold.Relay(POLICY, 1000)
    _, actions = arrive(relay)
    arrive(twin)
    find = of(hold.FindRoute, actions)[0]
    failed = relay.action_failed(find, "getroutes broke")
    assert failed == twin.route_failed(PAYMENT_HASH, "route search failed: getroutes broke")
    assert relay.held == twin.held
    assert relay.held[PAYMENT_HASH].last_error == "no route: route search failed: getroutes broke"
    assert PAYMENT_HASH not in relay.searching


def test_failed_sendpay_asks_lightningd_what_happened():
    relay = held_relay()
    relay.block(1006)
    _, send = relay.route_found(PAYMENT_HASH, direct_route(record()))
    assert relay.action_failed(send, "connection reset") == [hold.CheckAttempt(PAYMENT_HASH, 1)]
    assert relay.held[PAYMENT_HASH].state == HoldState.FORWARDING


def test_failed_check_is_asked_again_on_reconcile():
    relay = forwarding_relay()
    check = hold.CheckAttempt(PAYMENT_HASH, 1)
    assert relay.action_failed(check, "x") == []
    assert relay.reconcile() == [check]
    assert relay.reconcile() == [check]  # until lightningd answers


@pytest.mark.parametrize("action", [hold.Forget(PAYMENT_HASH),
                                    hold.NotifyPayer(PAYER, PAYMENT_HASH, HoldState.HELD, 1, 1, 1, "x")])
def test_failed_forget_or_notify_changes_nothing(action):
    relay = held_relay()
    before = relay.held[PAYMENT_HASH]
    assert relay.action_failed(action, "x") == []
    assert relay.held[PAYMENT_HASH] == before
    assert relay.reconcile() == []


def test_answer_failure_for_a_forgotten_payment_is_harmless():
    relay = held_relay()
    fail = deliver(relay, relay.block(1100))[-1]
    relay.block(1501)
    assert relay.held == {}
    assert relay.action_failed(fail, "x") == []
    assert relay.reconcile() == []


# --- (f) admission caps -------------------------------------------------------

def arrive_n(relay, n, peer=PAYER, amount=110_000, rec=None, first=0):
    verdicts = []
    for i in range(first, first + n):
        inc = incoming(amount=amount, htlc_id=i, peer=peer, secret=f"{i + 1:064x}")
        verdicts.append(arrive(relay, rec=rec, inc=inc, payment_hash=f"{i + 1:064x}")[0])
    return verdicts


def test_min_held_msat():
    relay = hold.Relay(replace(ROOMY, min_held_msat=100_001), 1000)
    verdict, _ = arrive(relay)
    assert verdict == hold.Reject(TEMPORARY, "amount below asyncln-min-held-msat")
    relay = hold.Relay(replace(ROOMY, min_held_msat=100_000), 1000)
    assert isinstance(arrive(relay)[0], hold.Hold)


def test_max_held_per_peer():
    relay = hold.Relay(replace(ROOMY, max_held_per_peer=2), 1000)
    assert all(isinstance(v, hold.Hold) for v in arrive_n(relay, 2))
    [refused] = arrive_n(relay, 1, first=2)
    assert refused == hold.Reject(TEMPORARY, "asyncln-max-held-per-peer reached for this peer")
    [other] = arrive_n(relay, 1, peer=OTHER, first=3)
    assert isinstance(other, hold.Hold)
    assert relay.peer_count[PAYER] == 2 and relay.peer_count[OTHER] == 1


def test_max_held_msat_per_peer():
    relay = hold.Relay(replace(ROOMY, max_held_msat_per_peer=220_000), 1000)
    assert all(isinstance(v, hold.Hold) for v in arrive_n(relay, 2))
    [refused] = arrive_n(relay, 1, first=2)
    assert refused == hold.Reject(TEMPORARY, "asyncln-max-held-msat-per-peer reached for this peer")
    [other] = arrive_n(relay, 1, peer=OTHER, first=3)
    assert isinstance(other, hold.Hold)
    assert relay.peer_msat[PAYER] == 220_000


def test_max_held_msat_counts_incoming_amounts():
    relay = hold.Relay(replace(ROOMY, max_held_msat=220_000), 1000)
    assert all(isinstance(v, hold.Hold) for v in arrive_n(relay, 2))
    [refused] = arrive_n(relay, 1, peer=OTHER, first=2)
    assert refused == hold.Reject(TEMPORARY, "asyncln-max-held-msat reached")


def test_caps_free_up_when_a_payment_settles():
    relay = hold.Relay(replace(ROOMY, max_held_per_peer=1), 1000)
    arrive_n(relay, 1)
    [refused] = arrive_n(relay, 1, first=1)
    assert isinstance(refused, hold.Reject)
    relay.cancel(f"{1:064x}")
    assert (relay.active_count, relay.active_msat, relay.peer_count[PAYER]) == (0, 0, 0)
    [accepted] = arrive_n(relay, 1, first=1)
    assert isinstance(accepted, hold.Hold)


def test_forwarding_payments_count_against_the_caps():
    relay = forwarding_relay(policy=replace(ROOMY, max_held_per_peer=1))
    assert relay.active_count == 1 and relay.peer_count[PAYER] == 1
    [refused] = arrive_n(relay, 1, first=1)
    assert isinstance(refused, hold.Reject)


def test_caps_count_records_loaded_after_a_restart():
    relay = restart(forwarding_relay(policy=replace(ROOMY, max_held_per_peer=1)))
    assert (relay.active_count, relay.active_msat, relay.peer_msat[PAYER]) == (1, 110_000, 110_000)
    [refused] = arrive_n(relay, 1, first=1)
    assert isinstance(refused, hold.Reject)


def test_multi_part_records_are_refused_as_invalid_onion_payload():
    rec = replace(record(), total_msat=200_000)
    raw = payload(rec)
    relay = hold.Relay(ROOMY, 1000)
    verdict, actions = relay.htlc_accepted(PAYMENT_HASH, incoming(), raw, 110_000, 1500)
    offset, _ = find_record(raw)
    assert verdict == hold.Reject(
        failures.invalid_onion_payload(RECORD_TYPE, offset),
        "multi-part payments (total_msat above amount_msat) are not supported")
    assert actions == [] and relay.held == {}


# --- (g) one route search per next node and round -----------------------------

HASHES = [f"{i:064x}" for i in (1, 2, 3)]


def three_for_one_node(node=RECIPIENT):
    relay = hold.Relay(ROOMY, 1000)
    answers = []
    for i, payment_hash in enumerate(HASHES):
        inc = incoming(htlc_id=i, secret=f"{i + 1:064x}")
        answers.append(arrive(relay, rec=record(node=node), inc=inc, payment_hash=payment_hash))
    return relay, answers


def test_one_search_per_node_for_several_payments():
    relay, answers = three_for_one_node()
    assert [kinds(a) for _, a in answers] == [["Persist", "FindRoute"], ["Persist"], ["Persist"]]
    assert of(hold.FindRoute, answers[0][1])[0].payment_hash == HASHES[0]
    # every one counted its try
    assert [relay.held[h].attempts for h in HASHES] == [1, 1, 1]


def test_a_probes_route_failure_fails_every_attempt():
    relay, _ = three_for_one_node()
    actions = relay.route_failed(HASHES[0], "recipient offline")
    for payment_hash in HASHES:
        held = relay.held[payment_hash]
        assert held.state == HoldState.HELD
        assert held.last_error == "no route: recipient offline"
    assert sorted(n.payment_hash for n in of(hold.NotifyPayer, actions)) == HASHES
    assert not relay.searching and not relay.probes and not relay.followers


def test_next_round_sends_one_search_again():
    relay, _ = three_for_one_node()
    relay.route_failed(HASHES[0], "recipient offline")
    actions = relay.block(1006)
    assert kinds(actions) == ["FindRoute"]
    assert relay.peer_online(RECIPIENT) == []
    assert relay.poll() == []
    relay.route_failed(actions[0].payment_hash, "still offline")
    assert kinds(relay.peer_online(RECIPIENT)) == ["FindRoute"]


def test_a_found_route_releases_the_others_to_search():
    relay, _ = three_for_one_node()
    actions = relay.route_found(HASHES[0], direct_route(record()))
    assert kinds(actions) == ["FindRoute", "FindRoute", "Persist", "SendPay"]
    assert [a.payment_hash for a in of(hold.FindRoute, actions)] == HASHES[1:]
    assert relay.held[HASHES[0]].state == HoldState.FORWARDING
    for payment_hash in HASHES[1:]:
        sent = relay.route_found(payment_hash, direct_route(record()))
        assert kinds(sent) == ["Persist", "SendPay"]


def test_without_please_poll_a_follower_fails_with_its_probe():
    relay = hold.Relay(ROOMY, 1000)
    arrive(relay, payment_hash=HASHES[0], inc=incoming(secret="01" * 32))
    arrive(relay, rec=record(please_poll=False), payment_hash=HASHES[1],
           inc=incoming(htlc_id=1, secret="02" * 32))
    actions = relay.route_failed(HASHES[0], "offline")
    assert hold.FailIncoming(HASHES[1], failures.temporary_trampoline_failure(),
                             "recipient unreachable: no route: offline",
                             incoming(htlc_id=1).key) in actions
    assert relay.held[HASHES[0]].state == HoldState.HELD


def test_payments_to_other_nodes_search_on_their_own():
    relay, _ = three_for_one_node()
    _, actions = arrive(relay, rec=record(node=OTHER), payment_hash="44" * 32,
                        inc=incoming(htlc_id=9, secret="44" * 32))
    assert kinds(actions) == ["Persist", "FindRoute"]


def test_a_cancelled_probe_still_releases_its_followers():
    relay, _ = three_for_one_node()
    relay.cancel(HASHES[0])
    actions = relay.route_found(HASHES[0], direct_route(record()))
    assert kinds(actions) == ["FindRoute", "FindRoute"]
    assert relay.held[HASHES[0]].state == HoldState.FAILED


def test_a_forgotten_probe_does_not_starve_its_node():
    relay = hold.Relay(ROOMY, 1000)
    arrive(relay, payment_hash=HASHES[0])  # FindRoute out
    deliver(relay, relay.cancel(HASHES[0]))
    assert relay.block(1501) == [hold.Forget(HASHES[0])]  # forgotten before its answer came
    _, actions = arrive(relay, payment_hash=HASHES[1],
                        inc=incoming(htlc_id=1, secret="44" * 32, cltv_expiry=1800))
    relay.route_found(HASHES[0], direct_route(record()))  # the late answer, ignored
    actions += relay.block(1520) + relay.peer_online(RECIPIENT) + relay.poll()
    assert hold.FindRoute in map(type, actions)


def test_a_failed_probe_search_action_fails_every_attempt():
    relay, answers = three_for_one_node()
    find = of(hold.FindRoute, answers[0][1])[0]
    relay.action_failed(find, "getroutes broke")
    assert all(relay.held[h].state == HoldState.HELD for h in HASHES)
    assert not relay.searching


# --- (h) lightningd's own records --------------------------------------------

def test_lost_attempt_fails_only_two_blocks_after_it_was_first_seen_lost():
    """Cold review (issue 11): a part's HTLC shows in listpeerchannels only once channeld took
    the offer, up to 30 s after sendonion; one block after a check right after the send is
    not enough to call it lost."""
    relay = forwarding_relay()
    assert relay.attempt_checked(PAYMENT_HASH, 1, Lost()) == []
    assert relay.attempt_checked(PAYMENT_HASH, 1, Lost()) == []
    assert relay.held[PAYMENT_HASH].state == HoldState.FORWARDING
    relay.block(relay.height + 1)
    assert relay.attempt_checked(PAYMENT_HASH, 1, Lost()) == []
    assert relay.held[PAYMENT_HASH].state == HoldState.FORWARDING
    relay.block(relay.height + 1)
    actions = relay.attempt_checked(PAYMENT_HASH, 1, Lost())
    assert kinds(actions) == ["Persist", "NotifyPayer"]
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD
    assert relay.held[PAYMENT_HASH].last_error == hold.LOST


def test_in_flight_resets_the_lost_clock():
    relay = forwarding_relay()
    relay.attempt_checked(PAYMENT_HASH, 1, Lost())
    relay.block(1007)
    assert relay.attempt_checked(PAYMENT_HASH, 1, InFlight()) == []
    assert relay.attempt_checked(PAYMENT_HASH, 1, Lost()) == []
    relay.block(1008)
    assert relay.attempt_checked(PAYMENT_HASH, 1, Lost()) == []
    relay.block(1009)
    assert kinds(relay.attempt_checked(PAYMENT_HASH, 1, Lost())) == ["Persist", "NotifyPayer"]


def test_lost_past_the_deadline_fails_back():
    relay = forwarding_relay()
    relay.block(1100)
    relay.attempt_checked(PAYMENT_HASH, 1, Lost())
    assert relay.held[PAYMENT_HASH].state == HoldState.FORWARDING
    relay.block(1101)
    relay.attempt_checked(PAYMENT_HASH, 1, Lost())
    relay.block(1102)
    actions = relay.attempt_checked(PAYMENT_HASH, 1, Lost())
    assert actions[-1] == fail_back(f"recipient unreachable: {hold.LOST}")


def test_a_new_attempt_gets_its_own_lost_clock():
    relay = forwarding_relay()
    relay.attempt_checked(PAYMENT_HASH, 1, Lost())
    relay.block(1007)
    relay.attempt_checked(PAYMENT_HASH, 1, Lost())  # attempt 1 failed
    relay.block(1012)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    relay.block(1013)
    assert relay.attempt_checked(PAYMENT_HASH, 2, Lost()) == []  # first seen
    assert relay.held[PAYMENT_HASH].state == HoldState.FORWARDING


@pytest.mark.parametrize("stale", ["ended", "older"])
def test_a_stale_lost_verdict_does_not_start_the_next_attempts_clock(stale):
    relay = forwarding_relay()
    if stale == "ended":
        relay.attempt_failed(PAYMENT_HASH, 1, "temporary channel failure")
        relay.attempt_checked(PAYMENT_HASH, 1, Lost())  # a check that raced that failure
        relay.block(1012)
        relay.route_found(PAYMENT_HASH, direct_route(record()))
    else:
        relay.attempt_failed(PAYMENT_HASH, 1, "temporary channel failure")
        relay.block(1012)
        relay.route_found(PAYMENT_HASH, direct_route(record()))
        relay.attempt_checked(PAYMENT_HASH, 1, Lost())  # about attempt 1, while 2 is out
    relay.block(1013)
    assert relay.attempt_checked(PAYMENT_HASH, 2, Lost()) == []  # attempt 2's first sighting
    assert relay.held[PAYMENT_HASH].state == HoldState.FORWARDING


def test_checked_outcomes():
    relay = forwarding_relay()
    assert relay.attempt_checked(PAYMENT_HASH, 1, InFlight()) == []
    failed = relay.attempt_checked(PAYMENT_HASH, 1, Failed("lightningd has no record of the attempt"))
    assert kinds(failed) == ["Persist", "NotifyPayer"]
    assert relay.held[PAYMENT_HASH].last_error == "lightningd has no record of the attempt"
    relay = forwarding_relay()
    done = relay.attempt_checked(PAYMENT_HASH, 1, Succeeded(PREIMAGE))
    assert done[-1] == RESOLVE
    assert relay.attempt_checked(PAYMENT_HASH, 1, Failed("x")) == []
    assert relay.held[PAYMENT_HASH].state == HoldState.COMPLETE


def test_reconcile_checks_every_attempt_in_flight():
    relay = forwarding_relay()
    assert relay.reconcile() == [hold.CheckAttempt(PAYMENT_HASH, 1)]
    relay = restart(relay)
    assert relay.reconcile() == [hold.CheckAttempt(PAYMENT_HASH, 1)]  # even before the replay


# --- (i) who hears about a held payment -----------------------------------------

def test_status_goes_to_report_to_not_the_incoming_peer():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, rec=record(report_to=OTHER), inc=incoming(peer=PAYER))
    actions = relay.route_failed(PAYMENT_HASH, "offline")
    actions += relay.block(1100)
    notes = of(hold.NotifyPayer, actions)
    assert len(notes) == 2 and {n.payer for n in notes} == {OTHER}


def test_no_status_without_report_to():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, rec=record(report_to=None))
    actions = relay.route_failed(PAYMENT_HASH, "offline")
    relay.block(1006)
    actions += relay.route_found(PAYMENT_HASH, direct_route(record()))
    actions += relay.attempt_failed(PAYMENT_HASH, 1, "temporary channel failure")
    actions += relay.block(1100)
    assert of(hold.NotifyPayer, actions) == []
    assert of(hold.FailIncoming, actions)  # the payment still ran its course


def test_status_on_each_attempt_end_and_first_search_only():
    relay = held_relay()  # first search failed: told
    assert of(hold.NotifyPayer, relay.block(1006)) == []
    assert of(hold.NotifyPayer, relay.route_failed(PAYMENT_HASH, "offline")) == []  # second search
    relay.block(1012)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    [note] = of(hold.NotifyPayer, relay.attempt_failed(PAYMENT_HASH, 1, "x"))
    assert note.payer == PAYER and note.attempts == 3


# --- the due-heap -------------------------------------------------------------------

def test_block_only_touches_due_payments(monkeypatch):
    policy = replace(ROOMY, poll_blocks=100, max_held=1000, max_held_per_peer=1000,
                     max_held_msat_per_peer=10**12, max_held_msat=10**12)
    relay = hold.Relay(policy, 1000)
    for i in range(200):
        _, actions = arrive(relay, rec=record(max_hold=50 + i % 2), payment_hash=f"{i + 1:064x}",
                            inc=incoming(htlc_id=i, secret=f"{i + 1:064x}"))
        assert kinds(actions) == (["Persist", "FindRoute"] if i == 0 else ["Persist"])
    relay.route_failed(f"{1:064x}", "offline")  # the probe's failure ends every search
    assert not relay.searching
    woken = []
    real = relay._wake

    def counting(held):
        woken.append(held.payment_hash)
        return real(held)
    monkeypatch.setattr(relay, "_wake", counting)
    assert relay.block(1049) == []
    assert woken == []
    relay.block(1050)
    assert len(woken) == 100  # only the ones whose deadline it is
    assert sum(h.state == HoldState.FAILED for h in relay.held.values()) == 100
    woken.clear()
    relay.block(1051)
    assert len(woken) == 100
    woken.clear()
    relay.block(1099)
    assert woken == []


def test_a_preimage_with_the_wrong_hash_is_ignored_in_every_state():
    for state in HoldState:
        relay = relay_in(state)
        before = relay.held[PAYMENT_HASH]
        wrong = hashlib.sha256(b"x").hexdigest()
        assert relay.attempt_succeeded(PAYMENT_HASH, wrong) == []
        assert relay.held[PAYMENT_HASH] == before


# --- the payer's cancel (cancel_request from the record's report_to) ---------------------------

def test_the_payer_cancels_a_held_payment():
    relay = held_relay()
    actions = relay.payer_cancel(PAYMENT_HASH, PAYER)
    assert kinds(actions) == ["Persist", "NotifyPayer", "FailIncoming"]
    held = relay.held[PAYMENT_HASH]
    assert held.state == HoldState.FAILED and held.last_error == hold.CANCELLED_BY_PAYER
    assert actions[0] == hold.Persist(held)
    [notify] = of(hold.NotifyPayer, actions)
    assert (notify.payer, notify.state, notify.reason) == (PAYER, HoldState.FAILED,
                                                           hold.CANCELLED_BY_PAYER)
    assert actions[-1] == hold.FailIncoming(PAYMENT_HASH, held.failure_message,
                                            hold.CANCELLED_BY_PAYER, KEY)
    assert held.failure_message == failures.temporary_trampoline_failure()


@pytest.mark.parametrize("peer, payment_hash", [
    (OTHER, PAYMENT_HASH),        # someone else
    (RECIPIENT, PAYMENT_HASH),    # the recipient
    (PAYER, "00" * 32),           # nothing held with that hash
], ids=["other", "recipient", "unknown-hash"])
def test_only_the_payer_may_cancel_and_a_refusal_changes_nothing(peer, payment_hash):
    relay = held_relay()
    before = relay.held[PAYMENT_HASH]
    with pytest.raises(AsynclnError) as refused:
        relay.payer_cancel(payment_hash, peer)
    assert refused.value.code == Code.UNKNOWN_PAYMENT
    assert relay.held[PAYMENT_HASH] == before
    assert kinds(relay.block(1006)) == ["FindRoute"]  # still held: tried at its next poll


def test_without_report_to_nobody_may_cancel_not_even_the_incoming_peer():
    relay = held_relay(rec=record(report_to=None))
    for peer in (PAYER, OTHER, RECIPIENT):
        with pytest.raises(AsynclnError) as refused:
            relay.payer_cancel(PAYMENT_HASH, peer)
        assert refused.value.code == Code.UNKNOWN_PAYMENT
    assert relay.held[PAYMENT_HASH].state == HoldState.HELD
    assert relay.held[PAYMENT_HASH].incoming.peer == PAYER  # it came from PAYER all the same


def test_the_payer_cannot_cancel_while_an_attempt_is_in_flight():
    relay = forwarding_relay()
    before = relay.held[PAYMENT_HASH]
    with pytest.raises(AsynclnError) as refused:
        relay.payer_cancel(PAYMENT_HASH, PAYER)
    assert refused.value.code == Code.ATTEMPT_IN_FLIGHT
    assert relay.held[PAYMENT_HASH] == before
    # Once the attempt failed, the payer may cancel.
    relay.attempt_failed(PAYMENT_HASH, 1, "recipient offline")
    assert kinds(relay.payer_cancel(PAYMENT_HASH, PAYER))[-1] == "FailIncoming"


@pytest.mark.parametrize("state", [HoldState.COMPLETE, HoldState.FAILED])
def test_a_settled_payment_cannot_be_cancelled(state):
    relay = relay_in(state)
    before = relay.held[PAYMENT_HASH]
    with pytest.raises(AsynclnError) as refused:
        relay.payer_cancel(PAYMENT_HASH, PAYER)
    assert refused.value.code == Code.ALREADY_RESOLVED
    assert relay.held[PAYMENT_HASH] == before


def test_a_second_cancel_is_already_resolved_and_answers_once():
    relay = held_relay()
    first = relay.payer_cancel(PAYMENT_HASH, PAYER)
    with pytest.raises(AsynclnError) as again:
        relay.payer_cancel(PAYMENT_HASH, PAYER)
    assert again.value.code == Code.ALREADY_RESOLVED
    assert len(of(hold.FailIncoming, first)) == 1


def test_a_cancel_after_a_restart_fails_the_htlc_once_it_is_replayed():
    relay = restart(held_relay())
    actions = relay.payer_cancel(PAYMENT_HASH, PAYER)
    assert kinds(actions) == ["Persist", "NotifyPayer"]  # lightningd waits on no answer yet
    verdict, replayed = arrive(relay)
    assert isinstance(verdict, hold.Hold)
    assert replayed[-1] == hold.FailIncoming(
        PAYMENT_HASH, relay.held[PAYMENT_HASH].failure_message, hold.CANCELLED_BY_PAYER, KEY)


def test_a_cancelled_payment_is_never_forwarded():
    relay = held_relay()
    relay.payer_cancel(PAYMENT_HASH, PAYER)
    for height in range(1001, 1200):
        assert of(hold.FindRoute, relay.block(height)) == []
    assert relay.poll() == []
    assert relay.peer_online(RECIPIENT) == []


@pytest.mark.parametrize("state", list(HoldState))
@pytest.mark.parametrize("peer", [PAYER, OTHER, RECIPIENT, NOWHERE])
@pytest.mark.parametrize("restarted", [False, True])
def test_payer_cancel_is_accepted_only_from_the_payer_of_a_held_payment(state, peer, restarted):
    relay = relay_in(state)
    if restarted:
        relay = restart(relay)
    before = relay.held[PAYMENT_HASH]
    allowed = peer == PAYER and state == HoldState.HELD
    try:
        actions = relay.payer_cancel(PAYMENT_HASH, peer)
    except AsynclnError as e:
        assert not allowed
        assert e.code == (Code.UNKNOWN_PAYMENT if peer != PAYER else
                          Code.ATTEMPT_IN_FLIGHT if state == HoldState.FORWARDING else
                          Code.ALREADY_RESOLVED)
        assert relay.held[PAYMENT_HASH] == before
        return
    assert allowed
    assert relay.held[PAYMENT_HASH].state == HoldState.FAILED
    assert len(of(hold.FailIncoming, actions)) == (0 if restarted else 1)
    assert of(hold.SendPay, actions) == of(hold.FindRoute, actions) == []


def test_a_next_holder_nobody_knows_is_failed_with_unknown_next_trampoline_at_a_later_poll():
    """#836 PERM|27: still unknown one poll later, no poll will make it known."""
    relay = hold.Relay(POLICY, 1000)
    to_holder = replace(record(), payment_secret="", next_onion="00" * 716)
    relay.admit(PAYMENT_HASH, incoming(), to_holder, 0, 110_000, 1500)
    first = relay.route_failed(PAYMENT_HASH, "Unknown destination", RECIPIENT)
    assert not [a for a in first if isinstance(a, hold.FailIncoming)]  # gossip may be loading
    later = relay.block(1000 + POLICY.poll_blocks)
    assert [a for a in later if isinstance(a, hold.FindRoute)]
    actions = relay.route_failed(PAYMENT_HASH, "Unknown destination", RECIPIENT)
    fail = next(a for a in actions if isinstance(a, hold.FailIncoming))
    assert fail.failure_message == failures.unknown_next_trampoline()


def test_an_unknown_verdict_for_another_node_or_a_recipient_ends_nothing():
    relay = hold.Relay(POLICY, 1000)
    to_holder = replace(record(), payment_secret="", next_onion="00" * 716)
    relay.admit(PAYMENT_HASH, incoming(), to_holder, 0, 110_000, 1500)
    relay.route_failed(PAYMENT_HASH, "Unknown destination", RECIPIENT)
    relay.block(1000 + POLICY.poll_blocks)
    assert not [a for a in relay.route_failed(PAYMENT_HASH, "x", node_id(9))
                if isinstance(a, hold.FailIncoming)]
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)  # a recipient (version 1): it may come back, so hold on
    relay.route_failed(PAYMENT_HASH, "Unknown destination", RECIPIENT)
    relay.block(1000 + POLICY.poll_blocks)
    assert not [a for a in relay.route_failed(PAYMENT_HASH, "Unknown destination", RECIPIENT)
                if isinstance(a, hold.FailIncoming)]


def test_a_partid_taken_in_lightningd_is_skipped_at_once():
    """A payer retrying a hash S tried before (NODE|26's terms) must not wait a block."""
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)
    send = relay.route_found(PAYMENT_HASH, direct_route(record()))[-1]
    actions = relay.send_refused(PAYMENT_HASH, send.partid, "part 1 is taken", used_partid=1)
    assert kinds(actions) == ["Persist", "FindRoute"]
    again = relay.route_found(PAYMENT_HASH, direct_route(record()))[-1]
    assert again.partid == 2
    assert kinds(relay.send_refused(PAYMENT_HASH, 2, "part 2 is taken", used_partid=3)) == \
        ["Persist", "FindRoute"]
    assert relay.route_found(PAYMENT_HASH, direct_route(record()))[-1].partid == 4
    assert kinds(relay.send_refused(PAYMENT_HASH, 4, "too high")) == ["Persist"]  # waits a block
