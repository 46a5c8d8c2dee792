"""Issue 6 on real lightningd nodes: presigned invoices at the recipient's Rod.

B deposits invoices at its Rod R, goes offline, and A fetches one from R
with B's payment code and pays it; B is paid when it returns.
"""

import hashlib
import os

import pytest
from helpers import assert_proof_of_payment, call, held, opts, say, wait_status
from pyln.client import RpcError
from pyln.testing.utils import sync_blockheight, wait_for

from asyncln import messages

PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plugins")
HOLDER = os.path.join(PLUGINS, "hold_incoming.py")
POOL = 4


def rod_of(node):
    return f"{node.info['id']}@localhost:{node.port}"


def depositor(r, b):
    """R's view of what B has deposited there."""
    return next((d for d in call(r, "asyncln-getinfo")["rod_depositors"]
                 if d["id"] == b.info["id"]), {"level": 0, "notes": 0})


def c_id(node):
    return node.info["id"]


def refused(errcode, node, method, **params):
    with pytest.raises(RpcError) as e:
        call(node, method, **params)
    assert e.value.error["code"] == errcode, e.value.error
    return e.value.error["message"]


def private_recipient(node_factory, plugin_path, n_before=1, b_extra=None, r_extra=None):
    """Payer side nodes in a public line ending at R, then B with a private channel to R."""
    (r,) = node_factory.get_nodes(1, opts=[opts(plugin_path, **(r_extra or {}))])
    *front, b = node_factory.get_nodes(n_before + 1, opts=[opts(plugin_path)] * n_before + [
        opts(plugin_path, **{"asyncln-rod": rod_of(r), "asyncln-rod-pool": POOL,
                             **(b_extra or {})})])
    node_factory.join_nodes(front + [r], wait_for_announce=True)
    node_factory.join_nodes([r, b], announce_channels=False)
    wait_for(lambda: depositor(r, b)["level"] == POOL)  # B asks again once the channel is usable
    return front, r, b


def test_the_pool_fills_once_the_channel_to_the_rod_is_usable(node_factory, plugin_path):
    """Issue 12, item 7: B meets R before their channel; its pool fills when the channel does.

    R refuses B's first query (not yet its channel peer). The channel reaching
    CHANNELD_NORMAL makes B ask again at once, not a poll (asyncln-poll-blocks) later.
    """
    (r,) = node_factory.get_nodes(1, opts=[opts(plugin_path)])
    a, b = node_factory.get_nodes(2, opts=[opts(plugin_path), opts(
        plugin_path, **{"asyncln-rod": rod_of(r), "asyncln-rod-pool": POOL})])
    node_factory.join_nodes([a, r], wait_for_announce=True)
    b.rpc.connect(r.info["id"], "localhost", r.port)
    r.daemon.wait_for_log(f"refusing a deposit from {c_id(b)}: "
                          "this Rod keeps invoices only for its channel peers")
    assert depositor(r, b)["level"] == 0
    node_factory.join_nodes([r, b], announce_channels=False)  # mines one block: no poll is due
    wait_for(lambda: depositor(r, b)["level"] == POOL)
    assert len([i for i in b.rpc.listinvoices()["invoices"]
                if i["label"].startswith("asyncln-rod-")]) == POOL  # nothing minted in vain
    say("B's pool at R filled as soon as their private channel was usable")

    code = call(b, "asyncln-code")["code"]
    payment_hash = call(a, "asyncln-pay", invstring=code, amount_msat=25_000,
                        trampoline=r.info["id"])["payment_hash"]
    assert_proof_of_payment(wait_status(a, payment_hash, "complete"))
    assert b.rpc.listinvoices(payment_hash=payment_hash)["invoices"][0]["status"] == "paid"


