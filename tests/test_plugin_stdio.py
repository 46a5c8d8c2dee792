"""plugin.py over its stdio JSON-RPC protocol, with a scripted RPC socket."""

import dataclasses
import json
import os
import threading
import time

import pytest
from factories import OTHER, PAYER, PAYMENT_HASH, PREIMAGE, RECIPIENT, node_id, payload, record, signmessage, stored_held
from plugin_harness import PluginProcess, RpcFailure, ScriptedRpc, htlc_params, wait_for

from asyncln import code as codes
from asyncln import commitment, messages, note, rod, signature
from asyncln.features import FEATURE_BIT, feature_hex, has_feature
from asyncln.policy import Policy
from asyncln.recipient import DEFAULT_INVOICE_EXPIRY, DEFAULT_POOL
from asyncln.record import find_record
from asyncln.wire import decode_tlv_stream, encode_bigsize, encode_tlv_stream, encode_tu


@pytest.fixture
def node(tmp_path):
    rpc = ScriptedRpc(str(tmp_path))
    plugin = PluginProcess(directory=str(tmp_path))
    yield plugin, rpc
    plugin.close()


def started(node, **options):
    plugin, rpc = node
    plugin.start(rpc, {"asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30, **options})
    return plugin, rpc


def test_manifest_declares_the_interface(node):
    plugin, rpc = node
    manifest, init = plugin.start(rpc)
    assert "error" not in init and not (init["result"] or {}).get("disable")
    options = {o["name"]: o for o in manifest["options"]}
    assert options["asyncln-poll-blocks"]["default"] == 6
    assert {"asyncln-max-hold-blocks", "asyncln-safety-blocks", "asyncln-relay",
            "asyncln-fee-base-msat", "asyncln-fee-ppm", "asyncln-max-held",
            "asyncln-max-held-msat"} <= set(options)
    methods = {m["name"]: m for m in manifest["rpcmethods"]}
    assert methods["asyncln-pay"]["usage"].startswith("invstring [trampoline] [maxfee_msat] [max_hold_blocks]")
    assert methods["asyncln-cancel"]["usage"].startswith("payment_hash ")
    for name in ("asyncln-listpays", "asyncln-listheld", "asyncln-poll", "asyncln-getinfo"):
        assert len(methods[name]["usage"]) > 20  # usage followed by its help text
    assert {h["name"] for h in manifest["hooks"]} == {"htlc_accepted", "custommsg"}
    custommsg = next(h for h in manifest["hooks"] if h["name"] == "custommsg")
    # others' messages never reach us; LSPS0's (37913) carry bLIP-55 webhook requests
    assert custommsg["filters"] == list(messages.MESSAGE_TYPES) + [37913]
    assert {"block_added", "connect", "sendpay_success", "sendpay_failure"} <= set(manifest["subscriptions"])
    assert has_feature(manifest["featurebits"]["init"]) and has_feature(manifest["featurebits"]["node"])
    assert int(manifest["featurebits"]["node"], 16) == 1 << FEATURE_BIT
    assert manifest["custommessages"] == list(messages.MESSAGE_TYPES) + [37913]
    assert manifest["dynamic"] is False


def test_bad_option_disables_the_plugin(node):
    plugin, rpc = node
    _, init = plugin.start(rpc, {"asyncln-poll-blocks": 0})
    assert "asyncln-poll-blocks must be at least 1" in init["result"]["disable"]


def test_pass_through_and_forwards_continue(node):
    plugin, _ = started(node)
    plain = htlc_params(PAYMENT_HASH, "0802020102040203e8", 258, 1500)
    assert plugin.request("htlc_accepted", plain)["result"] == {"result": "continue"}
    forward = htlc_params(PAYMENT_HASH, "00", 258, 1500)
    forward["onion"]["short_channel_id"] = "1x2x3"
    assert plugin.request("htlc_accepted", forward)["result"] == {"result": "continue"}


def test_malformed_record_fails_and_stores_nothing(node):
    plugin, rpc = started(node)
    bad = payload(record())[:-40] + bytes(40)
    answer = plugin.request("htlc_accepted", htlc_params(PAYMENT_HASH, bad.hex(), 110_000, 1500))
    assert answer["result"]["result"] == "fail"
    assert answer["result"]["failure_message"].startswith("4016")
    assert rpc.called("datastore") == []


def test_hold_notify_and_give_up(node):
    plugin, rpc = started(node)
    hook = plugin.send("htlc_accepted", htlc_params(PAYMENT_HASH, payload(record()).hex(),
                                                    110_000, 1500, peer_id=PAYER))
    assert plugin.answered(hook) is None  # held: lightningd keeps waiting
    held = plugin.request("asyncln-listheld", {})["result"]["held"]
    assert [h["state"] for h in held] == ["held"]
    assert held[0]["incoming_msat"] == 110_000 and held[0]["give_up_height"] == 1030
    wait_for(lambda: rpc.called("sendcustommsg"))
    stored = stored_held(rpc.datastore, PAYMENT_HASH)
    assert stored["state"] == "held"
    status = messages.decode(rpc.called("sendcustommsg")[-1]["msg"])
    assert rpc.called("sendcustommsg")[-1]["node_id"] == PAYER
    assert status.state == "held" and status.next_poll_height == 1006

    plugin.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1029}})
    assert plugin.answered(hook) is None
    plugin.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1030}})
    assert plugin.response(hook)["result"] == {"result": "fail", "failure_message": "2019"}  # gave up: #836 temporary_trampoline_failure
    assert stored_held(rpc.datastore, PAYMENT_HASH)["state"] == "failed"


def test_capability_query_is_answered(node):
    plugin, rpc = started(node, **{"asyncln-fee-ppm": 250})
    answer = plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(messages.QueryInfo())})
    assert answer["result"] == {"result": "continue"}
    wait_for(lambda: rpc.called("sendcustommsg"))
    info = messages.decode(rpc.called("sendcustommsg")[-1]["msg"])
    assert info.relay and info.fee_ppm == 250 and info.max_hold_blocks == 30


def test_truncated_custom_message_is_ignored(node):
    plugin, rpc = started(node)
    answer = plugin.request("custommsg", {"peer_id": PAYER, "payload": "ae9d00"})
    assert answer["result"] == {"result": "continue"}
    assert any("ignoring malformed asyncln message" in line for line in plugin.logs)
    assert rpc.called("sendcustommsg") == []


