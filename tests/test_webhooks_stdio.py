"""bLIP-55 webhooks through plugin.py over stdio: the LSP side (37913 in, datastore, answer)
and the client side (asyncln-webhook and friends), with a scripted RPC socket."""

import json

import pytest
from factories import OTHER, PAYER, RECIPIENT
from plugin_harness import PluginProcess, ScriptedRpc, wait_for

from asyncln import lsps0
from asyncln.lsps_shell import offered_timeouts

CLIENT, STRANGER, LSP = RECIPIENT, PAYER, OTHER
URL = "https://push.example.org/hook?t=abc"


@pytest.fixture
def starting(tmp_path):
    """Start plugin.py with options; CLIENT is a channel peer."""
    rpc = ScriptedRpc(str(tmp_path))
    rpc.handlers["listpeerchannels"] = lambda p: {"channels": [
        {"peer_id": CLIENT, "state": "CHANNELD_NORMAL", "channel_id": "11" * 32}]
        if p.get("id") in (None, CLIENT) else []}
    plugin = PluginProcess(directory=str(tmp_path))
    yield lambda **options: (plugin.start(rpc, options), (plugin, rpc))[1]
    plugin.close()


@pytest.fixture
def node(starting):
    return starting()


def hook(plugin, peer, msg):
    payload = msg if isinstance(msg, str) else lsps0.encode(msg)
    answer = plugin.request("custommsg", {"peer_id": peer, "payload": payload})
    assert answer["result"] == {"result": "continue"}  # always: another plugin may want it


def answers(rpc, peer):
    return [lsps0.decode(p["msg"]) for p in rpc.called("sendcustommsg") if p["node_id"] == peer]


def ask(plugin, rpc, peer, method, params, request_id):
    hook(plugin, peer, lsps0.Request(request_id, method, params))
    wait_for(lambda: any(a.id == request_id for a in answers(rpc, peer)))
    return next(a for a in answers(rpc, peer) if a.id == request_id)


def test_a_channel_peer_registers_and_it_is_stored_before_the_answer(node):
    plugin, rpc = node
    answer = ask(plugin, rpc, CLIENT, "lsps5.set_webhook", {"app_name": "w", "webhook": URL}, "r1")
    assert answer.result == {"num_webhooks": 1, "max_webhooks": 10, "no_change": False}
    stored = rpc.datastore[("asyncln", "lsps5", CLIENT)]
    assert json.loads(stored)["webhooks"][0]["url"] == URL
    methods = [m for m, p in rpc.calls if m == "datastore" and p["key"][1] == "lsps5"
               or m == "sendcustommsg" and p["node_id"] == CLIENT]
    assert methods[:2] == ["datastore", "sendcustommsg"]
    assert ask(plugin, rpc, CLIENT, "lsps5.list_webhooks", {}, "r2").result == {
        "app_names": ["w"], "max_webhooks": 10}
    assert ask(plugin, rpc, CLIENT, "lsps5.remove_webhook", {"app_name": "w"}, "r3").result == {}
    assert ("asyncln", "lsps5", CLIENT) not in rpc.datastore


def test_refusals_carry_blip55_codes_and_store_nothing(node):
    plugin, rpc = node
    stranger = ask(plugin, rpc, STRANGER, "lsps5.set_webhook", {"app_name": "w", "webhook": URL}, "s1")
    assert stranger.error["code"] == 1003
    http = ask(plugin, rpc, CLIENT, "lsps5.set_webhook",
               {"app_name": "w", "webhook": "http://push.example.org/"}, "s2")
    assert http.error["code"] == 502
    loopback = ask(plugin, rpc, CLIENT, "lsps5.set_webhook",
                   {"app_name": "w", "webhook": "https://127.0.0.1/"}, "s3")
    assert loopback.error["code"] == 502       # without asyncln-webhook-allow-http-loopback
    missing = ask(plugin, rpc, CLIENT, "lsps5.remove_webhook", {"app_name": "w"}, "s4")
    assert missing.error["code"] == 1010
    assert not [k for k in rpc.datastore if k[1] == "lsps5"]


def test_others_methods_are_left_alone_and_bad_messages_get_a_parse_error(node):
    plugin, rpc = node
    hook(plugin, CLIENT, lsps0.Request("o1", "lsps2.get_info", {}))   # CLN's lsps-plugin's
    hook(plugin, CLIENT, lsps0.Response("o2", result={}))             # an answer not ours
    hook(plugin, CLIENT, "9419" + b"{not json".hex())
    wait_for(lambda: answers(rpc, CLIENT))
    assert ask(plugin, rpc, CLIENT, "lsps0.list_protocols", {}, "o3").result == {"protocols": [5]}
    [bad, listed] = answers(rpc, CLIENT)
    assert bad.id is None and bad.error["code"] == -32700 and listed.id == "o3"
    assert not [m for level, m in plugin.levels if level == "info" and "unasked-for" in m]


def sent_request(rpc, peer):
    wait_for(lambda: answers(rpc, peer))
    return answers(rpc, peer)[-1]


