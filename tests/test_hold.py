"""The holding node's state machine, one scenario at a time."""

import pytest
from factories import PAYER, PAYMENT_HASH, PREIMAGE, RECIPIENT, direct_route, incoming, payload, record

from asyncln import failures, hold
from asyncln.policy import Policy

POLICY = Policy(poll_blocks=6, max_hold_blocks=100, safety_blocks=10,
                     fee_base_msat=1000, fee_ppm=1000, max_held=2, max_held_msat=1_000_000)


def arrive(relay, rec=None, inc=None, **kw):
    rec = rec or record()
    inc = inc or incoming()
    return relay.htlc_accepted(PAYMENT_HASH, inc, payload(rec, inc.amount_msat, inc.cltv_expiry),
                               kw.get("forward_msat", inc.amount_msat),
                               kw.get("outgoing_cltv", inc.cltv_expiry), PAYER)


def kinds(actions):
    return [type(a).__name__ for a in actions]


def held_relay(height=1000):
    relay = hold.Relay(POLICY, height)
    verdict, actions = arrive(relay)
    assert isinstance(verdict, hold.Hold)
    assert kinds(actions) == ["Persist", "FindRoute"]
    relay.route_failed(PAYMENT_HASH, "recipient offline")
    return relay


def test_payment_without_record_passes_through():
    relay = hold.Relay(POLICY, 1000)
    assert relay.htlc_accepted(PAYMENT_HASH, incoming(), bytes.fromhex("0802020102040203e8"),
                               258, 1000, PAYER) == (hold.Continue(), [])


def test_relay_off_passes_record_through():
    relay = hold.Relay(Policy(relay=False), 1000)
    assert arrive(relay) == (hold.Continue(), [])


def test_deadlines_at_admission():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, rec=record(max_hold=30))
    held = relay.held[PAYMENT_HASH]
    assert held.give_up_height == 1030
    assert held.next_poll_height == 1000
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, inc=incoming(cltv_expiry=1050))
    # 1050 - safety 10 - final cltv 18 - slack 2 + 1
    assert relay.held[PAYMENT_HASH].give_up_height == 1021


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
    assert held.state == hold.HELD and held.next_poll_height == 1006
    assert relay.block(1005) == []
    assert kinds(relay.block(1006)) == ["FindRoute"]
    actions = relay.route_found(PAYMENT_HASH, direct_route(record()))
    assert kinds(actions) == ["Persist", "SendPay"]
    assert relay.held[PAYMENT_HASH].state == hold.FORWARDING
    actions = relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    assert actions[-1] == hold.ResolveIncoming(PAYMENT_HASH, PREIMAGE)
    assert relay.held[PAYMENT_HASH].state == hold.COMPLETE


def test_payer_is_told_when_held():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)
    actions = relay.route_failed(PAYMENT_HASH, "offline")
    notify = [a for a in actions if isinstance(a, hold.NotifyPayer)]
    assert notify == [hold.NotifyPayer(PAYER, PAYMENT_HASH, "held", 1100, 1006, 1, "no route: offline")]


def test_peer_online_retries_only_its_payments():
    relay = held_relay()
    assert relay.peer_online("02" + "cc" * 32) == []
    assert kinds(relay.peer_online(RECIPIENT)) == ["FindRoute"]


def test_gives_up_at_deadline_with_temporary_node_failure():
    relay = held_relay()
    actions = relay.block(1100)
    assert actions[-1] == hold.FailIncoming(PAYMENT_HASH, "2002",
                                            "recipient stayed offline until the hold deadline")
    assert relay.held[PAYMENT_HASH].state == hold.FAILED


def test_never_fails_while_forwarding_even_past_deadline():
    relay = held_relay()
    relay.block(1006)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    assert relay.block(1200) == []
    actions = relay.attempt_failed(PAYMENT_HASH, "WIRE_TEMPORARY_CHANNEL_FAILURE")
    assert isinstance(actions[-1], hold.FailIncoming)


def test_recipient_refusal_fails_back_at_once():
    relay = held_relay()
    relay.block(1006)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    relay.attempt_failed(PAYMENT_HASH, "unknown payment", refused_by="02" + "cc" * 32)
    assert relay.held[PAYMENT_HASH].state == hold.HELD  # an intermediate's refusal: keep holding
    relay.block(1012)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    actions = relay.attempt_failed(PAYMENT_HASH, "unknown payment", refused_by=RECIPIENT)
    assert actions[-1] == hold.FailIncoming(PAYMENT_HASH, "2002",
                                            "recipient refused the payment: unknown payment")


def test_without_please_poll_one_attempt_only():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, rec=record(please_poll=False))
    actions = relay.route_failed(PAYMENT_HASH, "offline")
    assert isinstance(actions[-1], hold.FailIncoming)


@pytest.mark.parametrize("route_change,problem", [
    (lambda r: [dict(r[0], delay=1500 - 10 - 1001)], "blocks of CLTV"),
    (lambda r: [dict(r[0], delay=17)], "final CLTV"),
    (lambda r: [dict(r[0], amount_msat=99_999)], "requested amount"),
    (lambda r: [dict(r[0], id="02" + "cc" * 32)], "recipient"),
    (lambda r: [{"id": "02" + "cc" * 32, "channel": "1x1x1", "amount_msat": 108_901, "delay": 60}] + r,
     "route fees"),
])
def test_unsafe_routes_are_not_used(route_change, problem):
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)
    actions = relay.route_found(PAYMENT_HASH, route_change(direct_route(record())))
    assert "SendPay" not in kinds(actions)
    assert problem in relay.held[PAYMENT_HASH].last_error