def test_restart_replay_resumes_from_the_datastore(tmp_path):
    rpc = ScriptedRpc(str(tmp_path))
    first = PluginProcess(directory=str(tmp_path))
    first.start(rpc, {"asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30})
    params = htlc_params(PAYMENT_HASH, payload(record()).hex(), 110_000, 1500, peer_id=PAYER)
    assert first.answered(first.send("htlc_accepted", params)) is None
    wait_for(lambda: stored_held(rpc.datastore, PAYMENT_HASH))
    first.close()  # kill -9: no goodbye

    second = PluginProcess(directory=str(tmp_path))
    try:
        second.start(rpc, {"asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30})
        held = second.request("asyncln-listheld", {})["result"]["held"]
        assert [h["hold_start"] for h in held] == [1000]
        hook = second.send("htlc_accepted", params)  # lightningd's replay
        assert second.answered(hook) is None
        second.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1030}})
        assert second.response(hook)["result"]["result"] == "fail"
    finally:
        second.close()


def test_rpc_errors_carry_codes(node):
    plugin, _ = started(node)
    error = plugin.request("asyncln-cancel", {"payment_hash": "00" * 32})["error"]
    assert error["code"] == 2101 and "no held payment" in error["message"]
    error = plugin.request("asyncln-pay", {"invstring": "lnbcrt1xyz"})
    assert error["error"]["code"] == 2123


def test_online_message_from_the_recipient_retries_at_once(node):
    plugin, rpc = started(node)
    hook = plugin.send("htlc_accepted", htlc_params(PAYMENT_HASH, payload(record()).hex(),
                                                    110_000, 1500, peer_id=PAYER))
    assert plugin.answered(hook) is None
    wait_for(lambda: rpc.called("getroutes"))
    tries = len(rpc.called("getroutes"))
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(messages.Online())})
    assert plugin.request("asyncln-listheld", {})["result"]["held"][0]["attempts"] == tries
    plugin.request("custommsg", {"peer_id": RECIPIENT, "payload": messages.encode(messages.Online())})
    wait_for(lambda: len(rpc.called("getroutes")) == tries + 1)
    assert rpc.called("getroutes")[-1]["destination"] == RECIPIENT


def test_internal_errors_still_answer_the_hook(node):
    plugin, rpc = started(node)
    broken = htlc_params(PAYMENT_HASH, payload(record()).hex(), 110_000, 1500)
    broken["htlc"]["id"] = "not a number"
    answer = plugin.request("htlc_accepted", broken)["result"]
    assert answer == {"result": "fail", "failure_message": "2002"}
    plain = htlc_params(PAYMENT_HASH, "0802020102040203e8", 258, 1500)
    plain["htlc"]["cltv_expiry"] = None
    assert plugin.request("htlc_accepted", plain)["result"] == {"result": "continue"}
    assert any("internal error on HTLC" in line for line in plugin.logs)


def test_unusable_route_answer_keeps_holding(node):
    plugin, rpc = started(node)
    rpc.handlers["getroutes"] = lambda params: {"routes": []}
    hook = plugin.send("htlc_accepted", htlc_params(PAYMENT_HASH, payload(record()).hex(), 110_000, 1500))
    assert plugin.answered(hook) is None
    wait_for(lambda: "unusable getroutes answer" in
             plugin.request("asyncln-listheld", {})["result"]["held"][0].get("last_error", ""))
    assert plugin.request("asyncln-listheld", {})["result"]["held"][0]["state"] == "held"



def test_a_slow_route_search_never_delays_other_htlcs(node):
    """The poll round's getroutes runs on the worker: hooks keep being answered."""
    plugin, rpc = started(node)
    release = threading.Event()

    def slow_getroutes(params):
        release.wait(20)
        raise RpcFailure(205, "Unknown destination")
    rpc.handlers["getroutes"] = slow_getroutes
    held = plugin.send("htlc_accepted", htlc_params(PAYMENT_HASH, payload(record()).hex(),
                                                    110_000, 1500, peer_id=PAYER))
    wait_for(lambda: rpc.called("getroutes"))
    plain = htlc_params("cd" * 32, "0802020102040203e8", 258, 1500, htlc_id=7)
    try:
        assert plugin.request("htlc_accepted", plain, timeout=5)["result"] == {"result": "continue"}
        plugin.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1001}})
        assert plugin.request("asyncln-listheld", {}, timeout=5)["result"]["held"][0]["state"] == "held"
    finally:
        release.set()
    assert plugin.answered(held) is None


