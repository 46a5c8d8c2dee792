"""bLIP-55 webhooks through plugin.py over stdio: the LSP side (37913 in, datastore, answer)
and the client side (asyncln-webhook and friends), with a scripted RPC socket."""

import http.server
import json
import threading

import pytest
from factories import OTHER, PAYER, PAYMENT_HASH, RECIPIENT, payload, record
from plugin_harness import PluginProcess, RpcFailure, ScriptedRpc, htlc_params, wait_for

from asyncln import lsps0
from asyncln.lsps_shell import offered_timeouts

CLIENT, STRANGER, LSP = RECIPIENT, PAYER, OTHER
URL = "https://push.example.org/hook?t=abc"


@pytest.fixture
def rpc(tmp_path):
    return ScriptedRpc(str(tmp_path))


@pytest.fixture
def starting(tmp_path, rpc):
    """Start plugin.py with options; CLIENT is a channel peer."""
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


def test_the_registry_is_loaded_at_startup_and_a_corrupt_record_skipped(starting, rpc):
    record_of = {"webhooks": [{"app_name": "w", "url": URL, "created_at": 1.0}], "last_active": 1.0}
    rpc.datastore[("asyncln", "lsps5", CLIENT)] = json.dumps(record_of)
    rpc.datastore[("asyncln", "lsps5", STRANGER)] = json.dumps({"webhooks": "not a list"})
    plugin, rpc = starting()
    assert ask(plugin, rpc, CLIENT, "lsps5.list_webhooks", {}, "l1").result["app_names"] == ["w"]
    assert ask(plugin, rpc, STRANGER, "lsps5.list_webhooks", {}, "l2").result["app_names"] == []
    assert any(f"unreadable lsps5 record {STRANGER}" in line for line in plugin.logs)


def test_a_change_that_cannot_be_stored_is_not_reported_as_done(node):
    plugin, rpc = node

    def refuse(params):
        raise RpcFailure(-1, "database is locked")
    rpc.handlers["datastore"] = refuse
    answer = ask(plugin, rpc, CLIENT, "lsps5.set_webhook", {"app_name": "w", "webhook": URL}, "f1")
    assert answer.error["code"] == -32603
    assert ask(plugin, rpc, CLIENT, "lsps5.list_webhooks", {}, "f2").result["app_names"] == []


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


@pytest.fixture
def server():
    """A loopback webhook that records each POST's method and params."""
    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            self.server.posts.append((body["method"], body["params"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    httpd.posts = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()


def test_a_held_payment_and_an_expiring_htlc_wake_an_away_client(starting, server):
    plugin, rpc = starting(**{"asyncln-webhook-allow-http-loopback": True,
                              "asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30})
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    ask(plugin, rpc, CLIENT, "lsps5.set_webhook", {"app_name": "w", "webhook": url}, "h1")
    wait_for(lambda: server.posts == [("lsps5.webhook_registered", {})])
    hook_call = plugin.send("htlc_accepted", htlc_params(PAYMENT_HASH, payload(record()).hex(),
                                                         110_000, 1500, peer_id=PAYER))
    assert plugin.answered(hook_call) is None                     # held for CLIENT (RECIPIENT)
    wait_for(lambda: ("lsps5.payment_incoming", {}) in server.posts)
    rpc.handlers["listpeerchannels"] = lambda p: {"channels": [
        {"peer_id": CLIENT, "state": "CHANNELD_NORMAL", "channel_id": "11" * 32,
         "htlcs": [{"direction": "out", "expiry": 1020, "payment_hash": "ee" * 32}]}]}
    plugin.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1001}})
    wait_for(lambda: ("lsps5.expiry_soon", {"timeout": 1021}) in server.posts)
    assert server.posts.count(("lsps5.payment_incoming", {})) == 1   # within the cooldown


def test_nothing_is_posted_while_the_client_is_connected(starting, server):
    plugin, rpc = starting(**{"asyncln-webhook-allow-http-loopback": True})
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    ask(plugin, rpc, CLIENT, "lsps5.set_webhook", {"app_name": "w", "webhook": url}, "c1")
    plugin.notify("connect", {"connect": {"id": CLIENT, "direction": "in", "address": {}}})
    hook_call = plugin.send("htlc_accepted", htlc_params(PAYMENT_HASH, payload(record()).hex(),
                                                         110_000, 1500, peer_id=PAYER))
    assert plugin.answered(hook_call) is None
    # S told the payer it holds: its Persist (which would queue the POST) ran before that.
    wait_for(lambda: any(p["node_id"] == PAYER for p in rpc.called("sendcustommsg")))
    wait_for(lambda: server.posts == [("lsps5.webhook_registered", {})])
    plugin.request("asyncln-getinfo", {})
    assert not [line for line in plugin.logs if "webhook lsps5.payment_incoming" in line]
    plugin.notify("disconnect", {"disconnect": {"id": CLIENT}})
    plugin.notify("block_added", {"block_added": {"hash": "00" * 32, "height": 1002}})
    wait_for(lambda: ("lsps5.payment_incoming", {}) in server.posts)
