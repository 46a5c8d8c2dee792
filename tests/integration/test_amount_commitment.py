"""Issue 11.6 on real lightningd nodes: a holder that short-pays the recipient settles nothing.

A pays B's payment code (public or private) through B's Rod R, which holds
and delivers. R runs a helper plugin (plugins/shave_relay.py) that keeps
1 sat of every delivery while keeping the onion consistent, as a dishonest
holder would. B's asyncln checks the payer's amount commitment and refuses;
A's payment fails and nothing settles. With shaving off, the same chain pays.
"""

import os

import pytest
from helpers import assert_proof_of_payment, call, channel_with, held, say, wait_status
from pyln.testing.utils import wait_for
from test_rod_flows import private_recipient

SHAVE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins", "shave_relay.py")
AMOUNT = 60_000
SHAVED = 1_000


@pytest.mark.parametrize("private", [False, True], ids=["public-code", "private-code"])
def test_a_holder_that_shaves_the_amount_settles_nothing(node_factory, plugin_path, private):
    (a,), r, b = private_recipient(node_factory, plugin_path,
                                   r_extra={"plugin": [plugin_path, SHAVE]})
    code = call(b, "asyncln-code", private=private)["code"]
    r.rpc.call("shave-set", {"msat": SHAVED})

    started = call(a, "asyncln-pay", invstring=code, amount_msat=AMOUNT, trampoline=r.info["id"])
    payment_hash = started["payment_hash"]
    failed = wait_status(a, payment_hash, "failed")
    say(f"R delivered {AMOUNT - SHAVED}msat of {AMOUNT}msat; B refused, A's payment failed")
    b.daemon.wait_for_log(
        f"refusing HTLC {payment_hash} for a deposited invoice: the payer committed "
        f"{AMOUNT}msat, the HTLC brings only {AMOUNT - SHAVED}msat")
    assert r.rpc.call("shave-count")["shaved"] >= 1
    assert failed.get("payment_preimage") is None
    assert b.rpc.listinvoices(payment_hash=payment_hash)["invoices"][0]["status"] == "unpaid"
    wait_for(lambda: held(r, payment_hash)["state"] == "failed")
    assert all(p["status"] == "failed"
               for p in r.rpc.listsendpays(payment_hash=payment_hash)["payments"])
    assert [p["status"] for p in a.rpc.listsendpays(payment_hash=payment_hash)["payments"]] == [
        "failed"]

    r.rpc.call("shave-set", {"msat": 0})
    again = call(a, "asyncln-pay", invstring=code, amount_msat=AMOUNT, trampoline=r.info["id"])
    done = wait_status(a, again["payment_hash"], "complete")
    assert_proof_of_payment(done)
    paid = b.rpc.listinvoices(payment_hash=again["payment_hash"])["invoices"][0]
    assert paid["status"] == "paid" and paid["amount_received_msat"] >= AMOUNT
    say("an honest R: the same chain pays B at least the committed amount")
    for node, peer in ((a, r), (r, b)):
        assert channel_with(node, peer)["state"] == "CHANNELD_NORMAL"