def test_deposit_fetch_at_most_once_and_the_limits(node_factory, plugin_path):
    """Items 1-3: B tops R up, its code is signed, A fetches while B is offline."""
    (a,), r, b = private_recipient(node_factory, plugin_path)
    say(f"B deposited {POOL} presigned invoices at its Rod R")
    assert call(b, "asyncln-getinfo")["rods"] == [
        {"id": r.info["id"], "level": POOL, "max_invoices": 50}]
    mine = [i for i in b.rpc.listinvoices()["invoices"] if i["label"].startswith("asyncln-rod-")]
    assert len(mine) == POOL and all("amount_msat" not in i for i in mine)
    assert call(b, "asyncln-deposit", amount_msat=50_000, count=1)["deposited"] == 1
    wait_for(lambda: depositor(r, b)["level"] == POOL + 1)

    code = call(b, "asyncln-code")
    assert code["code"].startswith("aln1") and code["rods"][0]["id"] == r.info["id"]
    say(f"B's payment code: {code['code'][:40]}...")
    b.stop()

    got = call(a, "asyncln-fetchinvoice", code=code["code"], amount_msat=50_000)
    decoded = a.rpc.decode(got["bolt11"])
    assert decoded["payee"] == b.info["id"] and got["rod"] == r.info["id"]
    assert decoded["amount_msat"] == 50_000  # the fixed-amount one fits exactly
    again = call(a, "asyncln-fetchinvoice", code=code["code"], amount_msat=70_000)
    assert "amount_msat" not in a.rpc.decode(again["bolt11"])  # amountless takes any amount
    assert again["payment_hash"] != got["payment_hash"]
    say("A fetched two different invoices from R while B is offline")
    assert depositor(r, b)["level"] == POOL - 1

    r.restart()  # served invoices stay served: R's pool is in its datastore
    a.rpc.connect(r.info["id"], "localhost", r.port)
    hashes = {got["payment_hash"], again["payment_hash"]}
    for _ in range(POOL - 1):
        hashes.add(call(a, "asyncln-fetchinvoice", code=code["code"], amount_msat=1_000)["payment_hash"])
    assert len(hashes) == POOL + 1
    refused(2133, a, "asyncln-fetchinvoice", code=code["code"], amount_msat=1_000)
    say("R served each invoice once, across its restart, then had none left")

    # Bad codes change nothing.
    text = code["code"]
    forged = text[:-10] + ("q" if text[-10] != "q" else "p") + text[-9:]
    refused(2135, a, "asyncln-fetchinvoice", code=forged, amount_msat=1_000)
    refused(2135, a, "asyncln-fetchinvoice", code="aln1qqqq", amount_msat=1_000)
    refused(2135, a, "asyncln-fetchinvoice", code=code["code"].replace("aln1", "lno1"),
            amount_msat=1_000)


def test_a_rod_refuses_strangers_foreign_invoices_and_floods(node_factory, plugin_path):
    """Bad deposits and invoice requests get clear refusals and change nothing."""
    (a,), r, b = private_recipient(node_factory, plugin_path,
                                   r_extra={"asyncln-rod-fetches-per-hour": 2})
    here = f"asyncln-rod:{r.info['id']}"
    foreign = b.rpc.invoice("any", "foreign", here, expiry=604800)["bolt11"]
    own_short = a.rpc.invoice("any", "short", here, expiry=600)["bolt11"]
    elsewhere = a.rpc.invoice("any", "other", "Order #7", expiry=604800)["bolt11"]
    a.rpc.sendcustommsg(r.info["id"], messages.encode(messages.Deposit(
        (foreign, own_short, elsewhere))))
    r.daemon.wait_for_logs([r"refused.*not the depositor's own.*expires in \d+s.*description"])
    assert depositor(r, a)["level"] == 0 and depositor(r, b)["level"] == POOL

    code = call(b, "asyncln-code")["code"]
    call(a, "asyncln-fetchinvoice", code=code, amount_msat=1_000)
    call(a, "asyncln-fetchinvoice", code=code, amount_msat=1_000)
    refused(2134, a, "asyncln-fetchinvoice", code=code, amount_msat=1_000)
    assert depositor(r, b)["level"] == POOL - 2
    # An invoice request for a recipient R keeps nothing for.
    a.rpc.sendcustommsg(r.info["id"], messages.encode(messages.InvoiceRequest(
        "01" * 8, a.info["id"], 1_000)))
    r.daemon.wait_for_log(f"invoice request from {c_id(a)} for {c_id(a)}")
    assert depositor(r, b)["level"] == POOL - 2


