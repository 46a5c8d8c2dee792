"""bLIP-55 webhooks on real lightningd: B registers at S, goes away, A pays, S POSTs a signed
lsps5.payment_incoming to the test's HTTP server; slow and failing webhooks never hold up the
payment; bLIP-55's refusals (not https, too many webhooks) reach B's RPC."""

import http.server
import json
import re
import threading
import time

import pytest
from helpers import assert_proof_of_payment, call, held, opts, wait_for_terms, wait_status
from pyln.client import RpcError
from pyln.testing.utils import wait_for

from asyncln import lsps5

SLOW_SECONDS = 6   # past the sender's 5 s timeout


class Hook(http.server.BaseHTTPRequestHandler):
    """/ok answers 200, /fail 500, /slow 200 after SLOW_SECONDS; every POST is recorded."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.posts.append((self.path.split("?")[0], headers, body, time.time()))
        if self.path.startswith("/slow"):
            time.sleep(SLOW_SECONDS)
        self.send_response(500 if self.path.startswith("/fail") else 200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hooks():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    server.daemon_threads = True
    server.posts = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.url = lambda path: f"http://127.0.0.1:{server.server_address[1]}{path}?token=b"
    yield server
    server.shutdown()


def posts(server, path, method):
    return [p for p in server.posts if p[0] == path and json.loads(p[2])["method"] == method]


def signed_by(lsp_id, post):
    """A delivery service's check: bLIP-55's message (escapes processed), signed by S's node key.

    Not lightningd's checkmessage: like its signmessage, it works on the JSON-escaped text.
    """
    _, headers, body, _ = post
    assert headers["content-type"] == "application/json"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", headers["x-lsps5-timestamp"])
    return lsps5.verify(lsp_id, headers["x-lsps5-timestamp"], body, headers["x-lsps5-signature"])


def pay_while_away(a, s, b, label):
    """B goes away (S sees it go), A pays through S; returns the invoice once S holds."""
    inv = b.rpc.invoice(100_000, label, "webhook test")
    b.stop()
    wait_for(lambda: not s.rpc.listpeers(b.info["id"])["peers"][0]["connected"])
    call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
    wait_for(lambda: (held(s, inv["payment_hash"]) or {}).get("state") == "held")
    return inv, time.time()


def back_and_paid(a, s, b, inv):
    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))


def test_webhooks_wake_b_and_never_hold_up_its_payment(node_factory, plugin_path, hooks):
    a, s, b = node_factory.line_graph(3, opts=[
        opts(plugin_path), opts(plugin_path, **{"asyncln-webhook-allow-http-loopback": True,
                                                "asyncln-webhook-hsm-secret": True}),
        opts(plugin_path)], wait_for_announce=True)
    s_id = s.info["id"]
    wait_for_terms(a, s)
    assert call(s, "asyncln-getinfo")["webhooks"]["signer"] == "hsm_secret"

    # B registers; S confirms to that webhook alone, signed by S.
    added = call(b, "asyncln-webhook", peer=s_id, url=hooks.url("/ok"), app_name="phone")
    assert added == {"num_webhooks": 1, "max_webhooks": 10, "no_change": False}
    wait_for(lambda: posts(hooks, "/ok", "lsps5.webhook_registered"))
    assert signed_by(s_id, posts(hooks, "/ok", "lsps5.webhook_registered")[0])
    assert call(b, "asyncln-webhook", peer=s_id, url=hooks.url("/ok"), app_name="phone")["no_change"]
    assert call(b, "asyncln-listwebhooks", peer=s_id)["app_names"] == ["phone"]

    # A's node has the dev option off: plain http is bLIP-55's unsupported_protocol (502).
    with pytest.raises(RpcError) as refused:
        call(s, "asyncln-webhook", peer=a.info["id"], url=hooks.url("/ok"))
    assert refused.value.error["code"] == 2141 and "error 502" in refused.value.error["message"]

    # A slow and a failing webhook beside it (each POST to them times out or gets 500).
    call(b, "asyncln-webhook", peer=s_id, url=hooks.url("/slow"), app_name="slow")
    call(b, "asyncln-webhook", peer=s_id, url=hooks.url("/fail"), app_name="fail")
    wait_for(lambda: posts(hooks, "/fail", "lsps5.webhook_registered"))

    # B away, A pays: payment_incoming within seconds of S holding, signed by S, to each
    # webhook; the slow and failing ones hold up neither the others nor the payment.
    inv, held_at = pay_while_away(a, s, b, "first")
    wait_for(lambda: posts(hooks, "/ok", "lsps5.payment_incoming"))
    incoming = posts(hooks, "/ok", "lsps5.payment_incoming")[0]
    assert incoming[3] - held_at < 10
    assert json.loads(incoming[2]) == {"jsonrpc": "2.0", "method": "lsps5.payment_incoming",
                                       "params": {}}
    assert signed_by(s_id, incoming)
    wait_for(lambda: posts(hooks, "/fail", "lsps5.payment_incoming"))
    back_and_paid(a, s, b, inv)   # /slow is still timing out on its webhook_registered
    assert held(s, inv["payment_hash"])["state"] == "complete"

    # Over the limit: bLIP-55's too_many_webhooks (503) with max_webhooks.
    for n in range(7):
        call(b, "asyncln-webhook", peer=s_id, url=hooks.url(f"/ok{n}"), app_name=f"app{n}")
    with pytest.raises(RpcError) as over:
        call(b, "asyncln-webhook", peer=s_id, url=hooks.url("/ok"), app_name="one too many")
    assert over.value.error["code"] == 2141
    assert "error 503" in over.value.error["message"] and "'max_webhooks': 10" in over.value.error["message"]
    assert len(call(b, "asyncln-listwebhooks", peer=s_id)["app_names"]) == 10
    assert call(b, "asyncln-delwebhook", peer=s_id, app_name="slow") == {}