def test_replay_with_a_changed_scid_is_recognised(tmp_path):
    """A zero-conf channel confirms while S is down: the replay names the real scid."""
    rpc = ScriptedRpc(str(tmp_path))
    first = PluginProcess(directory=str(tmp_path))
    first.start(rpc, {"asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30})
    params = htlc_params(PAYMENT_HASH, payload(record()).hex(), 110_000, 1500, peer_id=PAYER,
                         channel="1x0x0")  # an alias
    assert first.answered(first.send("htlc_accepted", params)) is None
    wait_for(lambda: stored_held(rpc.datastore, PAYMENT_HASH))
    first.close()

    second = PluginProcess(directory=str(tmp_path))
    try:
        second.start(rpc, {"asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30})
        replay = dict(params, htlc=dict(params["htlc"], short_channel_id="103x1x0"))
        hook = second.send("htlc_accepted", replay)
        assert second.answered(hook) is None  # held again, not refused
        other = htlc_params(PAYMENT_HASH, payload(record()).hex(), 110_000, 1500, peer_id=PAYER,
                            shared_secret="44" * 32, htlc_id=1)
        assert second.request("htlc_accepted", other)["result"]["result"] == "fail"
        second.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1030}})
        assert second.response(hook)["result"]["result"] == "fail"
    finally:
        second.close()


# --- issue 6: the Rod, payment codes and notes over stdio ------------------------------------

ROD = OTHER
ME = node_id(8)  # a real key: a payment code names only points on the curve
NEW_METHODS = {
    "asyncln-code": "[private]",
    "asyncln-fetchinvoice": "code amount_msat [note]",
    "asyncln-deposit": "[amount_msat] [count] [rod]",
    "asyncln-listnotes": "",
}


def test_new_methods_are_registered_with_usage(node):
    plugin, rpc = node
    manifest, _ = plugin.start(rpc)
    methods = {m["name"]: m for m in manifest["rpcmethods"]}
    for name, params in NEW_METHODS.items():
        usage, _, help_text = methods[name]["usage"].partition("\n")
        assert usage.strip() == params, name          # what `lightning-cli help` shows first
        assert len(help_text.strip()) > 20 and methods[name]["description"], name
    for name, method in methods.items():             # pyln's own arguments never leak out
        assert not {"plugin", "request"} & set(method["usage"].split("\n")[0].split()), name
    assert methods["asyncln-pay"]["usage"].startswith(
        "invstring [trampoline] [maxfee_msat] [max_hold_blocks] [amount_msat] [note]")


def test_new_options_are_in_the_manifest(node):
    plugin, rpc = node
    manifest, _ = plugin.start(rpc)
    options = {o["name"]: o for o in manifest["options"]}
    limits = rod.RodLimits()
    expected = {name: ("int", getattr(limits, field)) for name, (field, _) in rod.OPTIONS.items()}
    expected.update({"asyncln-rod-depositors": ("string", "peers"), "asyncln-rod": ("string", ""),
                     "asyncln-rod-pool": ("int", DEFAULT_POOL),
                     "asyncln-rod-invoice-expiry": ("int", DEFAULT_INVOICE_EXPIRY)})
    assert {"asyncln-rod-max-invoices", "asyncln-rod-max-bytes", "asyncln-rod-min-expiry",
            "asyncln-rod-fetches-per-hour", "asyncln-rod-max-notes"} <= set(expected)
    for name, (kind, default) in expected.items():
        assert (options[name]["type"], options[name]["default"]) == (kind, default), name
        assert len(options[name]["description"]) > 10, name


@pytest.mark.parametrize("options, named", [
    ({"asyncln-rod": "not-a-node"}, "asyncln-rod"),
    ({"asyncln-rod-pool": -1}, "asyncln-rod-pool"),
    ({"asyncln-rod-min-expiry": 10}, "asyncln-rod-min-expiry"),
    ({"asyncln-rod-depositors": "friends"}, "asyncln-rod-depositors"),
])
def test_a_bad_rod_option_disables_the_plugin(node, options, named):
    plugin, rpc = node
    _, init = plugin.start(rpc, options)
    assert named in init["result"]["disable"]


def test_fetchinvoice_with_a_malformed_code_is_a_bad_code(node):
    plugin, rpc = started(node)
    for code in ("aln1qqqq", "lnbcrt1xyz", ""):
        error = plugin.request("asyncln-fetchinvoice", {"code": code, "amount_msat": 1000})
        assert error["error"]["code"] == 2135, code
        assert "not a payment code" in error["error"]["message"]
    assert rpc.called("checkmessage") == []


def signed_code(rod_id=ROD):
    """B's code, signed by B's node key."""
    unsigned = codes.PaymentCode(RECIPIENT, (codes.Rod(rod_id),), note.note_public_key("5a" * 32))
    return dataclasses.replace(unsigned, signature=signmessage(
        RECIPIENT, unsigned.signed_message())).encode()


def crafted_code() -> str:
    """B's code with its signature's recovery byte set to 40: checkmessage would abort lightningd."""
    paycode = codes.PaymentCode.decode(signed_code())
    raw = bytearray(signature.decode(paycode.signature))
    raw[0] = 40
    return dataclasses.replace(paycode, signature=signature.encode(bytes(raw))).encode()


@pytest.mark.parametrize("method,params", [
    ("asyncln-fetchinvoice", {"amount_msat": 1000}),
    ("asyncln-pay", {"amount_msat": 1000, "trampoline": PAYER})])
def test_a_code_with_a_crafted_signature_is_a_bad_code_and_never_reaches_lightningd(
        node, method, params):
    plugin, rpc = started(node)
    key = "code" if method == "asyncln-fetchinvoice" else "invstring"
    error = plugin.request(method, {key: crafted_code(), **params})["error"]
    assert error["code"] == 2135, error
    assert rpc.called("checkmessage") == []


def scripted_b(rpc, bolt11="lnbcrt1fetched", amount_msat=None):
    """lightningd's answers for a payer that fetches B's invoice from ROD and pays it via PAYER."""
    decoded = {"type": "bolt11 invoice", "valid": True, "payee": RECIPIENT,
               "payment_hash": "cd" * 32, "payment_secret": "22" * 32,
               "created_at": int(time.time()), "expiry": 7 * 86_400,
               "min_final_cltv_expiry": 18, "description": codes.deposit_description(ROD)}
    if amount_msat is not None:
        decoded["amount_msat"] = amount_msat

    def decode(params):
        if params["string"] != bolt11:
            raise RpcFailure(-32602, "Invalid bolt11: Bad bech32 string")
        return decoded

    rpc.handlers.update({
        "listpeers": lambda p: {"peers": [
            {"id": ROD, "connected": True, "features": ""},
            {"id": PAYER, "connected": True, "features": feature_hex()}]},
        "decode": decode,
        "getroutes": lambda p: {"routes": [{"path": [{
            "node_id_out": p["destination"], "short_channel_id_dir": "103x1x0/0",
            "amount_out_msat": p["amount_msat"], "cltv_out": p["final_cltv"]}]}]},
        "createonion": lambda p: {"onion": "00" * 1366, "shared_secrets": ["33" * 32]},
        "sendonion": lambda p: {"status": "pending", "payment_hash": p["payment_hash"],
                                "partid": p["partid"]},
    })
    return decoded


def sent(rpc, kind):
    return [(p["node_id"], messages.decode(p["msg"])) for p in rpc.called("sendcustommsg")
            if isinstance(messages.decode(p["msg"]), kind)]


def answer_invoice_request(plugin, rpc, bolt11, sender=ROD):
    """Wait for the plugin's invoice_request to ROD, then answer it through the custommsg hook."""
    wait_for(lambda: sent(rpc, messages.InvoiceRequest))
    [(to, asked)] = sent(rpc, messages.InvoiceRequest)[-1:]
    assert to == ROD
    reply = messages.InvoiceResponse(asked.request_id, bolt11=bolt11)
    hook = plugin.request("custommsg", {"peer_id": sender, "payload": messages.encode(reply)})
    assert hook["result"] == {"result": "continue"}
    return asked


def test_fetchinvoice_waits_for_the_rod_on_its_own_thread(node):
    plugin, rpc = started(node)
    scripted_b(rpc)
    call = plugin.send("asyncln-fetchinvoice", {"code": signed_code(), "amount_msat": 50_000})
    wait_for(lambda: sent(rpc, messages.InvoiceRequest))
    # While it waits for ROD, the plugin answers other calls and hooks.
    assert plugin.request("asyncln-getinfo", {}, timeout=5)["result"]["version"]
    plain = htlc_params(PAYMENT_HASH, "0802020102040203e8", 258, 1500)
    assert plugin.request("htlc_accepted", plain, timeout=5)["result"] == {"result": "continue"}
    assert plugin.answered(call, wait=0.2) is None
    asked = answer_invoice_request(plugin, rpc, "lnbcrt1fetched")
    assert (asked.recipient, asked.amount_msat) == (RECIPIENT, 50_000)
    result = plugin.response(call)["result"]
    assert result["bolt11"] == "lnbcrt1fetched" and result["payment_hash"] == "cd" * 32
    assert (result["rod"], result["recipient"], result["note_sent"]) == (ROD, RECIPIENT, False)
    assert ("asyncln", "fetched", "cd" * 32) in rpc.datastore


def test_fetchinvoice_ignores_an_answer_from_another_peer(node):
    plugin, rpc = started(node)
    scripted_b(rpc)
    call = plugin.send("asyncln-fetchinvoice", {"code": signed_code(), "amount_msat": 50_000})
    answer_invoice_request(plugin, rpc, "lnbcrt1forged", sender=PAYER)
    assert plugin.answered(call, wait=0.3) is None          # still waiting for ROD
    answer_invoice_request(plugin, rpc, "lnbcrt1fetched")
    assert plugin.response(call)["result"]["bolt11"] == "lnbcrt1fetched"


def test_pay_still_pays_an_invoice_on_its_own_thread(node):
    plugin, rpc = started(node)
    scripted_b(rpc, amount_msat=50_000)
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(Policy())})
    result = plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched"})["result"]
    assert result["status"] == "pending" and result["payment_hash"] == "cd" * 32
    assert result["trampoline"] == PAYER and result["destination"] == RECIPIENT
    [onion] = rpc.called("sendonion")
    assert onion["first_hop"]["id"] == PAYER and onion["payment_hash"] == "cd" * 32
    listed = plugin.request("asyncln-listpays", {})["result"]["pays"]
    assert [p["payment_hash"] for p in listed] == ["cd" * 32]


