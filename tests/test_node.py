"""The shell's action dispatch, with a recording stand-in for lightningd's RPC (no process)."""

import json
import typing
from dataclasses import replace

import pytest
from factories import (PAYER, PAYMENT_HASH, PREIMAGE, channel, direct_route, incoming, payload,
                       record)

from asyncln import hold, messages
from asyncln.node import QUEUED_PER_PEER, Node
from asyncln.policy import Policy


class RecordingRpc:
    def __init__(self, fail=(), **answers):
        self.calls = []
        self.fail = set(fail)
        self.answers = answers

    def getinfo(self):
        return self.call("getinfo")

    def call(self, method, params=None):
        self.calls.append((method, params))
        if method in self.fail:
            raise OSError(f"{method} broke")
        if method in self.answers:
            return self.answers[method]
        return {"getinfo": {"id": PAYER, "blockheight": 1000},
                "listdatastore": {"datastore": []},
                "listsendpays": {"payments": []},
                "listpeerchannels": {"channels": [channel()]},
                "getroutes": {"routes": []}}.get(method, {})


def node(rpc):
    return Node(rpc, lambda *a, **k: None, Policy())


def held():
    return hold.HeldPayment(PAYMENT_HASH, incoming(), record(), 1000, 1100, 1000)


def one_of_each():
    return [hold.Persist(held()), hold.Forget(PAYMENT_HASH),
            hold.FindRoute(PAYMENT_HASH, PAYER, 1, 18, 0, 100),
            hold.SendPay(PAYMENT_HASH, 1, (), "22" * 32, 1, 2000),
            hold.CheckAttempt(PAYMENT_HASH, 1), hold.ResolveIncoming(PAYMENT_HASH, PREIMAGE),
            hold.FailIncoming(PAYMENT_HASH, "2002", "test"),
            hold.NotifyPayer(PAYER, PAYMENT_HASH, hold.HoldState.HELD, 1, 1, 1, "test")]


def test_every_action_kind_has_a_handler():
    kinds = {type(a) for a in one_of_each()}
    assert kinds == set(typing.get_args(hold.Action))
    shell = node(RecordingRpc())
    for action in one_of_each():
        shell.execute(action)  # none falls through to assert_never


def test_an_unknown_action_fails_loudly():
    with pytest.raises(AssertionError):
        node(RecordingRpc()).execute(object())


def test_a_failing_action_is_reported_and_the_rest_still_run():
    rpc = RecordingRpc(fail={"datastore"})
    shell = node(rpc)
    with shell.lock:
        verdict, actions = shell.relay.htlc_accepted(
            PAYMENT_HASH, incoming(), __import__("factories").payload(record()), 110_000, 1500)
    assert isinstance(verdict, hold.Hold)
    shell.run(actions)
    assert PAYMENT_HASH in shell.relay.unsaved          # the core heard about the failed write
    assert [m for m, _ in rpc.calls].count("getroutes") == 1  # and the FindRoute after it still ran
    rpc.fail.clear()
    with shell.lock:
        again = shell.relay.reconcile()
    assert hold.Persist(shell.relay.held[PAYMENT_HASH]) in again


def forwarding(shell):
    """A held payment whose attempt 1 the core has planned and the shell is about to send."""
    with shell.lock:
        shell.relay.htlc_accepted(PAYMENT_HASH, incoming(), payload(record()), 110_000, 1500)
        shell.relay.route_failed(PAYMENT_HASH, "offline")
        shell.relay.poll(PAYMENT_HASH)
        return shell.relay.route_found(PAYMENT_HASH, direct_route(record()))[-1]


def test_an_older_snapshot_never_overwrites_a_newer_record():
    rpc = RecordingRpc()
    shell = node(rpc)
    send = forwarding(shell)
    stale = hold.Persist(replace(shell.relay.held[PAYMENT_HASH], state=hold.HoldState.HELD))
    shell.execute(stale)  # queued before the attempt, run after it
    written = [p for m, p in rpc.calls if m == "datastore"][-1]
    assert json.loads(written["string"])["state"] == "forwarding"
    assert json.loads(written["string"])["partid"] == send.partid


def test_a_part_lightningd_already_completed_resolves_instead_of_sending():
    parts = [{"partid": 1, "groupid": 1, "status": "complete", "payment_preimage": PREIMAGE}]
    rpc = RecordingRpc(listsendpays={"payments": parts})
    shell = node(rpc)
    send = forwarding(shell)
    actions = shell.send_attempt(send)
    assert hold.ResolveIncoming(PAYMENT_HASH, PREIMAGE, incoming().key) in actions
    assert "sendpay" not in [m for m, _ in rpc.calls]


def test_a_pending_part_in_lightningd_is_adopted_not_doubled():
    parts = [{"partid": 5, "groupid": 1, "status": "pending"}]
    rpc = RecordingRpc(listsendpays={"payments": parts})
    shell = node(rpc)
    actions = shell.send_attempt(forwarding(shell))
    assert hold.CheckAttempt(PAYMENT_HASH, 5) in actions
    assert shell.relay.held[PAYMENT_HASH].partid == 5
    assert "sendpay" not in [m for m, _ in rpc.calls]


def test_a_query_info_flood_queues_a_bounded_number_of_answers_per_peer():
    shell = node(RecordingRpc())
    for _ in range(50):
        shell.custom_message(PAYER, messages.encode(messages.QueryInfo()))
    assert len(shell._jobs) == QUEUED_PER_PEER


def test_an_unreadable_record_is_skipped_not_fatal():
    good = held()
    rpc = RecordingRpc(listdatastore={"datastore": [
        {"key": ["asyncln", "held", PAYMENT_HASH], "string": json.dumps(good.to_json())},
        {"key": ["asyncln", "held", "ab" * 32], "string": json.dumps({"state": "held"})}]})
    shell = node(rpc)
    assert list(shell.relay.held) == [PAYMENT_HASH]
