"""Issue 11, items 2 and 3: lightningd's answers bound to the exact HTLC; replays first, and
an internal error never fails an HTLC that has a record. The shell (Node) with a stand-in
for lightningd's RPC, no process."""

import json
from dataclasses import replace

import pytest
from factories import (CHANNEL_ID, PAYER, PAYMENT_HASH, PREIMAGE, Request, channel, direct_route,
                       payload, record, written_held)
from test_node import RecordingRpc

from asyncln import hold, node as node_module, port
from asyncln.node import Node
from asyncln.policy import Policy
from asyncln.states import HoldState

ALIAS, REAL = "1x0x0", "103x1x0"       # a zero-conf channel's alias, and its scid once confirmed
OTHER_CHANNEL = channel("dd" * 32, "104x1x0", "2x0x0")  # a second channel with the same payer
ONION_SECRET = "ab" * 32                # the payer reused its createonion session key


def hook(htlc_id=0, scid=REAL, secret=ONION_SECRET, amount=110_000, expiry=1500):
    """An htlc_accepted call for a final-hop HTLC carrying a clear record."""
    hook_onion = {"payload": payload(record(), amount, expiry).hex(), "type": "tlv",
                  "forward_msat": amount, "outgoing_cltv_value": expiry, "shared_secret": secret}
    htlc = {"short_channel_id": scid, "id": htlc_id, "amount_msat": amount, "cltv_expiry": expiry,
            "cltv_expiry_relative": expiry - 1000, "payment_hash": PAYMENT_HASH}
    return hook_onion, htlc


class Logs(list):
    def __call__(self, message, level="info"):
        self.append((level, message))


class Rpc(RecordingRpc):
    """RecordingRpc whose datastore lists only the kind asked for."""

    def __init__(self, datastore, **answers):
        super().__init__(**answers)
        self.datastore = datastore

    def call(self, method, params=None):
        if method == "listdatastore" and method not in self.fail:
            self.calls.append((method, params))
            prefix = params["key"]
            return {"datastore": [e for e in self.datastore if e["key"][:len(prefix)] == prefix]}
        return super().call(method, params)


def shell(channels=(channel(),), datastore=(), **answers):
    rpc = Rpc(list(datastore), listpeerchannels={"channels": list(channels)}, **answers)
    logs = Logs()
    return Node(rpc, logs, Policy()), rpc, logs


def drain(node):
    """The worker, run here: every queued job, in order."""
    while node._jobs:
        node._jobs.popleft()()


def arrive(node, htlc_id=0, scid=REAL, **kw):
    request = Request()
    node.htlc_accepted(*hook(htlc_id, scid, **kw), PAYER, request)
    return request


def saved(node, state=None):
    """What the datastore would hand a restarted node."""
    held = node.relay.held[PAYMENT_HASH]
    data = held.to_json()
    if state is not None:
        data["state"] = state
    return [{"key": ["asyncln", "held", PAYMENT_HASH], "string": json.dumps(data)}]


def forwarding(node):
    """Attempt 1 of the held payment is handed to lightningd."""
    with node.lock:
        node.relay.route_failed(PAYMENT_HASH, "offline")
        node.relay.poll(PAYMENT_HASH)
        send = node.relay.route_found(PAYMENT_HASH, direct_route(record()))[-1]
        assert node.relay.may_send(PAYMENT_HASH, send.partid)
    assert node.relay.held[PAYMENT_HASH].state == HoldState.FORWARDING


# --- 2. answers keyed on the HTLC lightningd names ---------------------------------------------