def test_pay_a_code_fetches_then_pays_while_hooks_keep_flowing(node):
    plugin, rpc = started(node)
    scripted_b(rpc)
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(Policy())})
    call = plugin.send("asyncln-pay", {"invstring": signed_code(), "amount_msat": 50_000,
                                       "note": "for order #7"})
    answer_invoice_request(plugin, rpc, "lnbcrt1fetched")
    wait_for(lambda: sent(rpc, messages.Note))
    stored = messages.NoteAnswer("cd" * 32, True)  # note_sent only once the Rod says so
    plugin.request("custommsg", {"peer_id": ROD, "payload": messages.encode(stored)})
    result = plugin.response(call)["result"]
    assert result["status"] == "pending" and result["amount_msat"] == 50_000
    assert result["rod"] == ROD and result["note_sent"] is True
    [(to, sealed)] = sent(rpc, messages.Note)
    assert to == ROD and sealed.recipient == RECIPIENT and sealed.payment_hash == "cd" * 32
    assert note.open_note(bytes.fromhex(sealed.sealed), "5a" * 32, "cd" * 32) == "for order #7"
    assert len(rpc.called("sendonion")) == 1


@pytest.mark.parametrize("params, code", [
    ({"invstring": "aln1qqqq", "amount_msat": 1000}, 2135),          # a malformed code
    ({"invstring": "lnbcrt1fetched", "note": "hi"}, 2139),          # a note needs a code
    ({"invstring": "lnbcrt1fetched", "amount_msat": "lots"}, -32602),   # malformed: invalid params
    ({"invstring": "lnbcrt1fetched"}, 2121),                         # no trampoline known
])
def test_pay_errors_keep_their_codes_on_its_own_thread(node, params, code):
    plugin, rpc = started(node)
    scripted_b(rpc, amount_msat=50_000)
    rpc.handlers["listpeers"] = lambda p: {"peers": []}
    error = plugin.request("asyncln-pay", params)["error"]
    assert error["code"] == code, error
    assert rpc.called("sendonion") == []


def test_pay_a_code_without_amount_is_a_bad_parameter(node):
    plugin, rpc = started(node)
    scripted_b(rpc)
    error = plugin.request("asyncln-pay", {"invstring": signed_code()})["error"]
    assert error["code"] == 2113 and "amount_msat" in error["message"]
    assert sent(rpc, messages.InvoiceRequest) == []


def recipient_rpc(rpc):
    """B's lightningd: makes invoices, signs, and knows ROD is connected."""
    made = []

    def invoice(params):
        made.append(params)
        return {"bolt11": f"lnbcrt1b{len(made)}", "payment_hash": f"{len(made):064x}"}

    rpc.handlers.update({
        "getinfo": lambda p: {"id": ME, "blockheight": rpc.blockheight},
        "invoice": invoice,
        "makesecret": lambda p: {"secret": "5a" * 32},
        "signmessage": lambda p: {"zbase": "ybndrfg8ejkm", "signature": "00", "recid": "00"},
        "listnodes": lambda p: {"nodes": [{"nodeid": p["id"], "addresses": [
            {"type": "ipv4", "address": "10.0.0.7", "port": 9735}]}]},
        "listpeers": lambda p: {"peers": [{"id": ROD, "connected": True,
                                           "features": feature_hex()}]},
        "listinvoices": lambda p: {"invoices": [
            {"label": "asyncln-rod-1", "payment_hash": p.get("payment_hash"),
             "status": "paid"}]},
    })
    return made


def test_code_deposit_and_listnotes_as_the_recipient(node):
    plugin, rpc = node
    made = recipient_rpc(rpc)
    plugin.start(rpc, {"asyncln-rod": ROD, "asyncln-rod-pool": 2})
    out = plugin.request("asyncln-code", {})["result"]
    paycode = codes.PaymentCode.decode(out["code"])
    assert paycode.node_id == ME and paycode.rods == (codes.Rod(ROD, ("10.0.0.7:9735",)),)
    assert paycode.note_key == note.note_public_key("5a" * 32)
    assert rpc.called("signmessage")[-1]["message"] == paycode.signed_message()

    # At startup B asked ROD for its pool level; ROD answers: B tops up to asyncln-rod-pool.
    wait_for(lambda: sent(rpc, messages.Deposit))
    assert sent(rpc, messages.Deposit)[0] == (ROD, messages.Deposit(()))
    status = messages.PoolStatus(0, 0, 50, 86_400)
    plugin.request("custommsg", {"peer_id": ROD, "payload": messages.encode(status)})
    wait_for(lambda: len(sent(rpc, messages.Deposit)) == 2)
    assert sent(rpc, messages.Deposit)[1] == (ROD, messages.Deposit(("lnbcrt1b1", "lnbcrt1b2")))
    assert [p["amount_msat"] for p in made] == ["any", "any"]

    result = plugin.request("asyncln-deposit", {"amount_msat": 7000, "count": 1})["result"]
    assert result == {"rod": ROD, "deposited": 1} and made[-1]["amount_msat"] == 7000
    error = plugin.request("asyncln-deposit", {"rod": PAYER})["error"]
    assert error["code"] == 2113

    assert plugin.request("asyncln-listnotes", {})["result"] == {"notes": []}
    sealed = note.seal("thanks!", paycode.note_key, PAYMENT_HASH).hex()
    msg = messages.Note(ME, PAYMENT_HASH, sealed)
    plugin.request("custommsg", {"peer_id": ROD, "payload": messages.encode(msg)})
    wait_for(lambda: sent(rpc, messages.NoteAck))
    notes = plugin.request("asyncln-listnotes", {})["result"]["notes"]
    assert [(n["payment_hash"], n["note"], n["rod"], n["invoice_status"]) for n in notes] == [
        (PAYMENT_HASH, "thanks!", ROD, "paid")]


def test_code_without_a_rod_is_a_bad_parameter(node):
    plugin, rpc = started(node)
    error = plugin.request("asyncln-code", {})["error"]
    assert error["code"] == 2113 and "asyncln-rod" in error["message"]


