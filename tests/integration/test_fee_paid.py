"""Issue 12 item 5 on real lightningd: the payer pays S's announced fee and what S's route
costs (with a small documented margin), not its whole fee cap."""

from asyncln import payer
from helpers import assert_proof_of_payment, call, held, opts, wait_for_terms, wait_status
from pyln.client import RpcError
from pyln.testing.utils import wait_for

AMOUNT = 100_000
# C charges for its hop S -> C -> B, so that S's route has a fee the payer must estimate.
C_FEES = {"fee-base": 500, "fee-per-satoshi": 1000}


def test_the_payer_pays_the_holders_fee_and_its_route_not_the_cap(node_factory, plugin_path):
    a, s, c, b = node_factory.line_graph(4, opts=[opts(plugin_path), opts(plugin_path),
                                                  opts(plugin_path, **C_FEES), opts(plugin_path)],
                                         wait_for_announce=True)
    inv = b.rpc.invoice(AMOUNT, "fee", "asyncln fee test")
    wait_for_terms(a, s)
    b.stop()  # offline: its channel may show disabled in A's gossip; the estimate enables it
    call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
    wait_for(lambda: (held(s, inv["payment_hash"]) or {}).get("state") == "held")

    b.start()
    b.rpc.connect(c.info["id"], "localhost", c.port)
    wait_for(lambda: all(ch["peer_connected"] for ch in c.rpc.listpeerchannels()["channels"]))
    call(s, "asyncln-poll", payment_hash=inv["payment_hash"])  # B is not S's peer: S polls
    pay = wait_status(a, inv["payment_hash"], "complete")
    assert_proof_of_payment(pay)

    [announced] = [t for t in call(a, "asyncln-getinfo")["trampolines"] if t["id"] == s.info["id"]]
    s_fee = announced["fee_base_msat"] + AMOUNT * announced["fee_ppm"] // 1_000_000
    [out] = [p for p in s.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
             if p["status"] == "complete"]
    route_fee = out["amount_sent_msat"] - AMOUNT          # what S's route to B cost: C's fee
    assert route_fee == 500 + AMOUNT * 1000 // 1_000_000
    paid = pay["amount_sent_msat"] - AMOUNT               # A -> S is direct: no fee before S
    margin = payer.ROUTE_MARGIN_MSAT + route_fee * payer.ROUTE_MARGIN_PERCENT // 100
    print(f"fee paid {paid}msat = S's fee {s_fee} + route {route_fee} + {paid - s_fee - route_fee}"
          f" (margin allowed {margin}); xpay's cap {payer.default_maxfee(AMOUNT)}")
    assert s_fee + route_fee <= paid <= s_fee + route_fee + margin
    assert paid < payer.default_maxfee(AMOUNT) // 2   # far below the 5% cap it used to pay


def route_fee(s, b):
    try:
        path = s.rpc.getroutes(source=s.info["id"], destination=b.info["id"], amount_msat=AMOUNT,
                               layers=["auto.localchans", "auto.sourcefree"],
                               maxfee_msat=AMOUNT, final_cltv=18)["routes"][0]["path"]
    except RpcError:
        return None
    return path[0]["amount_out_msat"] - AMOUNT


def test_a_route_dearer_than_estimated_is_quoted_and_the_payer_pays_again(node_factory,
                                                                          plugin_path):
    """C raises its fee while the payment is held: S's route costs more than A left it. S
    fails back at once with NODE|26 quoting the route, and A pays again by itself."""
    a, s, c, b = node_factory.line_graph(4, opts=[opts(plugin_path), opts(plugin_path),
                                                  opts(plugin_path, **C_FEES), opts(plugin_path)],
                                         wait_for_announce=True)
    inv = b.rpc.invoice(AMOUNT, "dear", "asyncln fee test")
    wait_for_terms(a, s)
    b.stop()
    first = call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
    wait_for(lambda: (held(s, inv["payment_hash"]) or {}).get("state") == "held")

    c.rpc.setchannel(b.info["id"], feebase=2500, feeppm=1000, enforcedelay=0)
    b.start()
    b.rpc.connect(c.info["id"], "localhost", c.port)
    wait_for(lambda: all(ch["peer_connected"] for ch in c.rpc.listpeerchannels()["channels"]))
    wait_for(lambda: route_fee(s, b) == 2600)  # S's own route search sees C's new fee
    # B is not S's peer: S tries at its next poll, or now; either finds the dearer route.
    wait_for(lambda: call(s, "asyncln-poll", payment_hash=inv["payment_hash"])
             and a.daemon.is_in_log("asks fee_base_msat=3600"))  # S's 1,000 + C's 2,600
    pay = wait_status(a, inv["payment_hash"], "complete")
    assert_proof_of_payment(pay)
    assert pay["terms_retries"] == 1 and pay["amount_sent_msat"] > first["amount_sent_msat"]
    assert pay["amount_sent_msat"] - AMOUNT <= payer.default_maxfee(AMOUNT)
    assert s.daemon.is_in_log("route fees exceed what the incoming HTLC leaves after our fee")
