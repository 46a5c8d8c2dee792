"""Findings of an attacker's read of the money paths, each pinned by a test."""

from dataclasses import replace

from factories import PAYMENT_HASH, PREIMAGE, Request, direct_route, incoming, payload, record
from test_node import RecordingRpc, node

from asyncln import hold
from asyncln.policy import Policy

POLICY = Policy(poll_blocks=6, max_hold_blocks=100, safety_blocks=10)


def arrive(relay, inc):
    return relay.htlc_accepted(PAYMENT_HASH, inc, payload(record(), inc.amount_msat, inc.cltv_expiry),
                               inc.amount_msat, inc.cltv_expiry)


def test_a_second_htlc_with_the_hash_never_takes_the_first_ones_answer():
    shell = node(RecordingRpc())
    first, second = Request(), Request()
    one, two = incoming(), incoming(htlc_id=7)  # the same onion: the same shared secret
    with shell.lock:
        verdict, _ = arrive(shell.relay, one)
        shell.pending[one.key] = first
        owed = shell.relay.cancel(PAYMENT_HASH)      # FailIncoming for the first, not yet run
        verdict, actions = arrive(shell.relay, two)  # the second arrives meanwhile
        assert isinstance(verdict, hold.Reject)      # the first's answer is not delivered yet
    shell.run(owed)
    assert [r["result"] for r in first.results] == ["fail"]
    with shell.lock:
        verdict, actions = arrive(shell.relay, two)  # the payer tries again
        assert isinstance(verdict, hold.Hold)
        shell.pending[two.key] = second
    assert second.results == []  # still waiting: its own record answers it
    with shell.lock:
        shell.relay.route_found(PAYMENT_HASH, direct_route(record()))
        done = shell.relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    shell.run([a for a in done if not isinstance(a, hold.Persist)])
    assert second.results == [{"result": "resolve", "payment_key": PREIMAGE}]
    assert [r["result"] for r in first.results] == ["fail"]


def test_an_unanswered_failed_record_is_not_replaced():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, incoming())
    fail = relay.cancel(PAYMENT_HASH)[-1]
    relay.action_failed(fail, "stdout broke")
    verdict, _ = arrive(relay, incoming(htlc_id=7, secret="44" * 32))
    assert isinstance(verdict, hold.Reject)
    assert relay.reconcile()[-1] == fail  # and the first still gets its answer


def test_a_failed_resave_never_unsends_a_sent_attempt():
    relay = hold.Relay(POLICY, 1000)
    _, actions = arrive(relay, incoming())
    relay.action_failed(actions[0], "datastore broke")  # the first save failed: unsaved
    relay.route_failed(PAYMENT_HASH, "offline")
    relay.block(1006)
    sent = relay.route_found(PAYMENT_HASH, direct_route(record()))
    assert relay.may_send(PAYMENT_HASH, sent[-1].partid)  # handed to sendpay
    resave = next(a for a in relay.reconcile() if isinstance(a, hold.Persist))
    relay.action_failed(resave, "datastore broke again")
    assert relay.held[PAYMENT_HASH].state == hold.HoldState.FORWARDING
    assert relay.block(1200) == []  # no fail-back past the deadline while in flight
    assert relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)[-1].preimage == PREIMAGE


def test_a_version_0_1_record_is_recognised_after_its_alias_became_an_scid():
    old = replace(incoming(channel="1x0x0"), peer=None, shared_secret=None)
    stored = hold.HeldPayment(PAYMENT_HASH, old, record(), 1000, 1100, 1000,
                              state=hold.HoldState.COMPLETE, preimage=PREIMAGE)
    relay = hold.Relay(POLICY, 1010, [hold.HeldPayment.from_json(stored.to_json())])
    replay = incoming(channel="103x1x0")
    verdict, actions = arrive(relay, replay)
    assert isinstance(verdict, hold.Hold)
    # The answer names the HTLC as the shell now keys it (by the replay's shared secret).
    assert actions[-1] == hold.ResolveIncoming(PAYMENT_HASH, PREIMAGE, replay.key)
    assert relay.held[PAYMENT_HASH].incoming == replay
    assert hold.Persist(relay.held[PAYMENT_HASH]) in actions  # upgraded on disk too


def test_a_completed_record_keeps_the_plugin_from_disabling_itself():
    rpc = RecordingRpc()
    shell = node(rpc)
    done = hold.HeldPayment(PAYMENT_HASH, incoming(), record(), 1000, 1100, 1000,
                            state=hold.HoldState.COMPLETE, preimage=PREIMAGE)
    shell.relay = hold.Relay(POLICY, 1000, [done])
    assert shell.has_open_records()


def test_a_partid_taken_by_a_forgotten_record_is_skipped():
    relay = hold.Relay(POLICY, 1000)
    arrive(relay, incoming())
    send = relay.route_found(PAYMENT_HASH, direct_route(record()))[-1]
    assert send.partid == 1
    relay.send_refused(PAYMENT_HASH, 1, "part 1 is taken in lightningd", used_partid=3)
    relay.block(1001)
    again = relay.route_found(PAYMENT_HASH, direct_route(record()))[-1]
    assert again.partid == 4