@pytest.mark.parametrize("via_wrapper", [False, True])
def test_important_plugin_is_recognised_through_a_reckless_style_wrapper(tmp_path, via_wrapper):
    """reckless starts a wrapper that runs ``runpy.run_module("asyncln")``; lightningd names the wrapper."""
    from plugin_harness import ROOT
    wrapper = tmp_path / "asyncln.py"
    wrapper.write_text("import runpy, sys\n"   # what reckless's create_wrapper writes
                       f"sys.path.append({ROOT!r})\n"
                       f"if {str(tmp_path)!r} in sys.path:\n"
                       f"    sys.path.remove({str(tmp_path)!r})\n"
                       "runpy.run_module('asyncln', {}, '__main__')\n")
    started_as = str(wrapper) if via_wrapper else os.path.join(ROOT, "plugin.py")
    rpc = ScriptedRpc(str(tmp_path))
    rpc.handlers["listconfigs"] = lambda p: {
        "configs": {"important-plugin": {"values_str": [started_as]}}}
    plugin = PluginProcess(plugin=started_as, directory=str(tmp_path))
    try:
        plugin.start(rpc)
        info = plugin.request("asyncln-getinfo", {})["result"]
        assert info["important_plugin"] is True
        assert not any("important-plugin" in w for w in info.get("warnings", []))
    finally:
        plugin.close()


# What a refused call must not do (the worker's own start-up greetings may still run meanwhile).
CHANGES = ("sendonion", "sendpay", "invoice", "createonion", "deldatastore")
MALFORMED = [   # method, parameters, the parameter the error must name
    ("asyncln-pay", {"invstring": 12345}, "invstring"),
    ("asyncln-pay", {"invstring": "lnbcrt1fetched", "clear": "maybe"}, "clear"),
    ("asyncln-pay", {"invstring": "lnbcrt1fetched", "maxfee_msat": "5%"}, "maxfee_msat"),
    ("asyncln-pay", {"invstring": "lnbcrt1fetched", "max_hold_blocks": -3}, "max_hold_blocks"),
    ("asyncln-pay", {"invstring": "lnbcrt1fetched", "trampoline": "S"}, "trampoline"),
    ("asyncln-pay", {"invstring": "lnbcrt1fetched", "amount_msat": "1.5sat"}, "amount_msat"),
    ("asyncln-pay", {"invstring": "lnbcrt1fetched", "note": 7}, "note"),
    ("asyncln-pay", {"invstring": "lnbcrt1fetched", "bogus": 1}, "bogus"),
    ("asyncln-pay", {}, "invstring"),
    ("asyncln-fetchinvoice", {"code": "aln1qqqq", "amount_msat": "lots"}, "amount_msat"),
    ("asyncln-fetchinvoice", {"code": "aln1qqqq"}, "amount_msat"),
    ("asyncln-code", {"private": "maybe"}, "private"),
    ("asyncln-deposit", {"amount_msat": "x"}, "amount_msat"),
    ("asyncln-deposit", {"count": "two"}, "count"),
    ("asyncln-deposit", {"rod": "nobody"}, "rod"),
    ("asyncln-listpays", {"payment_hash": "xyz"}, "payment_hash"),
    ("asyncln-listheld", {"payment_hash": "nothex"}, "payment_hash"),
    ("asyncln-poll", {"payment_hash": "ab" * 31}, "payment_hash"),
    ("asyncln-cancel", {"payment_hash": 5}, "payment_hash"),
    ("asyncln-cancel", {}, "payment_hash"),
    ("asyncln-getinfo", {"verbose": True}, "verbose"),
    ("asyncln-listnotes", {"all": True}, "all"),
]


@pytest.mark.parametrize("method, bad, named", MALFORMED,
                         ids=[f"{m}-{'-'.join(p) or 'none'}" for m, p, _ in MALFORMED])
def test_a_malformed_parameter_is_invalid_params_without_a_traceback_and_changes_nothing(node, method, bad,
                                                                                         named):
    plugin, rpc = started(node)
    scripted_b(rpc, amount_msat=50_000)
    stored = {k for k in rpc.datastore if k[1] in ("pay", "heldpage", "fetched", "rod")}
    before = len(rpc.calls)
    error = plugin.request(method, bad)["error"]
    assert error["code"] == -32602, error
    assert set(error) == {"code", "message"}, error          # no pyln traceback field
    assert named in error["message"], error
    assert not [name for name, _ in rpc.calls[before:] if name in CHANGES]
    assert {k for k in rpc.datastore if k[1] in ("pay", "heldpage", "fetched", "rod")} == stored


def test_amounts_in_cln_forms_are_all_accepted(node):
    plugin, rpc = started(node)
    scripted_b(rpc, amount_msat=50_000)
    for fee in (10_000, "10000msat", "10sat", "0.0000001btc"):
        error = plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched", "maxfee_msat": fee})["error"]
        assert error["code"] == 2121, error     # past the parameters: no trampoline known


def test_a_paid_invoice_with_a_bad_parameter_is_still_invalid_params(node):
    """Form is checked before any state: a payment that exists does not hide a malformed parameter."""
    plugin, rpc = started(node)
    scripted_b(rpc, amount_msat=50_000)
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(Policy())})
    assert plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched"})["result"]["status"] == "pending"
    again = plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched"})["error"]
    assert again["code"] == 2124                               # well-formed: the payment exists
    for bad in ({"clear": "maybe"}, {"maxfee_msat": "lots"}, {"trampoline": "S"}):
        error = plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched", **bad})["error"]
        assert error["code"] == -32602, (bad, error)
    assert len(rpc.called("sendonion")) == 1


# --- issue 11: replays first; an internal error never fails an HTLC that has a record ---------

BROKEN_PEEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins", "broken_peel.py")