def test_asyncln_webhook_waits_for_the_answer_with_its_id(node):
    plugin, rpc = node
    call = plugin.send("asyncln-webhook", {"peer": LSP, "url": URL})
    request = sent_request(rpc, LSP)
    assert request.method == "lsps5.set_webhook"
    assert request.params == {"app_name": "asyncln", "webhook": URL} and len(request.id) == 32
    hook(plugin, STRANGER, lsps0.Response(request.id, result={"forged": True}))  # not the LSP
    hook(plugin, LSP, lsps0.Response("another id", result={"stale": True}))
    assert plugin.answered(call, wait=0.3) is None
    hook(plugin, LSP, lsps0.Response(request.id, result={"num_webhooks": 1, "max_webhooks": 10,
                                                        "no_change": False}))
    assert plugin.response(call)["result"]["num_webhooks"] == 1


def test_an_lsps_refusal_is_2141_with_its_code(node):
    plugin, rpc = node
    call = plugin.send("asyncln-delwebhook", {"peer": LSP, "app_name": "gone"})
    request = sent_request(rpc, LSP)
    assert (request.method, request.params) == ("lsps5.remove_webhook", {"app_name": "gone"})
    hook(plugin, LSP, lsps0.error(request.id, 1010, "App name not found\x1b[31m"))
    error = plugin.response(call)["error"]
    assert error["code"] == 2141 and "1010" in error["message"] and "\x1b" not in error["message"]


def test_with_the_service_off_requests_are_left_to_others(starting):
    plugin, rpc = starting(**{"asyncln-lsps5-service": False})
    hook(plugin, CLIENT, lsps0.Request("x1", "lsps5.set_webhook", {"app_name": "w", "webhook": URL}))
    hook(plugin, CLIENT, lsps0.Request("x2", "lsps0.list_protocols", {}))
    assert plugin.request("asyncln-getinfo", {})["result"]["webhooks"]["service"] is False
    assert not answers(rpc, CLIENT) and not [k for k in rpc.datastore if k[1] == "lsps5"]


def test_an_hsm_secret_that_is_not_this_nodes_key_is_not_used(starting, tmp_path):
    (tmp_path / "hsm_secret").write_bytes(bytes(range(1, 33)))
    plugin, _ = starting(**{"asyncln-webhook-hsm-secret": True})
    info = plugin.request("asyncln-getinfo", {})["result"]
    assert info["webhooks"]["signer"] == "signmessage"
    assert any("its key is not this node's id" in w for w in info["warnings"])


def test_signmessage_signing_is_warned_about_once_a_client_registers(node):
    plugin, rpc = node
    assert not any("webhook" in w for w in plugin.request("asyncln-getinfo", {})["result"]["warnings"])
    ask(plugin, rpc, CLIENT, "lsps5.set_webhook", {"app_name": "w", "webhook": URL}, "w1")
    warnings = plugin.request("asyncln-getinfo", {})["result"]["warnings"]
    assert any("signed with signmessage" in w for w in warnings)


def test_expiry_soon_counts_only_htlcs_we_offered_an_away_client():
    channels = [
        {"peer_id": CLIENT, "htlcs": [{"direction": "out", "expiry": 130},
                                      {"direction": "out", "expiry": 120},
                                      {"direction": "in", "expiry": 101}]},
        {"peer_id": CLIENT, "htlcs": [{"direction": "out", "expiry": 125}]},
        {"peer_id": STRANGER, "htlcs": [{"direction": "out", "expiry": 100}]},
        {"peer_id": LSP, "htlcs": []},
    ]
    assert offered_timeouts(channels, {CLIENT, LSP}) == {CLIENT: 121}


MALFORMED = [
    ("asyncln-webhook", {"peer": "nobody", "url": URL}, "peer"),
    ("asyncln-webhook", {"peer": LSP, "url": 5}, "url"),
    ("asyncln-webhook", {"peer": LSP}, "url"),
    ("asyncln-webhook", {"peer": LSP, "url": URL, "app_name": ["x"]}, "app_name"),
    ("asyncln-listwebhooks", {}, "peer"),
    ("asyncln-listwebhooks", {"peer": "02zz"}, "peer"),
    ("asyncln-delwebhook", {"peer": LSP}, "app_name"),
    ("asyncln-delwebhook", {"peer": LSP, "app_name": 7}, "app_name"),
]


@pytest.mark.parametrize("method, bad, named", MALFORMED,
                         ids=[f"{m}-{'-'.join(p) or 'none'}" for m, p, _ in MALFORMED])
def test_a_malformed_parameter_is_invalid_params_and_sends_nothing(node, method, bad, named):
    plugin, rpc = node
    error = plugin.request(method, bad)["error"]
    assert error["code"] == -32602 and named in error["message"], error
    assert set(error) == {"code", "message"}
    assert not rpc.called("sendcustommsg")


def test_the_new_methods_have_usage_and_help(node):
    plugin, _ = node
    manifest = plugin.request("getmanifest", {"allow-deprecated-apis": False})["result"]
    methods = {m["name"]: m["usage"] for m in manifest["rpcmethods"]}
    assert methods["asyncln-webhook"].startswith("peer url [app_name]")
    assert methods["asyncln-listwebhooks"].startswith("peer")
    assert methods["asyncln-delwebhook"].startswith("peer app_name")
    options = {o["name"]: o for o in manifest["options"]}
    assert options["asyncln-webhook-allow-http-loopback"]["default"] is False
