"""Issue 7 on real lightningd nodes: the asyncln onion, a chain of holders, #836 errors.

Each holder peels one layer of the payer's onion with its asyncln key
(makesecret), so S learns only R, and only R learns the recipient.
"""

import hashlib
import json
import os

from helpers import assert_proof_of_payment, call, held, opts, say, send_failing, wait_status
from pyln.testing.utils import sync_blockheight, wait_for
from test_rod_flows import private_recipient

from asyncln import failures, onion
from asyncln.layer import Layer


def onion_key(node):
    return call(node, "asyncln-getinfo")["onion_key"]


def send_v2(a, s, layer, amount_msat, delay, mangle=lambda packet: packet, then=(),
            meanwhile=lambda: None):
    """One HTLC to S whose final payload carries a hand-made asyncln onion; S's failcode.

    ``then``: (key, layer) pairs for holders after S. ``meanwhile`` runs once
    the HTLC is out.
    """
    payment_hash = hashlib.sha256(os.urandom(32)).hexdigest()
    packet, _ = onion.build([(onion_key(s), layer)] + list(then), payment_hash)
    height = a.rpc.getinfo()["blockheight"]
    payload = onion.final_payload(amount_msat, height + 1 + delay, mangle(packet))
    return send_failing(a, s, payload.hex(), amount_msat, delay, payment_hash, meanwhile)


def test_onion_payment_to_an_offline_recipient(node_factory, plugin_path):
    """Item 1 with one holder: the instructions are encrypted to S's asyncln key."""
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    inv = b.rpc.invoice(100_000, "v2", "paid through an asyncln onion")
    wait_for(lambda: any(t["id"] == s.info["id"] for t in call(a, "asyncln-getinfo")["trampolines"]))
    b.stop()
    started = call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
    assert started["version"] == 2
    wait_for(lambda: (held(s, inv["payment_hash"]) or {}).get("state") == "held")
    assert held(s, inv["payment_hash"])["next_node"] == b.info["id"]
    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))


def test_a_chain_of_holders_each_learning_only_its_neighbours(node_factory, bitcoind,
                                                              plugin_path):
    """Items 1 and 2: A -> S (payer's) -> R (payee's Rod) -> B; R, then B, offline in turn."""
    (a, s), r, b = private_recipient(node_factory, plugin_path, n_before=2)
    mine = call(b, "asyncln-code")
    assert mine["rods"][0]["onion_key"] == onion_key(r)  # R's key, signed by R, in B's code
    fetched = call(a, "asyncln-fetchinvoice", code=mine["code"], amount_msat=50_000)
    wait_for(lambda: any(t["id"] == r.info["id"] for t in call(a, "asyncln-getinfo")["trampolines"]))
    b.stop()
    r.stop()
    say("B and its Rod R are offline; A pays through its own holder S")
    started = call(a, "asyncln-pay", invstring=fetched["bolt11"], trampoline=s.info["id"],
                   amount_msat=50_000)
    payment_hash = started["payment_hash"]
    assert (started["version"], started["rod"]) == (2, r.info["id"])
    wait_for(lambda: (held(s, payment_hash) or {}).get("state") == "held")
    at_s = held(s, payment_hash)
    assert at_s["next_node"] == r.info["id"]
    assert b.info["id"] not in json.dumps(call(s, "asyncln-listheld"))
    say("S holds for R and knows nothing of B")

    r.start()
    wait_for(lambda: (held(r, payment_hash) or {}).get("state") == "held")
    assert held(r, payment_hash)["next_node"] == b.info["id"]
    assert held(s, payment_hash)["state"] == "forwarding"
    say("R came back; S forwarded to R, which now holds for B")

    b.start()
    b.rpc.connect(r.info["id"], "localhost", r.port)
    done = wait_status(a, payment_hash, "complete")
    assert_proof_of_payment(done)
    wait_for(lambda: held(s, payment_hash)["state"] == "complete")
    assert not s.daemon.is_in_log(b.info["id"])  # S never saw B's node id, not even in its logs
    say("B returned and was paid; A has the preimage")