def test_a_replay_with_an_attempt_in_flight_survives_a_peel_that_raises(tmp_path):
    """S sent A's payment on to B, restarted, and its onion code now raises (cryptography 51):
    the replayed HTLC is answered from its record, never failed while the attempt may succeed."""
    rpc = ScriptedRpc(str(tmp_path))
    parts = []
    rpc.handlers.update({
        "listpeerchannels": lambda p: {"channels": [] if "id" in p else [{
            "channel_id": "cc" * 32, "short_channel_id": "103x1x0", "alias": {"local": "1x0x0"},
            "htlcs": [{"direction": "out", "payment_hash": PAYMENT_HASH}] if parts else []}]},
        "getroutes": lambda p: {"routes": [{"path": [{
            "node_id_out": p["destination"], "short_channel_id_dir": "105x1x0/0",
            "amount_out_msat": p["amount_msat"], "cltv_out": p["final_cltv"]}]}]},
        "createonion": lambda p: {"onion": "00" * 1366, "shared_secrets": ["33" * 32]},
        "sendonion": lambda p: parts.append(p) or {"status": "pending"},
        "listsendpays": lambda p: {"payments": [{"partid": q["partid"], "groupid": q["groupid"],
                                                 "status": "pending"} for q in parts]},
    })
    first = PluginProcess(directory=str(tmp_path))
    first.start(rpc, {"asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30})
    params = htlc_params(PAYMENT_HASH, payload(record()).hex(), 110_000, 1500, peer_id=PAYER)
    assert first.answered(first.send("htlc_accepted", params)) is None
    wait_for(lambda: (stored_held(rpc.datastore, PAYMENT_HASH) or {})
             .get("state") == "forwarding")
    first.close()  # kill -9 with the attempt in flight

    second = PluginProcess(BROKEN_PEEL, directory=str(tmp_path))
    try:
        second.start(rpc, {"asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30})
        hook = second.send("htlc_accepted", params)  # lightningd's replay
        assert second.answered(hook, wait=1.0) is None
        second.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1001}})
        assert second.answered(hook, wait=1.0) is None  # reconcile keeps it held too
        second.notify("sendpay_success", {"sendpay_success": {
            "payment_hash": PAYMENT_HASH, "payment_preimage": PREIMAGE}})
        assert second.response(hook)["result"] == {"result": "resolve", "payment_key": PREIMAGE}
        # A new HTLC, with no record, whose peeling raises is still failed.
        other = htlc_params("ee" * 32, payload(record()).hex(), 110_000, 1500, htlc_id=1)
        assert second.request("htlc_accepted", other)["result"]["result"] == "fail"
    finally:
        second.close()


def test_two_htlcs_with_one_onion_each_get_their_own_answer(node):
    """The issue's attack: a payer reuses one onion (one shared secret) for a second HTLC
    while the first's fail-back is decided but not yet delivered. Each HTLC is answered
    once, with its own answer."""
    plugin, rpc = started(node)
    rpc.handlers["listpeerchannels"] = lambda p: {"channels": [] if "id" in p else [{
        "channel_id": "cc" * 32, "short_channel_id": "103x1x0", "alias": {"local": "1x0x0"}}]}
    one = htlc_params(PAYMENT_HASH, payload(record()).hex(), 110_000, 1500, peer_id=PAYER)
    first = plugin.send("htlc_accepted", one)
    assert plugin.answered(first) is None
    wait_for(lambda: stored_held(rpc.datastore, PAYMENT_HASH))
    release, writing = threading.Event(), threading.Event()
    store = rpc.handlers["datastore"]

    def slow_datastore(params):  # the worker writes the failed record before it answers
        writing.set()
        release.wait(20)
        return store(params)
    rpc.handlers["datastore"] = slow_datastore
    cancel = plugin.send("asyncln-cancel", {"payment_hash": PAYMENT_HASH})
    wait_for(writing.is_set)  # the fail-back is decided, not yet delivered
    second = plugin.send("htlc_accepted", dict(one, htlc=dict(one["htlc"], id=1)))
    try:
        assert plugin.response(second, timeout=5)["result"]["result"] == "fail"
    finally:
        release.set()
    assert plugin.response(first)["result"] == {"result": "fail", "failure_message": "2019"}
    assert plugin.response(cancel)["result"]["state"] == "failed"
    assert plugin.answered(second) is None and plugin.answered(first) is None  # once each


# --- issue 11.6: the payer commits to the amount, B checks it -----------------------

DEPOSITED = "de" * 32      # one of B's deposited amountless invoices
DEPOSITED_LATER = f"{1:064x}"  # made by asyncln-deposit after startup (recipient_rpc)


def final_payload(amount_msat, blob=None):
    """B's final-hop payload as a holder delivers it: amount, CLTV, the payer's commitment."""
    fields = {2: encode_tu(amount_msat), 4: encode_tu(1100)}
    if blob is not None:
        fields[commitment.FINAL_TLV] = blob
    stream = encode_tlv_stream(fields)
    return (encode_bigsize(len(stream)) + stream).hex()


def record_fields(raw):
    """The clear record's fields (the harness's node id, its report_to, is not a curve point)."""
    return decode_tlv_stream(raw[1:], range(0, 18, 2))


def test_b_refuses_a_short_paid_htlc_for_a_deposited_amountless_invoice(node):
    plugin, rpc = node
    recipient_rpc(rpc)
    rpc.handlers["listinvoices"] = lambda p: {"invoices": [
        {"label": "asyncln-rod-01", "payment_hash": DEPOSITED, "status": "unpaid"},
        {"label": "asyncln-rod-02", "payment_hash": "df" * 32, "status": "unpaid",
         "amount_msat": 7000},                      # a fixed amount: lightningd checks it
        {"label": "mine", "payment_hash": PAYMENT_HASH, "status": "unpaid"}]}
    plugin.start(rpc, {"asyncln-rod": ROD})
    key = note.note_public_key("5a" * 32)           # B's note key, from its payment code
    honest = commitment.seal(100_000, key, DEPOSITED)

    def answer(payment_hash, amount_msat, blob):
        params = htlc_params(payment_hash, final_payload(amount_msat, blob), amount_msat, 1100)
        return plugin.request("htlc_accepted", params)["result"]

    refused = {"result": "fail", "failure_message": "400f" + f"{99_999:016x}" + f"{1000:08x}"}
    assert answer(DEPOSITED, 99_999, honest) == refused     # the holder kept 1 msat
    assert answer(DEPOSITED, 100_000, None)["result"] == "fail"  # no commitment
    assert answer(DEPOSITED, 1, commitment.seal(1, key, PAYMENT_HASH))["result"] == "fail"
    assert answer(DEPOSITED, 100_000, honest) == {"result": "continue"}
    assert answer(DEPOSITED, 100_001, honest) == {"result": "continue"}
    # B's other invoices are lightningd's business, as before.
    assert answer("df" * 32, 7000, None) == {"result": "continue"}
    assert answer(PAYMENT_HASH, 1, None) == {"result": "continue"}
    # An amountless invoice deposited after startup is checked from the moment it is made.
    assert answer(DEPOSITED_LATER, 1, None) == {"result": "continue"}
    plugin.request("asyncln-deposit", {"count": 1})
    assert answer(DEPOSITED_LATER, 1, None)["result"] == "fail"
    assert rpc.called("listinvoices") == [{}]  # once, at startup: never on the hook path


def test_the_payer_commits_to_the_amount_of_an_invoice_fetched_from_a_rod(node):
    """Fetched first, paid later by its bolt11: the code's note key was kept for it."""
    plugin, rpc = started(node)
    scripted_b(rpc)
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(Policy())})
    call = plugin.send("asyncln-fetchinvoice", {"code": signed_code(), "amount_msat": 50_000})
    answer_invoice_request(plugin, rpc, "lnbcrt1fetched")
    assert plugin.response(call)["result"]["payment_hash"] == "cd" * 32
    result = plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched",
                                            "amount_msat": 50_000})["result"]
    assert result["status"] == "pending"
    [made] = rpc.called("createonion")
    _, raw = find_record(bytes.fromhex(made["hops"][-1]["payload"]))
    blob = record_fields(raw)[16]  # version 1 here: the holder (PAYER) announced no onion key
    assert commitment.open_commitment(blob, "5a" * 32, "cd" * 32) == 50_000


