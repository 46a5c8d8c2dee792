"""Issue 2's numbered scenario on real lightningd nodes: A — S — B."""

from pyln.testing.utils import wait_for

from helpers import (assert_proof_of_payment, call, held, opts, pay_status, wait_for_terms,
                     wait_status)


def test_offline_recipient_is_paid_when_it_returns(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    inv = b.rpc.invoice(100_000, "offline", "paid while offline")
    wait_for_terms(a, s)
    b.stop()

    started = call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
    assert started["status"] == "pending"
    assert started["trampoline"] == s.info["id"]
    assert started["payment_hash"] == inv["payment_hash"]
    assert started["amount_msat"] == 100_000
    assert started["amount_sent_msat"] > 100_000
    assert started["cltv_expiry"] > a.rpc.getinfo()["blockheight"]

    wait_for(lambda: (held(s, inv["payment_hash"]) or {}).get("state") == "held")
    entry = held(s, inv["payment_hash"])
    assert entry["next_node"] == b.info["id"]
    assert entry["incoming_msat"] == started["amount_sent_msat"]
    assert entry["outgoing_msat"] == 100_000
    assert entry["give_up_height"] <= entry["cltv_expiry"] - 6
    assert wait_status(a, inv["payment_hash"], "held")["give_up_height"] == entry["give_up_height"]

    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    done = wait_status(a, inv["payment_hash"], "complete")
    assert_proof_of_payment(done)
    assert b.rpc.listinvoices(payment_hash=inv["payment_hash"])["invoices"][0]["status"] == "paid"
    wait_for(lambda: held(s, inv["payment_hash"])["state"] == "complete")