def test_a_timeout_at_the_rod_fails_back_through_s(node_factory, bitcoind, plugin_path):
    """Item 2: R gives up on B, S passes #836's failure to A at once; no force-close."""
    (a, s), r, b = private_recipient(node_factory, plugin_path, n_before=2)
    code = call(b, "asyncln-code")["code"]
    fetched = call(a, "asyncln-fetchinvoice", code=code, amount_msat=50_000)
    wait_for(lambda: any(t["id"] == r.info["id"] for t in call(a, "asyncln-getinfo")["trampolines"]))
    b.stop()
    payment_hash = call(a, "asyncln-pay", invstring=fetched["bolt11"], trampoline=s.info["id"],
                        amount_msat=50_000, max_hold_blocks=8)["payment_hash"]
    wait_for(lambda: (held(r, payment_hash) or {}).get("state") == "held")
    bitcoind.generate_block(10)
    sync_blockheight(bitcoind, [a, s, r])
    failed = wait_status(a, payment_hash, "failed")
    assert "gave up" in failed["reason"] or "offline" in failed["reason"]
    assert held(s, payment_hash)["state"] == "failed"
    assert "the next holder gave up" in held(s, payment_hash)["last_error"]
    for node in (a, s, r):
        assert all(c["state"] == "CHANNELD_NORMAL" for c in node.rpc.listpeerchannels()["channels"]
                   if c["peer_id"] != b.info["id"])


def test_bad_onions_and_budgets_get_the_failure_that_fits(node_factory, bitcoind, plugin_path):
    """Items 4 and bad input: #836 codes with the holder's terms; nothing is held."""
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)

    def layer(amount=100_000, node=b.info["id"], **kw):
        return Layer(amt_to_forward=amount, outgoing_cltv_delta=18, outgoing_node_id=node,
                     payment_secret="22" * 32, total_msat=amount, max_hold_blocks=10, **kw)

    code, raw = send_v2(a, s, layer(), 100_000, 300)  # no fee for S
    assert code == failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT
    assert raw is None or raw.startswith("201a")
    code, _ = send_v2(a, s, layer(), 110_000, 20)      # too little CLTV
    assert code == failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT
    code, _ = send_v2(a, s, layer(node=s.info["id"]), 110_000, 300)  # a loop back to S
    assert code == failures.UNKNOWN_NEXT_TRAMPOLINE
    flipped = lambda p: p[:40] + bytes([p[40] ^ 1]) + p[41:]  # noqa: E731
    code, _ = send_v2(a, s, layer(), 110_000, 300, flipped)       # bad HMAC
    assert code == failures.INVALID_ONION_PAYLOAD
    code, _ = send_v2(a, s, layer(), 110_000, 300, lambda p: p[:-1])  # truncated
    assert code == failures.INVALID_ONION_PAYLOAD
    code, _ = send_v2(a, s, layer(), 110_000, 300, lambda p: b"\x01" + p[1:])  # version
    assert code == failures.INVALID_ONION_PAYLOAD
    code, _ = send_v2(a, s, layer(), 110_000, 300, lambda p: p + b"\x00")  # oversize
    assert code == failures.INVALID_ONION_PAYLOAD
    assert call(s, "asyncln-listheld")["held"] == []  # each refused before holding
    nobody = onion.public_key("77" * 32)  # a next holder no gossip and no peer knows
    to_nobody = Layer(amt_to_forward=100_000, outgoing_cltv_delta=200,
                      outgoing_node_id=nobody, max_hold_blocks=10)

    def a_poll_later():  # the first "unknown" may only mean gossip is loading: S polls again
        wait_for(lambda: any("no route" in (h.get("last_error") or "")
                             for h in call(s, "asyncln-listheld")["held"]))
        bitcoind.generate_block(6)
    code, _ = send_v2(a, s, to_nobody, 110_000, 500, then=[(nobody, layer())],
                      meanwhile=a_poll_later)
    assert code == failures.UNKNOWN_NEXT_TRAMPOLINE
    (gone,) = call(s, "asyncln-listheld")["held"]  # held while it might appear, then failed
    assert gone["state"] == "failed" and "unknown next holder" in gone["last_error"]