def test_an_ordinary_invoice_carries_no_commitment(node):
    plugin, rpc = started(node)
    scripted_b(rpc, amount_msat=50_000)
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(Policy())})
    plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched"})
    [made] = rpc.called("createonion")
    _, raw = find_record(bytes.fromhex(made["hops"][-1]["payload"]))
    assert 16 not in record_fields(raw)


def test_a_usable_channel_to_my_rod_asks_it_for_my_pool_at_once(node):
    """Issue 12, item 7: channel_state_changed reaching CHANNELD_NORMAL with my Rod queries it."""
    plugin, rpc = node
    rpc.handlers["listpeers"] = lambda p: {"peers": [
        {"id": ROD, "connected": True, "features": feature_hex()}]}
    started(node, **{"asyncln-rod": ROD})
    wait_for(lambda: sent(rpc, messages.Deposit))  # at start, as when it connects: no answer
    for peer, state in ((ROD, "CHANNELD_AWAITING_LOCKIN"), (PAYER, "CHANNELD_NORMAL"),
                        (ROD, "CHANNELD_NORMAL")):
        plugin.notify("channel_state_changed", {"channel_state_changed": {
            "peer_id": peer, "channel_id": "11" * 32, "old_state": "DUALOPEND_AWAITING_LOCKIN",
            "new_state": state, "cause": "remote", "message": "", "timestamp": "1.0"}})
    wait_for(lambda: len(sent(rpc, messages.Deposit)) == 2)
    plugin.request("asyncln-getinfo", {})  # after every notification
    assert sent(rpc, messages.Deposit) == [(ROD, messages.Deposit(()))] * 2


def test_one_info_line_per_state_change_of_a_held_payment_and_a_malformed_call_logs_nothing(node):
    """Issue 12.3: the operator sees hold and give-up once each, with hash, amounts, next node,
    give-up height and reason, all tagged asyncln; retries are debug; a user's mistake is no traceback."""
    plugin, rpc = started(node)
    hook = plugin.send("htlc_accepted", htlc_params(PAYMENT_HASH, payload(record()).hex(),
                                                    110_000, 1500, peer_id=PAYER))
    wait_for(lambda: plugin.request("asyncln-listheld", {})["result"]["held"])
    give_up = plugin.request("asyncln-listheld", {})["result"]["held"][0]["give_up_height"]
    for height in (1006, 1012, give_up):           # two polls (retries), then the give-up
        plugin.notify("block_added", {"block_added": {"hash": "00" * 32, "height": height}})
    assert plugin.response(hook)["result"]["result"] == "fail"
    assert plugin.request("asyncln-listpays", {"payment_hash": "xyz"})["error"]["code"] == -32602
    plugin.request("asyncln-getinfo", {})
    info = [m for level, m in plugin.levels if level == "info" and PAYMENT_HASH in m]
    assert [m.split(": ")[2].split(",")[0] for m in info if "held payment" in m] == ["held", "failed"], info
    failed = next(m for m in info if ": failed," in m)
    assert all(word in failed for word in ("110000 msat in", RECIPIENT, f"gives up at block {give_up}",
                                           "reason:"))
    assert all(m.startswith("asyncln: ") for _, m in plugin.levels)
    assert not [m for _, m in plugin.levels if "Traceback" in m]


def test_getinfo_counts_a_hold_then_a_delivery(node):
    plugin, rpc = started(node)
    hook = plugin.send("htlc_accepted", htlc_params(PAYMENT_HASH, payload(record()).hex(),
                                                    110_000, 1500, peer_id=PAYER))
    assert plugin.answered(hook) is None
    wait_for(lambda: rpc.called("getroutes"))
    counters = plugin.request("asyncln-getinfo", {})["result"]["counters"]
    assert (counters["payments_held"], counters["payments_open"], counters["held_now_msat"]) == (1, 1, 110_000)

    rpc.handlers.update({
        "getroutes": lambda p: {"routes": [{"path": [{
            "node_id_out": p["destination"], "short_channel_id_dir": "105x1x0/0",
            "amount_out_msat": p["amount_msat"], "cltv_out": p["final_cltv"]}]}]},
        "createonion": lambda p: {"onion": "00" * 1366, "shared_secrets": ["33" * 32]},
        "sendonion": lambda p: {"status": "pending"},
    })
    plugin.request("custommsg", {"peer_id": RECIPIENT, "payload": messages.encode(messages.Online())})
    wait_for(lambda: rpc.called("sendonion"))
    plugin.notify("sendpay_success", {"sendpay_success": {
        "payment_hash": PAYMENT_HASH, "payment_preimage": PREIMAGE}})
    assert plugin.response(hook)["result"] == {"result": "resolve", "payment_key": PREIMAGE}
    counters = plugin.request("asyncln-getinfo", {})["result"]["counters"]
    latency = counters.pop("wake_to_paid")
    assert latency["deliveries"] == 1 and 0 <= latency["median_seconds"] == latency["p90_seconds"] < 10
    assert counters == {
        "payments_held": 1, "payments_open": 0, "payments_delivered": 1, "payments_failed_back": 0,
        "failed_back_by_reason": {"recipient_offline": 0, "cancelled": 0, "refused_by_recipient": 0,
                                  "next_holder_failed": 0, "other": 0},
        "held_now_msat": 0, "fees_earned_msat": 10_000,
        "rod_invoices_served": 0, "rod_notes_kept": 0}


def fee_scripted(rpc, estimate_fee=300):
    """scripted_b, with the holder (PAYER) 300msat of routing away from RECIPIENT in our gossip."""
    scripted_b(rpc, amount_msat=50_000)
    direct = rpc.handlers["getroutes"]

    def getroutes(params):
        if params["source"] != PAYER:
            return direct(params)
        return {"routes": [{"path": [
            {"node_id_out": OTHER, "short_channel_id_dir": "104x1x0/0",
             "amount_out_msat": params["amount_msat"] + estimate_fee, "cltv_out": 58},
            {"node_id_out": params["destination"], "short_channel_id_dir": "105x1x0/1",
             "amount_out_msat": params["amount_msat"], "cltv_out": 18}]}]}
    rpc.handlers.update({
        "getroutes": getroutes,
        "listchannels": lambda p: {"channels": [{"short_channel_id": "105x1x0", "direction": 1,
                                                 "source": OTHER, "destination": RECIPIENT}]},
        "askrene-create-layer": lambda p: {"layers": []},
        "askrene-remove-layer": lambda p: {},
        "askrene-update-channel": lambda p: {},
    })