def test_a_hijacker_gets_neither_bs_payee_key_nor_bs_node_id(node_factory, plugin_path):
    """Issue 11, item 4: a pool belongs to the node that deposited it.

    A, R's channel peer, copies the payee key from B's private code and deposits under it
    before B; then it asks R for a private offer naming B's node id, to learn who is behind
    the key. B's private payers are still served from B's pool, and the guess gets nothing.
    """
    (r,) = node_factory.get_nodes(1, opts=[opts(plugin_path)])
    a, b = node_factory.get_nodes(2, opts=[opts(plugin_path), opts(
        plugin_path, **{"asyncln-rod": rod_of(r), "asyncln-rod-pool": POOL})])
    node_factory.join_nodes([a, r], wait_for_announce=True)
    payee_key = call(b, "asyncln-code", private=True)["payee_key"]
    own = a.rpc.invoice("any", "hijack", f"asyncln-rod:{r.info['id']}", expiry=604800)["bolt11"]
    a.rpc.sendcustommsg(r.info["id"], messages.encode(messages.Deposit((own,), (), payee_key)))
    wait_for(lambda: depositor(r, a)["level"] == 1)

    node_factory.join_nodes([r, b], announce_channels=False)
    wait_for(lambda: any(t["id"] == r.info["id"]
                         for t in call(b, "asyncln-getinfo")["trampolines"]))
    call(b, "asyncln-deposit", count=2)  # with private offers and B's signed payee key
    wait_for(lambda: depositor(r, b)["level"] >= 2)
    code = call(b, "asyncln-code", private=True)["code"]
    got = call(a, "asyncln-fetchinvoice", code=code, amount_msat=1_000)
    assert got["payment_hash"] in {i["payment_hash"] for i in b.rpc.listinvoices()["invoices"]}
    assert depositor(r, a)["level"] == 1
    assert r.daemon.is_in_log(r"deposit from .*refused.*payee key comes without its signature")
    say("A filed a pool under B's payee key first; B's private payers still got B's offer")

    # R answers each request once: this refusal is the whole answer to the guess.
    a.rpc.sendcustommsg(r.info["id"], messages.encode(messages.InvoiceRequest(
        "02" * 8, b.info["id"], 1_000, private=True)))
    r.daemon.wait_for_log(f"invoice request from {c_id(a)} for {c_id(b)}: "
                          "this Rod keeps no invoices for that recipient")


def test_private_recipient_paid_through_its_rod_with_a_note(node_factory, plugin_path):
    """Items 4 (A - R - B, R holds), 5 and 7: paid on return, proof of payment, a note."""
    (a,), r, b = private_recipient(node_factory, plugin_path)
    code = call(b, "asyncln-code")["code"]
    b.stop()
    say("B (private channel to R only) deposited and went offline")

    started = call(a, "asyncln-pay", invstring=code, amount_msat=60_000, trampoline=r.info["id"],
                   note="thanks for the coffee")
    payment_hash = started["payment_hash"]
    assert started["note_sent"] and started["rod"] == r.info["id"]
    wait_for(lambda: (held(r, payment_hash) or {}).get("state") == "held")
    wait_status(a, payment_hash, "held")
    say("A paid B's code through R; R holds the payment")
    stored = str(r.rpc.listdatastore(["asyncln", "rod"]))
    assert "coffee" not in stored and payment_hash in stored  # R keeps the sealed note only

    b.start()
    b.rpc.connect(r.info["id"], "localhost", r.port)
    done = wait_status(a, payment_hash, "complete")
    assert_proof_of_payment(done)
    bolt11 = a.rpc.decode(done["bolt11"])
    assert bolt11["payee"] == b.info["id"] and bolt11["payment_hash"] == payment_hash
    say("B returned and was paid; A holds a preimage for B's signed invoice")
    wait_for(lambda: call(b, "asyncln-listnotes")["notes"] != [])
    (entry,) = call(b, "asyncln-listnotes")["notes"]
    assert (entry["payment_hash"], entry["note"]) == (payment_hash, "thanks for the coffee")
    assert entry["invoice_status"] == "paid"
    wait_for(lambda: depositor(r, b)["notes"] == 0)
    say("B: asyncln-listnotes shows the payer's note")


