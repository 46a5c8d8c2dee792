"""`make bench`: asyncln's fee against a plain xpay of the same amount over the same channels.

A -> S -> C -> B on regtest, B online, C charging 500msat + 1000ppm for its
hop. A pays one invoice of B's through S with asyncln-pay, and another with
xpay. asyncln pays S's announced fee, S's route (estimated, plus the margin
of README "Fees"); xpay pays S's and C's channel fees. Skipped, with the
reason printed, without lightningd and bitcoind.
"""

import pytest
from conftest import MISSING

AMOUNT = 100_000
C_FEES = {"fee-base": 500, "fee-per-satoshi": 1000}
HOLDER = {"asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30}


def test_asyncln_fee_against_xpay(request, show):
    if MISSING:
        show(f"SKIPPED bench_fees: needs real binaries, {', '.join(MISSING)} not on PATH "
             "(README, 'Integration tests')")
        pytest.skip(f"{', '.join(MISSING)} not on PATH")
    from pyln.testing.utils import wait_for
    node_factory, plugin_path = (request.getfixturevalue(f) for f in ("node_factory", "plugin_path"))
    plugin = {"plugin": plugin_path, **HOLDER}
    a, s, c, b = node_factory.line_graph(4, opts=[plugin, plugin, {**plugin, **C_FEES}, plugin],
                                         wait_for_announce=True)
    wait_for(lambda: a.rpc.call("asyncln-getinfo")["trampolines"])
    held = b.rpc.invoice(AMOUNT, "asyncln", "bench")
    a.rpc.call("asyncln-pay", {"invstring": held["bolt11"], "trampoline": s.info["id"]})
    wait_for(lambda: a.rpc.call("asyncln-listpays", {"payment_hash": held["payment_hash"]})
             ["pays"][0]["status"] == "complete")
    pay = a.rpc.call("asyncln-listpays", {"payment_hash": held["payment_hash"]})["pays"][0]
    plain = a.rpc.call("xpay", {"invstring": b.rpc.invoice(AMOUNT, "xpay", "bench")["bolt11"]})

    ours = pay["amount_sent_msat"] - AMOUNT
    theirs = plain["amount_sent_msat"] - plain["amount_msat"]
    [terms] = a.rpc.call("asyncln-getinfo")["trampolines"]
    announced = terms["fee_base_msat"] + AMOUNT * terms["fee_ppm"] // 1_000_000
    show(f"fees on {AMOUNT}msat, A -> S -> C -> B, B online: asyncln {ours}msat "
         f"(S's announced fee {announced}), xpay {theirs}msat")
    show(f"asyncln fee / xpay fee = {ours / theirs:.2f} (target ≈ 1, S's announced fee "
         f"makes the difference: {(ours - announced) / theirs:.2f} without it)")