def test_pay_sends_the_holders_fee_and_its_estimated_route_not_the_whole_cap(node):
    plugin, rpc = started(node)
    fee_scripted(rpc)
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(Policy())})
    result = plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched"})["result"]
    # 1,050 for the holder, 300 its route costs in our gossip, 100 + 30 of margin: not 5,000.
    assert result["amount_sent_msat"] == 50_000 + 1050 + 300 + 100 + 30
    [estimate] = [p for p in rpc.called("getroutes") if p["source"] == PAYER]
    assert estimate["destination"] == RECIPIENT and estimate["amount_msat"] == 50_000
    layer = f"asyncln-estimate-{'cd' * 32}"
    assert layer in estimate["layers"] and "auto.sourcefree" in estimate["layers"]
    # The recipient's channel, disabled in gossip while it is offline, counts as enabled.
    assert {"layer": layer, "short_channel_id_dir": "105x1x0/1", "enabled": True} in \
        rpc.called("askrene-update-channel")
    assert {"layer": layer} in rpc.called("askrene-remove-layer")[1:]


def terms_refusal(partid, terms):
    return {"sendpay_failure": {"code": 204, "message": "failed: WIRE_UNKNOWN (reply from remote)",
                                "data": {"payment_hash": "cd" * 32, "partid": partid, "groupid": partid,
                                         "failcode": 0x201a, "erring_index": 1,
                                         "raw_message": terms}}}


def test_a_holders_refusal_with_new_terms_is_paid_again_once_within_the_cap(node):
    from asyncln import chain, failures
    plugin, rpc = started(node)
    fee_scripted(rpc, estimate_fee=0)
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(Policy())})
    first = plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched"})["result"]
    assert first["amount_sent_msat"] == 50_000 + 1050 + 100
    rpc.handlers["listsendpays"] = lambda p: {"payments": [
        {"partid": 1, "groupid": 1, "status": "failed"}] * len(rpc.called("sendonion"))}
    # The CLTV an honest holder asks for this hold (1,297 + 18 above the 1,314 planned);
    # a holder asking more gets no more (tests/test_fees.py).
    delta = chain.refusal_terms(Policy(), first["max_hold_blocks"])["cltv_expiry_delta"]
    terms = failures.trampoline_fee_or_expiry_insufficient(2000, 1000, delta)
    plugin.notify("sendpay_failure", terms_refusal(1, terms))
    wait_for(lambda: len(rpc.called("sendonion")) == 2)
    again = rpc.called("sendonion")[1]
    assert again["first_hop"]["amount_msat"] == 50_000 + 2050 + 100
    assert again["first_hop"]["delay"] == delta + 18 == 1315  # the CLTV it asked for
    wait_for(lambda: plugin.request("asyncln-listpays", {})["result"]["pays"][0]["status"]
             == "pending")
    # The same terms again: no loop, the payment stays failed with the holder's reason.
    plugin.notify("sendpay_failure", terms_refusal(2, terms))
    wait_for(lambda: plugin.request("asyncln-listpays", {})["result"]["pays"][0]["status"]
             == "failed")
    assert len(rpc.called("sendonion")) == 2
    [pay] = plugin.request("asyncln-listpays", {})["result"]["pays"]
    assert "more fee or CLTV" in pay["reason"] and pay["terms_retries"] == 1


def test_a_holders_refusal_with_terms_above_the_cap_is_not_paid_again(node):
    from asyncln import failures
    plugin, rpc = started(node)
    fee_scripted(rpc, estimate_fee=0)
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(Policy())})
    plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched", "maxfee_msat": 3000})
    dear = failures.trampoline_fee_or_expiry_insufficient(3000, 1000, 1400)  # 3,050 > 3,000
    plugin.notify("sendpay_failure", terms_refusal(1, dear))
    wait_for(lambda: plugin.request("asyncln-listpays", {}) and any(  # reading pumps the logs
        "not paid again with the new terms" in line and "maxfee_msat" in line
        for line in plugin.logs))
    assert len(rpc.called("sendonion")) == 1
    [pay] = plugin.request("asyncln-listpays", {})["result"]["pays"]
    assert pay["status"] == "failed" and "more fee or CLTV" in pay["reason"]


def test_a_route_dearer_than_the_payer_left_is_priced_and_quoted_to_the_payer(node):
    """S's budgeted search finds nothing within the fee: a second search prices the route,
    and the HTLC fails back with #836's terms quoting it, for the payer to retry with."""
    plugin, rpc = started(node)
    from asyncln import failures

    def getroutes(params):
        if params["maxfee_msat"] < 2000:
            raise RpcFailure(206, "Could not find route without excessive cost")
        return {"routes": [{"path": [
            {"node_id_out": OTHER, "short_channel_id_dir": "104x1x0/0", "node_id_in": node_id(1),
             "amount_out_msat": params["amount_msat"] + 2000, "cltv_out": 58},
            {"node_id_out": params["destination"], "short_channel_id_dir": "105x1x0/1",
             "amount_out_msat": params["amount_msat"], "cltv_out": 18}]}]}
    rpc.handlers["getroutes"] = getroutes
    # 101,300 in: our fee 1,100 on 100,000, 200 left for a route that costs 2,000.
    hook = plugin.send("htlc_accepted", htlc_params(PAYMENT_HASH, payload(record(), 101_300).hex(),
                                                    101_300, 1500, peer_id=PAYER))
    answer = plugin.response(hook)["result"]
    assert [p["maxfee_msat"] for p in rpc.called("getroutes")] == [200, 100_000]
    assert answer["result"] == "fail"
    assert answer["failure_message"] == failures.trampoline_fee_or_expiry_insufficient(
        1000 + 2000, 1000, 30 - 1 + 2 + 144 + 6)
    assert not rpc.called("sendonion") and not rpc.called("sendpay")


def test_a_private_recipients_hints_go_into_the_estimate_and_no_route_means_the_default(node):
    """B's channel is not in our gossip: its invoice's hint joins the estimate's layer.
    With no route all the same, S gets the documented default (1000msat + 0.2%), not the cap."""
    plugin, rpc = started(node)
    fee_scripted(rpc)
    decoded = rpc.handlers["decode"]({"string": "lnbcrt1fetched"})
    decoded["routes"] = [[{"pubkey": OTHER, "short_channel_id": "106x1x0", "fee_base_msat": 7,
                           "fee_proportional_millionths": 8, "cltv_expiry_delta": 9}]]
    rpc.handlers["decode"] = lambda p: decoded
    rpc.handlers["listchannels"] = lambda p: {"channels": []}
    rpc.handlers["askrene-create-channel"] = lambda p: {}
    direct = rpc.handlers["getroutes"]

    def getroutes(params):
        if params["source"] == PAYER:
            raise RpcFailure(205, "Unknown destination")
        return direct(params)
    rpc.handlers["getroutes"] = getroutes
    plugin.request("custommsg", {"peer_id": PAYER, "payload": messages.encode(Policy())})
    result = plugin.request("asyncln-pay", {"invstring": "lnbcrt1fetched"})["result"]
    assert result["amount_sent_msat"] == 50_000 + 1050 + 1000 + 100
    [hinted] = rpc.called("askrene-create-channel")
    assert hinted["layer"] == f"asyncln-estimate-{'cd' * 32}"
    assert (hinted["source"], hinted["destination"], hinted["short_channel_id"]) == \
        (OTHER, RECIPIENT, "106x1x0")