def test_holder_routes_to_a_private_recipient_through_its_hints(node_factory, bitcoind,
                                                                plugin_path):
    """Item 4 (A - S - R - B, S holds): S reaches B only through the invoice's route hint."""
    (a, s), r, b = private_recipient(node_factory, plugin_path, n_before=2)
    code = call(b, "asyncln-code")["code"]
    b.stop()
    # A clear record (version 1) names B to S: S itself must hold for B. (In an onion,
    # A would make S hold for R instead: see test_privacy.py.)
    started = call(a, "asyncln-pay", invstring=code, amount_msat=60_000, trampoline=s.info["id"],
                   clear=True)
    payment_hash = started["payment_hash"]
    wait_for(lambda: (held(s, payment_hash) or {}).get("state") == "held")
    # S knows nothing of B but the hint: B has no public channel, S is not its peer.
    assert s.rpc.listnodes(b.info["id"])["nodes"] == []
    assert s.rpc.listpeerchannels(b.info["id"])["channels"] == []
    b.start()
    b.rpc.connect(r.info["id"], "localhost", r.port)
    wait_for(lambda: r.rpc.listpeerchannels(b.info["id"])["channels"][0]["state"] == "CHANNELD_NORMAL"
             and r.rpc.listpeerchannels(b.info["id"])["channels"][0]["peer_connected"])
    bitcoind.generate_block(6)
    sync_blockheight(bitcoind, [a, s, r, b])
    assert_proof_of_payment(wait_status(a, payment_hash, "complete"))
    assert b.rpc.listinvoices(payment_hash=payment_hash)["invoices"][0]["status"] == "paid"


def test_timeout_and_a_payer_offline_when_the_recipient_returns(node_factory, bitcoind,
                                                                plugin_path):
    """Item 5's other paths: B stays away (failed in time); A is away when B returns."""
    (a,), r, b = private_recipient(node_factory, plugin_path)
    code = call(b, "asyncln-code")["code"]
    b.stop()
    late = call(a, "asyncln-pay", invstring=code, amount_msat=30_000, trampoline=r.info["id"],
                max_hold_blocks=12)["payment_hash"]
    wait_status(a, late, "held")
    bitcoind.generate_block(14)
    sync_blockheight(bitcoind, [a, r])
    assert "offline" in wait_status(a, late, "failed")["reason"]

    payment_hash = call(a, "asyncln-pay", invstring=code, amount_msat=40_000,
                        trampoline=r.info["id"])["payment_hash"]
    wait_status(a, payment_hash, "held")
    a.stop()
    b.start()
    b.rpc.connect(r.info["id"], "localhost", r.port)
    wait_for(lambda: held(r, payment_hash)["state"] == "complete")
    a.start()
    a.rpc.connect(r.info["id"], "localhost", r.port)
    assert_proof_of_payment(wait_status(a, payment_hash, "complete"))


def test_payer_cancel(node_factory, plugin_path):
    """Item 6: A cancels a held payment; refused for others and while an attempt is in flight."""
    (a, c), r, b = private_recipient(node_factory, plugin_path, n_before=2,
                                     b_extra={"plugin": [plugin_path, HOLDER]})
    code = call(b, "asyncln-code")["code"]
    b.stop()
    payment_hash = call(c, "asyncln-pay", invstring=code, amount_msat=20_000,
                        trampoline=r.info["id"])["payment_hash"]
    wait_status(c, payment_hash, "held")
    # Somebody else's cancel changes nothing.
    a.rpc.connect(r.info["id"], "localhost", r.port)
    a.rpc.sendcustommsg(r.info["id"], messages.encode(messages.CancelRequest(payment_hash)))
    r.daemon.wait_for_log("refusing .*cancel")
    assert held(r, payment_hash)["state"] == "held"

    answer = call(c, "asyncln-cancel", payment_hash=payment_hash)
    assert answer["payment_hash"] == payment_hash
    assert wait_status(c, payment_hash, "failed")["reason"] == "cancelled by payer"
    assert held(r, payment_hash)["state"] == "failed"

    # With an attempt in flight (B holds the HTLC), R answers why not.
    inflight = call(c, "asyncln-pay", invstring=code, amount_msat=21_000,
                    trampoline=r.info["id"])["payment_hash"]
    wait_status(c, inflight, "held")
    b.start()
    b.rpc.connect(r.info["id"], "localhost", r.port)
    wait_for(lambda: b.rpc.call("hold-incoming-count")["held"] == 1)
    assert "in flight" in refused(2102, c, "asyncln-cancel", payment_hash=inflight)
    b.rpc.call("hold-incoming-release")
    assert_proof_of_payment(wait_status(c, inflight, "complete"))
