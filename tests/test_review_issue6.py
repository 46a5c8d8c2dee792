"""Cold review of issue 6 (Rod, payment codes, hints, payer cancel): problems found.

Each test showed one problem (a strict xfail until it was fixed) and now guards the fix.
"""

import json
import time
from dataclasses import replace

import pytest
from factories import (OTHER, PAYER, PAYMENT_HASH, RECIPIENT, incoming, node_id, payload, record,
                       signmessage, written_held)
from test_node import RecordingRpc

from asyncln import code as codes
from asyncln import hold, messages, note, payer, rod_shell
from asyncln.errors import AsynclnError, Code
from asyncln.node import Node
from asyncln.policy import Policy
from asyncln.recipient import RecipientConfig
from asyncln.record import HintHop
from asyncln.states import HoldState

ROOMY = replace(Policy(), max_held=10, max_held_msat=10_000_000, min_held_msat=0)


def shell(rpc, rods=()):
    return Node(rpc, lambda *a, **k: None, Policy(),
                recipient=RecipientConfig(rods=tuple(codes.Rod(r) for r in rods)))


# --- 1. a probe's failed search fails followers whose search would differ ------------------

def test_a_probe_without_hints_does_not_fail_a_follower_that_has_them():
    """Different hints make different searches: the follower probes for itself."""
    relay = hold.Relay(ROOMY, 1000)
    probe, follower = "00" * 32, "ff" * 32
    relay.htlc_accepted(probe, incoming(htlc_id=0, secret="01" * 32),
                        payload(record()), 110_000, 1500)
    hints = ((HintHop(node_id(7), "103x1x0", 1000, 10, 6),),)
    rec = replace(record(please_poll=False), route_hints=hints)
    _, actions = relay.htlc_accepted(follower, incoming(htlc_id=1, secret="02" * 32),
                                     payload(rec), 110_000, 1500)
    own = [a for a in actions if isinstance(a, hold.FindRoute)]
    assert own and own[0].hints == hints
    relay.route_failed(probe, "no path to a private node")
    assert relay.held[follower].state != HoldState.FAILED


def test_a_probe_with_too_little_fee_does_not_fail_a_roomier_follower():
    """A payer's starved probe must not make other payments to B fail without a search."""
    relay = hold.Relay(ROOMY, 1000)
    probe, follower = "00" * 32, "ff" * 32
    starved = 100_000 + ROOMY.fee(100_000)  # nothing left for routing
    relay.htlc_accepted(probe, incoming(amount=starved, htlc_id=0, secret="01" * 32),
                        payload(record(), amount=starved), starved, 1500)
    _, actions = relay.htlc_accepted(follower, incoming(htlc_id=1, secret="02" * 32),
                                     payload(record(please_poll=False)), 110_000, 1500)
    assert not [a for a in actions if isinstance(a, hold.FindRoute)]  # it follows the probe
    actions = relay.route_failed(probe, "fee budget too small")
    assert [a.payment_hash for a in actions if isinstance(a, hold.FindRoute)] == [follower]
    assert relay.held[follower].state == HoldState.HELD


# --- 2. an accepted cancel is announced before it is durable -----------------------------

def test_cancel_is_accepted_only_after_the_failed_record_is_written():
    rpc = DatastoreRpc()
    node = shell(rpc)
    with node.lock:
        node.relay.htlc_accepted(PAYMENT_HASH, incoming(), payload(record()), 110_000, 1500)
    node.payer_cancelled(PAYER, PAYMENT_HASH)
    assert node.relay.held[PAYMENT_HASH].state == HoldState.FAILED
    methods = [(m, p) for m, p in rpc.calls]
    accepted = next(i for i, (m, p) in enumerate(methods) if m == "sendcustommsg"
                    and isinstance(messages.decode(p["msg"]), messages.CancelAnswer))
    assert messages.decode(methods[accepted][1]["msg"]).accepted
    written = next(i for i, call in enumerate(methods)
                   if [h["state"] for h in written_held([call], PAYMENT_HASH)] == ["failed"])
    assert written < accepted


def test_a_cancel_that_could_not_be_saved_is_not_accepted():
    rpc = RecordingRpc(fail={"datastore"})
    node = shell(rpc)
    with node.lock:
        node.relay.htlc_accepted(PAYMENT_HASH, incoming(), payload(record()), 110_000, 1500)
    node.payer_cancelled(PAYER, PAYMENT_HASH)
    answer = next(messages.decode(p["msg"]) for m, p in rpc.calls if m == "sendcustommsg"
                  and isinstance(messages.decode(p["msg"]), messages.CancelAnswer))
    assert not answer.accepted and answer.error_code == Code.NO_ANSWER


