"""The shell's action dispatch, with a recording stand-in for lightningd's RPC (no process)."""

import typing

import pytest
from factories import PAYER, PAYMENT_HASH, PREIMAGE, incoming, record

from asyncln import hold
from asyncln.node import Node
from asyncln.policy import Policy


class RecordingRpc:
    def __init__(self, fail=()):
        self.calls = []
        self.fail = set(fail)

    def getinfo(self):
        return self.call("getinfo")

    def call(self, method, params=None):
        self.calls.append((method, params))
        if method in self.fail:
            raise OSError(f"{method} broke")
        return {"getinfo": {"id": PAYER, "blockheight": 1000},
                "listdatastore": {"datastore": []},
                "listsendpays": {"payments": []},
                "listpeerchannels": {"channels": []},
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