def test_a_cancelled_htlc_and_its_twin_with_the_same_onion_each_get_their_own_answer():
    """The issue's attack: HTLC2 reuses HTLC1's onion while HTLC1's fail-back is queued."""
    node, _, _ = shell()
    first = arrive(node, htlc_id=0)
    drain(node)
    assert first.results == []                       # held
    with node.lock:
        owed = node.relay.cancel(PAYMENT_HASH)       # the fail-back is decided...
    second = arrive(node, htlc_id=1)                 # ...and not yet delivered
    node.run(owed)
    drain(node)
    assert [r["result"] for r in first.results] == ["fail"]
    assert [r["result"] for r in second.results] == ["fail"]  # refused: nothing held for it
    assert node.pending == {}
    third = arrive(node, htlc_id=2)                  # once delivered, the hash takes a new one
    assert third.results == [] and node.relay.held[PAYMENT_HASH].incoming.htlc_id == 2
    with node.lock:
        done = node.relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    node.run(done)
    assert third.results == [{"result": "resolve", "payment_key": PREIMAGE}]
    assert len(first.results) == len(second.results) == 1


def test_the_answer_table_is_keyed_on_channel_and_htlc_id_not_the_onion():
    node, _, _ = shell()
    request = arrive(node, htlc_id=7)
    assert node.pending == {f"{REAL}/7": request}


def test_a_hash_takes_no_new_htlc_until_the_answer_is_delivered_not_merely_decided():
    node, _, _ = shell()
    first = arrive(node, htlc_id=0)
    with node.lock:
        owed = node.relay.cancel(PAYMENT_HASH)       # decided
    second = arrive(node, htlc_id=1)
    assert [r["result"] for r in second.results] == ["fail"]

    def broken(result):                              # lightningd's pipe, say
        raise OSError("stdout closed")
    first.set_result = broken
    node.run(owed)
    assert node.relay.held[PAYMENT_HASH].attached     # not delivered: still owed
    third = arrive(node, htlc_id=2)
    assert [r["result"] for r in third.results] == ["fail"]
    del first.set_result                              # lightningd reads again
    node.reconcile()
    assert [r["result"] for r in first.results] == ["fail"]
    assert not node.relay.held[PAYMENT_HASH].attached


# --- 2. replays across an scid change, through lightningd's own mapping -------------------------

def test_a_replay_under_the_real_scid_is_matched_through_listpeerchannels():
    node, _, _ = shell(channels=[channel(scid=None)])  # zero-conf: only the alias so far
    arrive(node, scid=ALIAS)
    drain(node)
    forwarding(node)
    restarted, _, _ = shell(channels=[channel()], datastore=saved(node))
    replay = arrive(restarted, scid=REAL)
    assert replay.results == []                       # held again: the attempt may succeed
    assert restarted.relay.held[PAYMENT_HASH].attached
    assert restarted.pending == {f"{REAL}/0": replay}


def test_the_same_onion_on_another_channel_is_not_taken_for_the_replay():
    """Same peer, same HTLC id, same onion, amount and expiry, but another channel:
    payer-chosen data must not identify a replay."""
    node, _, _ = shell(channels=[channel(), OTHER_CHANNEL])
    arrive(node)
    drain(node)
    forwarding(node)
    restarted, _, _ = shell(channels=[channel(), OTHER_CHANNEL], datastore=saved(node))
    twin = arrive(restarted, scid=OTHER_CHANNEL["short_channel_id"])
    assert [r["result"] for r in twin.results] == ["fail"]  # a new HTLC for an open hash
    replay = arrive(restarted)                               # the true replay
    assert replay.results == []
    assert restarted.relay.held[PAYMENT_HASH].incoming.channel_id == CHANNEL_ID


def test_an_unknown_channel_is_looked_up_off_the_hook_path_then_decided():
    node, rpc, _ = shell(channels=[])
    request = arrive(node, scid=ALIAS)
    assert request.results == [] and PAYMENT_HASH not in node.relay.held  # not decided yet
    assert "listpeerchannels" not in [m for m, _ in rpc.calls[-1:]]
    rpc.answers["listpeerchannels"] = {"channels": [channel(scid=None)]}
    drain(node)
    assert node.relay.held[PAYMENT_HASH].incoming.channel_id == CHANNEL_ID
    assert node.pending == {f"{ALIAS}/0": request}


