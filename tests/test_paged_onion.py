"""A version-2 hold's onion lives under its own datastore key, not in its page.

The next holder's onion is 1,366 bytes, eight times the rest of a record: in
the pages, 100,000 version-2 holds took 13.6 s to recover on a real node
(tests/integration/test_scale.py). It is written once, before the page that
says ONION_SAVED, read back when an attempt is sent, and deleted with the
record.
"""

import json
from dataclasses import replace

import pytest
import test_review_issue7 as issue7
from factories import PAYER, PAYMENT_HASH, RECIPIENT, Request, stored_held
from test_node import RecordingRpc
from test_review_issue7 import ARRIVAL, HOLD, POLICY, R, R_SECRET, S, S_SECRET, forwarding_to_r

from asyncln import hold, onion
from asyncln.layer import Layer
from asyncln.node import Node
from asyncln.states import HoldState
from asyncln.store import ONION_SAVED

ONION_KEY = ("asyncln", "onion", PAYMENT_HASH)


class Datastore(RecordingRpc):
    """RecordingRpc with a datastore that keeps what is written, listed by key prefix."""

    def __init__(self, entries=None, **answers):
        super().__init__(**answers)
        self.entries = dict(entries or {})

    def call(self, method, params=None):
        if method not in ("datastore", "deldatastore", "listdatastore") or method in self.fail:
            return super().call(method, params)
        self.calls.append((method, params))
        key = tuple(params["key"])
        if method == "datastore":
            self.entries[key] = params["string"]
        elif method == "deldatastore":
            self.entries.pop(key, None)
        return {"datastore": [{"key": list(k), "string": v} for k, v in sorted(self.entries.items())
                              if k[:len(key)] == key]}


def restarted(entries, height):
    rpc = Datastore(entries, getinfo={"id": S, "blockheight": height},
                    makesecret={"secret": S_SECRET}, signmessage={"zbase": "z"})
    return Node(rpc, lambda *a, **k: None, POLICY), rpc


def saved(shell):
    """S's datastore once its held record is written, as a restart would read it."""
    rpc = Datastore()
    shell.rpc, shell.store.rpc = rpc, rpc
    shell.execute(hold.Persist(shell.relay.held[PAYMENT_HASH]))
    return rpc


def sent_payload(shell, send):
    """The final hop's payload S's createonion gets for ``send``: it carries the onion."""
    shell.rpc.answers["createonion"] = {"onion": "00", "shared_secrets": ["11" * 32]}
    shell.send_onion(send, ARRIVAL + 5, 1)
    [made] = [p for m, p in shell.rpc.calls if m == "createonion"]
    return made["hops"][-1]["payload"]


def test_the_onion_is_written_under_its_own_key_before_the_page_that_names_it():
    shell, send = forwarding_to_r()
    rpc = saved(shell)
    writes = [p["key"][1] for m, p in rpc.calls if m == "datastore"]
    assert writes == ["onion", "heldpage"]
    assert rpc.entries[ONION_KEY] == f'{{"onion": "{send.onion}"}}'
    assert stored_held(rpc.entries, PAYMENT_HASH)["record"]["next_onion"] == ONION_SAVED
    shell.execute(hold.Persist(shell.relay.held[PAYMENT_HASH]))  # written once, not per save
    assert [p["key"][1] for m, p in rpc.calls if m == "datastore"] == ["onion", "heldpage", "heldpage"]


def test_a_restarted_holder_sends_the_same_onion_it_was_given():
    shell, send = forwarding_to_r()
    before = sent_payload(shell, send)
    rpc = saved(shell)
    again, _ = restarted(rpc.entries, ARRIVAL + 3)
    restored = again.relay.held[PAYMENT_HASH]
    assert restored.record.next_onion == ONION_SAVED  # not in memory either
    assert sent_payload(again, replace(send, onion=ONION_SAVED)) == before


def test_an_onion_missing_from_the_datastore_sends_nothing():
    shell, send = forwarding_to_r()
    rpc = saved(shell)
    del rpc.entries[ONION_KEY]
    again, _ = restarted(rpc.entries, ARRIVAL + 3)
    with pytest.raises(ValueError, match="not in the datastore"):
        again.send_onion(replace(send, onion=ONION_SAVED), ARRIVAL + 5, 1)
    assert "createonion" not in [m for m, _ in again.rpc.calls]


