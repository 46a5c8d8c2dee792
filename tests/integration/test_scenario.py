"""Issue 2's numbered scenario on real lightningd nodes."""

import os

from helpers import (
    assert_proof_of_payment,
    call,
    channel_with,
    held,
    held_for_payer,
    opts,
    say,
    wait_for_terms,
    wait_status,
)
from pyln.testing.utils import sync_blockheight, wait_for


def test_offline_recipient_is_paid_when_it_returns(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    say(f"regtest line A {a.info['id'][:8]} - S {s.info['id'][:8]} - B {b.info['id'][:8]}, asyncln on all")
    inv = b.rpc.invoice(100_000, "offline", "paid while offline")
    wait_for_terms(a, s)
    b.stop()
    say("B created an invoice for 100000 msat and went offline")

    started = call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
    say(f"A: asyncln-pay -> {started['status']}, sent {started['amount_sent_msat']} msat, "
        f"HTLC expires at block {started['cltv_expiry']}")
    assert started["status"] == "pending"
    assert started["trampoline"] == s.info["id"]
    assert started["payment_hash"] == inv["payment_hash"]
    assert started["amount_msat"] == 100_000
    assert started["amount_sent_msat"] > 100_000
    assert started["cltv_expiry"] > a.rpc.getinfo()["blockheight"]

    wait_for(lambda: (held(s, inv["payment_hash"]) or {}).get("state") == "held")
    entry = held(s, inv["payment_hash"])
    say(f"S: holding for B, next poll at block {entry['next_poll_height']}, "
        f"gives up at block {entry['give_up_height']}")
    assert entry["next_node"] == b.info["id"]
    assert entry["incoming_msat"] == started["amount_sent_msat"]
    assert entry["outgoing_msat"] == 100_000
    assert entry["cltv_expiry"] == started["cltv_expiry"]
    assert entry["give_up_height"] <= entry["cltv_expiry"] - 6
    assert wait_status(a, inv["payment_hash"], "held")["give_up_height"] == entry["give_up_height"]
    say("A: asyncln-listpays -> held")

    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    say("B came back online and connected to S")
    done = wait_status(a, inv["payment_hash"], "complete")
    assert_proof_of_payment(done)
    say(f"A: asyncln-listpays -> complete, preimage {done['payment_preimage'][:16]}... "
        "hashes to the invoice's payment hash")
    assert b.rpc.listinvoices(payment_hash=inv["payment_hash"])["invoices"][0]["status"] == "paid"
    wait_for(lambda: held(s, inv["payment_hash"])["state"] == "complete")
    say("B: invoice paid")


def test_polling_reaches_a_recipient_that_is_not_our_peer(node_factory, bitcoind, plugin_path):
    a, s, p, b = node_factory.line_graph(4, opts=opts(plugin_path), wait_for_announce=True)
    inv = held_for_payer(a, s, b)
    attempts = held(s, inv["payment_hash"])["attempts"]

    b.start()
    b.rpc.connect(p.info["id"], "localhost", p.port)
    wait_for(lambda: channel_with(p, b)["state"] == "CHANNELD_NORMAL"
             and channel_with(p, b)["peer_connected"])
    scid = channel_with(p, b)["short_channel_id"]
    wait_for(lambda: all(c["active"] for c in s.rpc.listchannels(scid)["channels"]))
    # S is not B's peer: nothing tells it B is back but its 6-block poll.
    assert held(s, inv["payment_hash"])["state"] == "held"
    bitcoind.generate_block(6)
    sync_blockheight(bitcoind, [a, s, p, b])
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))
    assert held(s, inv["payment_hash"])["attempts"] > attempts


def test_recipient_that_stays_away_is_failed_back_in_time(node_factory, bitcoind, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    balance = channel_with(a, s)["to_us_msat"]
    inv = held_for_payer(a, s, b)
    entry = held(s, inv["payment_hash"])

    bitcoind.generate_block(6)
    sync_blockheight(bitcoind, [a, s])
    wait_for(lambda: held(s, inv["payment_hash"])["attempts"] > entry["attempts"])
    assert held(s, inv["payment_hash"])["state"] == "held"

    height = s.rpc.getinfo()["blockheight"]
    bitcoind.generate_block(entry["give_up_height"] - height - 1)
    sync_blockheight(bitcoind, [a, s])
    assert held(s, inv["payment_hash"])["state"] == "held"
    bitcoind.generate_block(1)
    failed = wait_status(a, inv["payment_hash"], "failed")
    assert "offline" in failed["reason"]
    assert held(s, inv["payment_hash"])["state"] == "failed"
    assert s.rpc.getinfo()["blockheight"] < entry["cltv_expiry"] - 6
    wait_for(lambda: channel_with(a, s)["htlcs"] == [])
    assert channel_with(a, s)["to_us_msat"] == balance
    assert channel_with(a, s)["state"] == "CHANNELD_NORMAL"


def test_trampoline_killed_while_holding_resumes(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=[opts(plugin_path), opts(plugin_path, may_fail=True),
                                               opts(plugin_path)], wait_for_announce=True)
    inv = held_for_payer(a, s, b)
    s.daemon.kill()
    s.start()
    s.rpc.connect(a.info["id"], "localhost", a.port)
    # lightningd replays htlc_accepted; the held record comes back from the datastore.
    wait_for(lambda: channel_with(s, a)["peer_connected"])
    assert held(s, inv["payment_hash"])["state"] == "held"

    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))
    parts = s.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
    assert [p["status"] for p in parts].count("complete") == 1
    assert "pending" not in [p["status"] for p in parts]


def test_payer_restart_rebuilds_status(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    inv = held_for_payer(a, s, b)
    a.restart()
    assert call(a, "asyncln-listpays", payment_hash=inv["payment_hash"])["pays"][0]["status"] == "held"

    a.stop()
    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    wait_for(lambda: held(s, inv["payment_hash"])["state"] == "complete")
    a.start()
    a.rpc.connect(s.info["id"], "localhost", s.port)
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))


def test_ordinary_payments_pass_through(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    inv = b.rpc.invoice(50_000, "plain", "plain payment")
    a.rpc.xpay(inv["bolt11"])
    assert call(s, "asyncln-listheld")["held"] == []
    direct = s.rpc.invoice(20_000, "to-s", "final hop is S")
    a.rpc.xpay(direct["bolt11"])
    assert s.rpc.listinvoices("to-s")["invoices"][0]["status"] == "paid"


def test_trampoline_killed_while_forwarding_does_not_forward_twice(node_factory, plugin_path):
    holder = os.path.join(os.path.dirname(__file__), "plugins", "hold_incoming.py")
    a, s, b = node_factory.line_graph(3, opts=[opts(plugin_path), opts(plugin_path, may_fail=True),
                                               opts(plugin_path, plugin=[plugin_path, holder])],
                                      wait_for_announce=True)
    inv = b.rpc.invoice(100_000, "in-flight", "held by the recipient")
    wait_for_terms(a, s)
    call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
    wait_for(lambda: call(b, "hold-incoming-count")["held"] == 1)
    assert held(s, inv["payment_hash"])["state"] == "forwarding"

    s.daemon.kill()
    s.start()
    # The replayed hook finds the attempt still pending and waits for it.
    wait_for(lambda: channel_with(s, a)["peer_connected"] and channel_with(s, b)["peer_connected"])
    assert held(s, inv["payment_hash"])["state"] == "forwarding"
    assert call(b, "hold-incoming-release")["released"] == 1
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))
    parts = s.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
    assert [p["status"] for p in parts] == ["complete"]