def test_a_new_channel_is_mapped_when_lightningd_says_it_changed():
    node, rpc, _ = shell(channels=[])
    rpc.answers["listpeerchannels"] = {"channels": [channel()]}
    node.channel_changed()
    drain(node)
    assert node.channels == {REAL: CHANNEL_ID, ALIAS: CHANNEL_ID}


@pytest.mark.parametrize("version", ["0.2", "0.1"])
def test_records_stored_before_channel_ids_still_load_and_match_their_replay(version):
    node, _, _ = shell(channels=[channel(scid=None)])
    arrive(node, scid=ALIAS)
    drain(node)
    forwarding(node)
    old = node.relay.held[PAYMENT_HASH].to_json()
    del old["incoming"]["channel_id"]
    if version == "0.1":
        del old["incoming"]["peer"], old["incoming"]["shared_secret"]
    stored = [{"key": ["asyncln", "held", PAYMENT_HASH], "string": json.dumps(old)}]
    restarted, rpc, _ = shell(channels=[channel()], datastore=stored)
    assert restarted.relay.held[PAYMENT_HASH].incoming.channel_id == CHANNEL_ID  # resolved
    replay = arrive(restarted, scid=REAL)
    assert replay.results == [] and restarted.relay.held[PAYMENT_HASH].attached
    restarted.reconcile()
    written = written_held(rpc.calls, PAYMENT_HASH)
    assert written and written[-1]["incoming"]["channel_id"] == CHANNEL_ID  # upgraded on disk


# --- 3. replays first; an internal error never fails an HTLC that has a record ----------------

def boom(*args, **kwargs):
    raise RuntimeError("injected")


@pytest.mark.parametrize("broken", ["peel.read", "carries_record"])
def test_a_replay_whose_attempt_is_in_flight_is_never_parsed_nor_failed(monkeypatch, broken):
    node, _, _ = shell()
    arrive(node)
    drain(node)
    forwarding(node)
    restarted, _, logs = shell(datastore=saved(node))
    monkeypatch.setattr(broken.replace("peel.", "asyncln.peel.") if "." in broken
                        else f"asyncln.holder_shell.{broken}", boom)
    replay = arrive(restarted)
    drain(restarted)
    assert replay.results == []
    assert restarted.relay.held[PAYMENT_HASH].attached
    assert not [m for level, m in logs if level in ("warn", "broken")]


def test_an_error_deciding_an_htlc_with_a_record_keeps_it_owed_until_reconcile(monkeypatch):
    node, _, _ = shell()
    arrive(node)
    drain(node)
    forwarding(node)
    restarted, _, logs = shell(datastore=saved(node))
    monkeypatch.setattr(hold.Relay, "replay", boom)
    replay = arrive(restarted)
    assert replay.results == []                        # not failed
    assert any(level == "broken" for level, _ in logs)
    restarted.reconcile()                              # still broken: still owed
    assert replay.results == [] and restarted.undecided
    monkeypatch.undo()
    restarted.reconcile()
    drain(restarted)
    assert replay.results == [] and not restarted.undecided
    assert restarted.relay.held[PAYMENT_HASH].attached
    with restarted.lock:
        done = restarted.relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    restarted.run(done)
    assert replay.results == [{"result": "resolve", "payment_key": PREIMAGE}]


def test_an_error_after_the_core_held_an_htlc_keeps_it_and_carries_out_the_decision(monkeypatch):
    node, rpc, _ = shell()
    monkeypatch.setattr(Node, "_tell", boom)
    request = arrive(node)
    assert request.results == [] and node.relay.held[PAYMENT_HASH].attached
    drain(node)
    assert "getroutes" in [m for m, _ in rpc.calls]    # its route search still went out
    monkeypatch.undo()
    node.reconcile()
    assert request.results == [] and node.pending == {f"{REAL}/0": request}


def test_an_error_on_an_htlc_with_no_record_fails_it(monkeypatch):
    node, _, _ = shell()
    monkeypatch.setattr("asyncln.peel.read", boom)
    request = arrive(node)
    assert request.results == [port.FAIL_TEMPORARY]
    assert PAYMENT_HASH not in node.relay.held and node.pending == {}