def test_the_onion_goes_with_its_record_before_and_after_a_restart():
    shell, _ = forwarding_to_r()
    rpc = saved(shell)
    shell.execute(hold.Forget(PAYMENT_HASH))
    assert ONION_KEY not in rpc.entries and stored_held(rpc.entries, PAYMENT_HASH) is None
    shell, _ = forwarding_to_r()
    rpc = saved(shell)
    again, _ = restarted(rpc.entries, ARRIVAL + 3)
    again.execute(hold.Forget(PAYMENT_HASH))
    assert ONION_KEY not in again.rpc.entries


def test_a_failed_onion_write_writes_no_page():
    shell, _ = forwarding_to_r()
    rpc = Datastore(fail={"datastore"})
    shell.rpc, shell.store.rpc = rpc, rpc
    with pytest.raises(OSError):
        shell.execute(hold.Persist(shell.relay.held[PAYMENT_HASH]))
    assert rpc.entries == {}



def test_a_send_whose_onion_is_missing_sends_nothing_and_holds_again():
    shell, send = forwarding_to_r()
    rpc = saved(shell)
    del rpc.entries[ONION_KEY]
    again, rpc = restarted(rpc.entries, ARRIVAL + 3)
    rpc.answers.update(getchaininfo={"headercount": ARRIVAL + 3, "blockcount": ARRIVAL + 3},
                       listpeerchannels={"channels": []})
    with again.lock:
        again.relay.unsent.add((PAYMENT_HASH, send.partid))
    again.run([replace(send, onion=ONION_SAVED)])
    assert not {"createonion", "sendonion"} & {m for m, _ in rpc.calls}
    assert again.relay.held[PAYMENT_HASH].state == HoldState.HELD  # fails back at give-up


def another_onion_hook(height):
    """A second HTLC from A for the same payment hash, with another asyncln onion."""
    to_s, to_r = issue7.legs()
    layers = [(onion.public_key(S_SECRET),
               Layer(amt_to_forward=to_s.amt_to_forward, outgoing_cltv_delta=to_s.outgoing_cltv_delta,
                     outgoing_node_id=R, max_hold_blocks=HOLD, report_to=PAYER)),
              (onion.public_key(R_SECRET),
               Layer(amt_to_forward=to_r.amt_to_forward, outgoing_cltv_delta=to_r.outgoing_cltv_delta,
                     outgoing_node_id=RECIPIENT, max_hold_blocks=HOLD,
                     payment_secret="22" * 32, total_msat=to_r.amt_to_forward))]
    raw, _ = onion.build(layers, PAYMENT_HASH, b"\x09" * 32)
    hook_onion, htlc = issue7.hook(height)
    hook_onion["payload"] = onion.final_payload(to_s.amount_in_msat, htlc["cltv_expiry"], raw).hex()
    htlc["id"] = 7
    return hook_onion, htlc


def test_a_failed_hold_replaced_after_a_restart_saves_and_sends_the_new_onion():
    shell, send = forwarding_to_r()
    rpc = saved(shell)
    again, rpc = restarted(rpc.entries, ARRIVAL + 3)
    with again.lock:  # its answer delivered: another HTLC may take the hash
        restored = again.relay.held.pop(PAYMENT_HASH)
        again.relay._count(restored, -1)
        again.relay._put(replace(restored, state=HoldState.FAILED, attached=False))
    request = Request()
    again.htlc_accepted(*another_onion_hook(ARRIVAL + 3), PAYER, request)
    assert request.result is None  # held
    new = again.relay.held[PAYMENT_HASH].record.next_onion
    assert new not in (None, ONION_SAVED, send.onion)
    while again._jobs:
        again._jobs.popleft()()
    assert json.loads(rpc.entries[ONION_KEY]) == {"onion": new}
    third, _ = restarted(rpc.entries, ARRIVAL + 4)
    assert third.next_onion(replace(send, onion=ONION_SAVED)) == bytes.fromhex(new)
