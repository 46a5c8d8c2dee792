"""plugin.py over its stdio JSON-RPC protocol, with a scripted RPC socket."""

import json
import threading

import pytest
from factories import PAYER, PAYMENT_HASH, RECIPIENT, payload, record
from plugin_harness import PluginProcess, RpcFailure, ScriptedRpc, htlc_params, wait_for

from asyncln import messages
from asyncln.features import FEATURE_BIT, has_feature


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
    assert custommsg["filters"] == list(messages.MESSAGE_TYPES)  # others' messages never reach us
    assert {"block_added", "connect", "sendpay_success", "sendpay_failure"} <= set(manifest["subscriptions"])
    assert has_feature(manifest["featurebits"]["init"]) and has_feature(manifest["featurebits"]["node"])
    assert int(manifest["featurebits"]["node"], 16) == 1 << FEATURE_BIT
    assert manifest["custommessages"] == list(messages.MESSAGE_TYPES)
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
    stored = json.loads(rpc.datastore[("asyncln", "held", PAYMENT_HASH)])
    assert stored["state"] == "held"
    status = messages.decode(rpc.called("sendcustommsg")[-1]["msg"])
    assert rpc.called("sendcustommsg")[-1]["node_id"] == PAYER
    assert status.state == "held" and status.next_poll_height == 1006

    plugin.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1029}})
    assert plugin.answered(hook) is None
    plugin.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1030}})
    assert plugin.response(hook)["result"] == {"result": "fail", "failure_message": "2002"}
    assert json.loads(rpc.datastore[("asyncln", "held", PAYMENT_HASH)])["state"] == "failed"


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
    wait_for(lambda: ("asyncln", "held", PAYMENT_HASH) in rpc.datastore)
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
    wait_for(lambda: ("asyncln", "held", PAYMENT_HASH) in rpc.datastore)
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