def test_a_failing_failure_report_does_not_drop_another_htlcs_answer(monkeypatch):
    node, rpc, _ = shell()
    request = arrive(node)
    drain(node)
    with node.lock:
        owed = node.relay.cancel(PAYMENT_HASH)
    rpc.fail.add("datastore")
    monkeypatch.setattr(hold.Relay, "action_failed", boom)
    node.run(owed)                                     # Persist fails, its report raises
    assert [r["result"] for r in request.results] == ["fail"]


def test_the_plugins_last_resort_never_fails_an_htlc_with_a_record():
    node, _, _ = shell()
    onion, htlc = hook()
    request = arrive(node)
    assert not node.may_fail(htlc, request)
    assert not node.may_fail(htlc, Request())          # any HTLC for a held hash: decide again
    assert node.may_fail(dict(htlc, payment_hash="00" * 32), Request())


def test_a_retried_decision_resumes_the_same_htlc_and_never_refuses_it():
    node, _, _ = shell()
    request = arrive(node)
    drain(node)
    node.htlc_accepted(*hook(), PAYER, request)        # the shell decides it again
    assert request.results == [] and node.pending == {f"{REAL}/0": request}
    assert node.relay.held[PAYMENT_HASH].incoming == replace(
        node.relay.held[PAYMENT_HASH].incoming, htlc_id=0)


def test_the_channel_map_takes_our_names_only_never_the_peers_alias():
    """alias.remote is the peer's choice: it could name another channel's scid."""
    mine = channel()
    theirs = dict(channel("dd" * 32, "104x1x0", "2x0x0"), alias={"local": "2x0x0",
                                                                 "remote": "103x1x0"})
    assert port.channel_names([mine, theirs]) == {
        "103x1x0": CHANNEL_ID, "1x0x0": CHANNEL_ID, "104x1x0": "dd" * 32, "2x0x0": "dd" * 32}
    assert port.channel_names([channel(scid=None), {"short_channel_id": "5x5x5"}]) == {
        "1x0x0": CHANNEL_ID}


def test_a_failing_listpeerchannels_at_startup_still_serves_the_replays():
    node, _, _ = shell()
    arrive(node)
    drain(node)
    forwarding(node)
    restarted, rpc, logs = shell(datastore=saved(node), fail={"listpeerchannels"})
    assert any(level == "broken" for level, _ in logs)
    replay = arrive(restarted)
    rpc.fail.clear()
    drain(restarted)                                   # looked up off the hook path
    assert replay.results == [] and restarted.relay.held[PAYMENT_HASH].attached


def test_an_error_checking_a_deposited_invoices_commitment_refuses_rather_than_accepts(monkeypatch):
    """Issue 11.6 with 11.3: B's check of the payer's amount commitment fails closed."""
    node, _, logs = shell()
    node.rods.amountless.add(PAYMENT_HASH)

    def broken(*args):
        raise RuntimeError("injected: the commitment check")
    monkeypatch.setattr(node_module.RodShell, "as_recipient", broken)
    plain = {"payload": "0802020102040203e8", "type": "tlv", "forward_msat": 258,
             "outgoing_cltv_value": 1000, "shared_secret": ONION_SECRET}
    request = Request()
    node.htlc_accepted(plain, hook()[1], PAYER, request)
    assert request.result["result"] == "fail"


def test_a_new_htlc_whose_page_is_unreadable_is_refused_not_held():
    """Its record could never be saved, so never sent (a failed Persist of FORWARDING
    sends nothing): holding it only locked the payer's HTLC until the give-up height."""
    from asyncln.store import PAGED, page_of
    page = {"key": ["asyncln", PAGED["held"], page_of(PAYMENT_HASH)], "string": "not a page"}
    node, rpc, _ = shell(datastore=[page])
    request = arrive(node)
    drain(node)
    assert [r["result"] for r in request.results] == ["fail"]
    assert PAYMENT_HASH not in node.relay.held and node.pending == {}
    assert "getroutes" not in [m for m, _ in rpc.calls]