def test_a_clear_record_payer_and_a_holder_that_refuses_clear_records(node_factory, plugin_path):
    """Item 5: version 1 still works unless the holder refuses clear records."""
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    wait_for(lambda: any(t["id"] == s.info["id"] for t in call(a, "asyncln-getinfo")["trampolines"]))
    inv = b.rpc.invoice(100_000, "v1", "clear")
    started = call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"], clear=True)
    assert started["version"] == 1
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))

    s.stop()
    s.daemon.opts["asyncln-accept-clear"] = "false"
    s.start()
    a.rpc.connect(s.info["id"], "localhost", s.port)
    wait_for(lambda: s.rpc.listpeerchannels(a.info["id"])["channels"][0]["state"] == "CHANNELD_NORMAL"
             and s.rpc.listpeerchannels(a.info["id"])["channels"][0]["peer_connected"])
    refused = b.rpc.invoice(100_000, "v1-refused", "clear")
    call(a, "asyncln-pay", invstring=refused["bolt11"], trampoline=s.info["id"], clear=True)
    assert "WIRE_INVALID_ONION_PAYLOAD" in wait_status(a, refused["payment_hash"], "failed")["reason"]
    assert held(s, refused["payment_hash"]) is None
    fine = b.rpc.invoice(100_000, "v2-accepted", "onion")
    call(a, "asyncln-pay", invstring=fine["bolt11"], trampoline=s.info["id"])
    assert_proof_of_payment(wait_status(a, fine["payment_hash"], "complete"))


def test_a_payee_hidden_from_its_payer(node_factory, plugin_path):
    """Item 3: a private code and a payee-built tail; A never learns B's node id."""
    (a, s), r, b = private_recipient(node_factory, plugin_path, n_before=2)
    wait_for(lambda: call(b, "asyncln-getinfo")["rods"] != [])
    # B's pool was filled before B knew R's key: top it up again, now with private offers.
    wait_for(lambda: any(t["id"] == r.info["id"] for t in call(b, "asyncln-getinfo")["trampolines"]))
    call(b, "asyncln-deposit", count=2)
    code = call(b, "asyncln-code", private=True)
    assert "node_id" not in code and b.info["id"] not in json.dumps(code)
    b.stop()
    started = call(a, "asyncln-pay", invstring=code["code"], amount_msat=40_000,
                   trampoline=s.info["id"], note="from a stranger")
    payment_hash = started["payment_hash"]
    wait_for(lambda: (held(r, payment_hash) or {}).get("state") == "held")
    assert held(r, payment_hash)["next_node"] == b.info["id"]  # only R learns B
    assert held(s, payment_hash)["next_node"] == r.info["id"]
    b.start()
    b.rpc.connect(r.info["id"], "localhost", r.port)
    done = wait_status(a, payment_hash, "complete")
    assert_proof_of_payment(done)
    # The proof's other half: B's payee key signed this payment hash for this Rod.
    from asyncln import payee
    assert payee.verify(code["payee_key"], done["payee_signature"],
                        payee.statement(payment_hash, done["offer_expires_at"], r.info["id"]))
    assert b.info["id"] not in json.dumps(call(a, "asyncln-listpays"))
    assert not a.daemon.is_in_log(b.info["id"])
    wait_for(lambda: call(b, "asyncln-listnotes")["notes"] != [])
    assert call(b, "asyncln-listnotes")["notes"][0]["note"] == "from a stranger"