# --- 3. floods of Rod/cancel messages queue one worker job each --------------------------

@pytest.mark.parametrize("msg", [
    messages.InvoiceRequest("00" * 8, RECIPIENT, 1000),
    messages.CancelRequest("ab" * 32),
], ids=["invoice_request", "cancel_request"])
def test_a_strangers_flood_does_not_grow_the_worker_queue(msg):
    node = shell(RecordingRpc())
    for _ in range(200):
        node.custom_message(OTHER, messages.encode(msg))
    assert len(node._jobs) <= 10


# --- 4. a Rod can hand A a B-signed invoice meant for something else ---------------------

def test_a_fetched_invoice_must_be_a_deposited_one():
    now = int(time.time())
    decoded = {"type": "bolt11 invoice", "valid": True, "payment_hash": "cd" * 32,
               "payment_secret": "22" * 32, "payee": RECIPIENT, "amount_msat": 5000,
               "created_at": now, "expiry": 3600,
               "description": "Order #7 of the Rod operator: 5000 msat"}
    with pytest.raises(AsynclnError):
        payer.check_fetched(decoded, RECIPIENT, 5000, now, "lnbcrt1x", set(), rod_id=OTHER)


# --- 5. a later note for the same payment replaces the one B stored ----------------------

def test_a_second_note_for_a_payment_does_not_replace_the_first():
    rod_id = OTHER
    rpc = DatastoreRpc(makesecret={"secret": "44" * 32},
                       listinvoices={"invoices": [{"label": "asyncln-rod-01"}]})
    node = shell(rpc, rods=(rod_id,))
    key = note.note_public_key("44" * 32)
    genuine = note.seal("for invoice 12, from Alice", key, PAYMENT_HASH)
    forged = note.seal("refund to Mallory", key, PAYMENT_HASH)
    for sealed in (genuine, forged):
        node.rods.receive_note(rod_id, messages.Note(RECIPIENT, PAYMENT_HASH, sealed.hex()))
    stored = [json.loads(p["string"])["note"] for m, p in rpc.calls
              if m == "datastore" and p["key"][1] == "note"]
    assert stored[-1] == "for invoice 12, from Alice"


def test_a_note_for_an_invoice_that_is_not_ours_is_refused():
    rpc = DatastoreRpc(makesecret={"secret": "44" * 32}, listinvoices={"invoices": []})
    node = shell(rpc, rods=(OTHER,))
    sealed = note.seal("hello", note.note_public_key("44" * 32), PAYMENT_HASH)
    node.rods.receive_note(OTHER, messages.Note(RECIPIENT, PAYMENT_HASH, sealed.hex()))
    assert not [p for m, p in rpc.calls if m == "datastore" and p["key"][1] == "note"]
    assert any(m == "sendcustommsg" for m, _ in rpc.calls)  # acked, so the Rod drops it


class DatastoreRpc(RecordingRpc):
    """RecordingRpc whose datastore keeps what is written."""

    def __init__(self, **answers):
        super().__init__(**answers)
        self.kept = {}

    def call(self, method, params=None):
        if method == "datastore":
            self.kept[tuple(params["key"])] = params["string"]
        if method == "listdatastore":
            self.calls.append((method, params))
            key = tuple(params["key"])
            return {"datastore": [{"key": list(k), "string": v} for k, v in self.kept.items()
                                  if k[:len(key)] == key]}
        return super().call(method, params)


# --- 6. a payment code can keep asyncln-pay / fetchinvoice waiting for many minutes -------

class SilentRods(RecordingRpc):
    def call(self, method, params=None):
        if method == "listpeers":
            self.calls.append((method, params))
            return {"peers": [{"id": r, "connected": True} for r in self.rods]}
        return super().call(method, params)


def test_fetch_has_an_overall_bound(monkeypatch):
    monkeypatch.setattr(rod_shell, "ANSWER_SECONDS", 0.001)
    rods = tuple(codes.Rod(node_id(10 + i)) for i in range(30))
    unsigned = codes.PaymentCode(RECIPIENT, rods, node_id(9))
    text = replace(unsigned, signature=signmessage(RECIPIENT, unsigned.signed_message())).encode()
    rpc = SilentRods()
    rpc.rods = [r.node_id for r in rods]
    node = shell(rpc)
    with pytest.raises(AsynclnError) as e:
        node.fetchinvoice(text, 1000, None)
    assert e.value.code == Code.NO_ANSWER
    asked = [p for m, p in rpc.calls if m == "sendcustommsg"]
    assert len(asked) * 30 <= 120  # at most ~2 minutes of waiting in the worst case
