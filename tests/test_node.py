"""The shell's action dispatch, with a recording stand-in for lightningd's RPC (no process)."""

import json
import typing
from dataclasses import replace

import pytest
from factories import (PAYER, PAYMENT_HASH, PREIMAGE, channel, direct_route, incoming, payload,
                       record, written_held)

from asyncln import hold, messages
from asyncln.node import Node
from asyncln.port import QUEUED_PER_PEER
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
        if method == "waitblockheight":  # lightningd's tip: getinfo's height here
            return {"blockheight": self.answers.get("getinfo", {}).get("blockheight", 1000)}
        return {"getinfo": {"id": PAYER, "blockheight": 1000},
                "getchaininfo": {"headercount": 1000, "blockcount": 1000, "ibd": False},
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
    written = written_held(rpc.calls, PAYMENT_HASH)[-1]
    assert written["state"] == "forwarding"
    assert written["partid"] == send.partid


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


# --- issue 11 item 7: delivery after a crash, and never from a stale height ---------------

def route_answer(destination, amount_msat, cltv):
    return {"routes": [{"path": [{"node_id_out": destination, "short_channel_id_dir": "105x1x0/0",
                                  "amount_out_msat": amount_msat, "cltv_out": cltv}]}]}


def final_payload_sent(rpc):
    """The TLVs of the last hop's payload in the latest createonion."""
    from asyncln.wire import decode_bigsize, decode_tlv_stream
    [hops] = [p["hops"] for m, p in rpc.calls if m == "createonion"][-1:]
    raw = bytes.fromhex(hops[-1]["payload"])
    length, offset = decode_bigsize(raw)
    assert offset + length == len(raw)
    return decode_tlv_stream(raw[offset:], known_even=(2, 4, 8))


def judged_lost(rec, parts, height=1000):
    """S sent attempt 1 and crashed; lightningd keeps it pending with no HTLC. S judges it
    lost two blocks after first seeing it so."""
    rpc = RecordingRpc(listsendpays={"payments": parts},
                       getroutes=route_answer(rec.next_node, rec.amount_msat, rec.final_cltv_delta),
                       createonion={"onion": "00" * 1366, "shared_secrets": ["33" * 32]},
                       sendonion={"status": "pending"})
    shell = node(rpc)
    with shell.lock:
        shell.relay.admit(PAYMENT_HASH, incoming(), rec, 0, 110_000, 1500)
        shell.relay.route_failed(PAYMENT_HASH, "offline")
        shell.relay.poll(PAYMENT_HASH)
        send = shell.relay.route_found(PAYMENT_HASH, direct_route(rec))[-1]
        assert shell.relay.may_send(PAYMENT_HASH, send.partid)  # handed to sendonion; crash
    shell.check_attempt(PAYMENT_HASH, send.partid)                # Lost, first seen
    for later in (height + 1, height + 2):                        # Lost two blocks later
        for method in ("getinfo", "getchaininfo"):
            rpc.answers[method] = {**rpc.call(method), "blockheight": later,
                                   "headercount": later, "blockcount": later}
        shell.check_chain()
        shell.check_attempt(PAYMENT_HASH, send.partid)
    assert shell.relay.held[PAYMENT_HASH].lost_partids == (send.partid,)
    return rpc, shell


def lost_then_retried(rec, parts, height=1000):
    """...and its next poll finds a route: the shell's next moves."""
    rpc, shell = judged_lost(rec, parts, height)
    with shell.lock:
        actions = shell.relay.poll(PAYMENT_HASH)
    shell.run(actions)
    return rpc, shell


def test_a_part_judged_lost_no_longer_blocks_delivery():
    """CLN #3916: the stuck part stays pending; the next attempt goes beside it by sendonion."""
    parts = [{"partid": 1, "groupid": 1, "status": "pending", "amount_msat": 100_000}]
    rpc, shell = lost_then_retried(record(), parts)
    [sent] = [p for m, p in rpc.calls if m == "sendonion"]
    assert (sent["partid"], sent["groupid"]) == (2, 1)   # lightningd's one pending group
    assert "total_amount_msat" not in sent                # so lightningd takes it beside part 1
    assert "sendpay" not in [m for m, _ in rpc.calls]
    assert shell.relay.held[PAYMENT_HASH].state == hold.HoldState.FORWARDING
    assert shell.relay.held[PAYMENT_HASH].partid == 2
    saved = written_held(rpc.calls, PAYMENT_HASH)[-1]
    assert saved["lost_partids"] == [1]                   # a restart does not adopt it again


def test_a_pending_part_not_judged_lost_is_still_adopted():
    """Never a second live HTLC: only a part judged lost is passed by."""
    parts = [{"partid": 1, "groupid": 1, "status": "pending"},
             {"partid": 2, "groupid": 1, "status": "pending"}]
    rpc, shell = lost_then_retried(record(), parts)
    assert [p for m, p in rpc.calls if m == "sendonion"] == []
    assert shell.relay.held[PAYMENT_HASH].partid == 2
    assert ("listsendpays", {"payment_hash": PAYMENT_HASH}) in rpc.calls


def test_the_recipient_payload_is_built_by_the_holder_with_the_payers_final_tlvs():
    """amt_to_forward, outgoing_cltv_value, payment_data, then the odd TLVs carried unread."""
    from asyncln.wire import encode_tu
    rec = replace(record(), final_tlvs=((66105, b"commitment"), (70001, b"\x01")))
    rpc, shell = lost_then_retried(rec, [{"partid": 1, "groupid": 1, "status": "pending"}])
    tlvs = final_payload_sent(rpc)
    [sent] = [p for m, p in rpc.calls if m == "sendonion"]
    delay = sent["first_hop"]["delay"]
    assert tlvs == {2: encode_tu(100_000), 4: encode_tu(1002 + 1 + delay),   # sent at 1002
                    8: bytes.fromhex("22" * 32) + encode_tu(100_000),
                    66105: b"commitment", 70001: b"\x01"}


@pytest.mark.parametrize("info, chain", [
    # Soak seed A: lightningd clears getinfo's warnings once, after its first catch-up;
    # blocks that reach bitcoind later leave it behind with no warning.
    ({"id": PAYER, "blockheight": 1000}, {"headercount": 1009, "blockcount": 1009, "ibd": False}),
    ({"id": PAYER, "blockheight": 1000, "warning_lightningd_sync": "Still loading"},
     {"headercount": 1000, "blockcount": 1000, "ibd": False}),
    ({"id": PAYER, "blockheight": 1000}, {"headercount": 1005, "blockcount": 1000, "ibd": False}),
    ({"id": PAYER, "blockheight": 1000}, {"headercount": 1000, "blockcount": 1000, "ibd": True}),
])
def test_no_attempt_while_lightningd_is_behind_bitcoinds_tip(info, chain):
    rpc = RecordingRpc()
    shell = node(rpc)
    send = forwarding(shell)
    rpc.answers.update(getinfo=info, getchaininfo=chain)
    assert shell.send_attempt(send)[0].held.state == hold.HoldState.HELD
    assert {"sendonion", "sendpay", "createonion"}.isdisjoint(m for m, _ in rpc.calls)
    assert not shell.relay.synced          # the worker asks again until it has caught up
    rpc.answers.update(getinfo={"id": PAYER, "blockheight": 1009},
                       getchaininfo={"headercount": 1009, "blockcount": 1009, "ibd": False})
    shell.check_chain()
    assert shell.relay.synced


def test_a_failing_getchaininfo_counts_as_behind():
    from pyln.client import RpcError

    class NoChainInfo(RecordingRpc):
        def call(self, method, params=None):
            if method == "getchaininfo":
                raise RpcError(method, params, {"code": -32601, "message": "Unknown command"})
            return super().call(method, params)
    assert not node(NoChainInfo()).relay.synced


def test_a_send_refused_behind_the_tip_still_carries_out_what_the_new_height_wakes():
    """The height lightningd reports may reach another payment's give-up: it is failed back."""
    rpc = RecordingRpc()
    shell = node(rpc)
    send = forwarding(shell)
    other = "ab" * 32
    with shell.lock:
        shell.relay.admit(other, incoming(htlc_id=7, secret="77" * 32), record(), 0, 110_000, 1500)
        give_up = shell.relay.held[other].give_up_height
    rpc.answers.update(getinfo={"id": PAYER, "blockheight": give_up},
                       getchaininfo={"headercount": give_up + 3, "blockcount": give_up + 3,
                                     "ibd": False})
    actions = shell.send_attempt(send)
    assert any(isinstance(a, hold.FailIncoming) and a.payment_hash == other for a in actions)
    assert "sendonion" not in [m for m, _ in rpc.calls]


def test_a_webhook_that_raises_does_not_mark_the_held_record_unsaved():
    """A failing wake-up (bLIP-55) never changes what happens to the held payment."""
    shell = node(RecordingRpc())

    def broken(client):
        raise RuntimeError("webhook registry broke")
    shell.lsps.payment_held = broken
    with shell.lock:
        _, actions = shell.relay.htlc_accepted(PAYMENT_HASH, incoming(), payload(record()),
                                               110_000, 1500)
    shell.run(actions)  # Persist (held), FindRoute
    assert shell.relay.held[PAYMENT_HASH].state == hold.HoldState.HELD
    assert PAYMENT_HASH not in shell.relay.unsaved