def test_route_with_exact_margins_is_used():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay)
    route = [{"id": "02" + "cc" * 32, "channel": "1x1x1", "amount_msat": 108_900, "delay": 1500 - 10 - 1002}]
    route += direct_route(record())
    assert kinds(relay.route_found(PAYMENT_HASH, route)) == ["Persist", "SendPay"]


@pytest.mark.parametrize("rec,inc,kw,code", [
    (record(), incoming(amount=101_099), {}, failures.TRAMPOLINE_FEE_INSUFFICIENT),
    (record(), incoming(cltv_expiry=1028), {}, failures.TRAMPOLINE_EXPIRY_TOO_SOON),
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


def test_expiry_one_block_above_the_limit_is_accepted():
    relay = hold.Relay(POLICY, 1000)
    verdict, _ = arrive(relay, inc=incoming(cltv_expiry=1030))
    assert isinstance(verdict, hold.Hold)
    assert relay.held[PAYMENT_HASH].give_up_height == 1001


def test_malformed_record_fails_with_invalid_onion_payload():
    relay = hold.Relay(POLICY, 1000)
    raw = payload(record())
    bad = raw[:-40] + bytes(40)
    verdict, actions = relay.htlc_accepted(PAYMENT_HASH, incoming(), bad, 110_000, 1500, PAYER)
    assert isinstance(verdict, hold.Reject) and actions == []
    assert verdict.failure_message.startswith("4016fe00010235")


def test_max_held_count():
    relay = hold.Relay(POLICY, 1000)
    for i in range(2):
        relay.htlc_accepted(f"{i:064x}", incoming(htlc_id=i),
                            payload(record()), 110_000, 1500, PAYER)
    verdict, _ = relay.htlc_accepted(f"{9:064x}", incoming(htlc_id=9), payload(record()),
                                     110_000, 1500, PAYER)
    assert verdict == hold.Reject("2002", "asyncln-max-held reached")


def test_second_htlc_with_same_hash_is_refused():
    relay = held_relay()
    verdict, _ = arrive(relay, inc=incoming(htlc_id=7))
    assert isinstance(verdict, hold.Reject)
    assert relay.held[PAYMENT_HASH].incoming.htlc_id == 0


def test_wrong_preimage_is_ignored():
    relay = held_relay()
    assert relay.attempt_succeeded(PAYMENT_HASH, "00" * 32) == []
    assert relay.held[PAYMENT_HASH].state == hold.HELD


def test_cancel_rules():
    relay = held_relay()
    relay.block(1006)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    with pytest.raises(hold.RelayError) as refused:
        relay.cancel(PAYMENT_HASH)
    assert refused.value.code == hold.ATTEMPT_IN_FLIGHT
    relay.attempt_failed(PAYMENT_HASH, "offline")
    actions = relay.cancel(PAYMENT_HASH)
    assert isinstance(actions[-1], hold.FailIncoming)
    with pytest.raises(hold.RelayError) as again:
        relay.cancel(PAYMENT_HASH)
    assert again.value.code == hold.ALREADY_RESOLVED
    with pytest.raises(hold.RelayError) as unknown:
        relay.cancel("00" * 32)
    assert unknown.value.code == hold.UNKNOWN_PAYMENT


def restart(relay):
    stored = [hold.HeldPayment.from_json(h.to_json()) for h in relay.held.values()]
    return hold.Relay(relay.policy, relay.height, stored)


def test_restart_while_held_does_not_forward_before_replay():
    relay = restart(held_relay())
    assert relay.block(1006) == []  # not attached: the HTLC may be gone
    verdict, actions = arrive(relay)
    assert isinstance(verdict, hold.Hold) and kinds(actions) == ["FindRoute"]


def test_restart_while_forwarding_checks_the_attempt():
    relay = held_relay()
    relay.block(1006)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    relay = restart(relay)
    verdict, actions = arrive(relay)
    assert actions == [hold.CheckAttempt(PAYMENT_HASH)]
    assert relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)[-1] == hold.ResolveIncoming(PAYMENT_HASH, PREIMAGE)


def test_replay_of_terminal_answers_the_same():
    relay = held_relay()
    relay.block(1006)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    relay = restart(relay)
    _, actions = arrive(relay)
    assert actions == [hold.ResolveIncoming(PAYMENT_HASH, PREIMAGE)]


def test_terminal_records_are_forgotten_after_expiry():
    relay = held_relay()
    relay.block(1100)
    assert relay.block(1500) == []
    assert relay.block(1501) == [hold.Forget(PAYMENT_HASH)]
    assert relay.held == {}


def test_completed_record_is_kept_for_its_htlc():
    relay = held_relay()
    relay.block(1006)
    relay.route_found(PAYMENT_HASH, direct_route(record()))
    relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    verdict, _ = arrive(relay, inc=incoming(htlc_id=5))
    assert verdict == hold.Reject("2002", "another HTLC with this payment hash is already complete")
    _, actions = arrive(relay)  # the original HTLC, replayed after a restart
    assert actions == [hold.ResolveIncoming(PAYMENT_HASH, PREIMAGE)]


def test_failed_record_gives_way_to_a_new_htlc():
    relay = held_relay()
    relay.block(1100)
    verdict, _ = arrive(relay, inc=incoming(htlc_id=5, cltv_expiry=1700))
    assert isinstance(verdict, hold.Hold)
    assert relay.held[PAYMENT_HASH].incoming.htlc_id == 5

