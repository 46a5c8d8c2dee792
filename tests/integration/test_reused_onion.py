"""Issue 11, item 2 on real lightningd: S's answers are bound to the HTLC lightningd names,
never to the onion the payer chose."""

from helpers import call, channel_with, held, opts
from pyln.client import RpcError
from pyln.testing.utils import sync_blockheight, wait_for

from asyncln import failures
from asyncln.record import FinalPayload, TrampolineRecord

SESSION_KEY = "41" * 32  # the payer's fixed createonion session key: one onion, one shared secret
AMOUNT = 100_000
DELAY = 200


def balance(node):
    """What the node owns in its channels."""
    return sum(c["to_us_msat"] for c in node.rpc.listpeerchannels()["channels"])


def send_part(a, s, onion, payment_hash, partid, channel=None):
    first_hop = {"id": s.info["id"], "amount_msat": AMOUNT + 2_000, "delay": DELAY}
    if channel is not None:
        first_hop["channel"] = channel
    a.rpc.call("sendonion", {
        "onion": onion["onion"], "payment_hash": payment_hash, "partid": partid, "groupid": 1,
        "first_hop": first_hop, "shared_secrets": onion["shared_secrets"]})


def held_payment_onion(a, s, b, label):
    """B (offline) invoices; A builds S's payload and one onion with a fixed session key."""
    inv = b.rpc.invoice(AMOUNT, label, "one onion, many HTLCs")
    b.stop()
    height = a.rpc.getinfo()["blockheight"]
    record = TrampolineRecord(next_node=b.info["id"], amount_msat=AMOUNT, final_cltv_delta=18,
                              payment_secret=inv["payment_secret"], total_msat=AMOUNT,
                              please_poll=True)
    payload = FinalPayload(AMOUNT + 2_000, height + 1 + DELAY, record).encode().hex()
    onion = a.rpc.createonion(hops=[{"pubkey": s.info["id"], "payload": payload}],
                              assocdata=inv["payment_hash"], session_key=SESSION_KEY)
    return inv["payment_hash"], onion


def deliver(s, b):
    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)


def outcome(a, payment_hash, partid):
    """The part's end, as the payer's lightningd saw it: complete, or S's failcode."""
    try:
        a.rpc.call("waitsendpay", {"payment_hash": payment_hash, "timeout": 60,
                                   "partid": partid, "groupid": 1})
        return "complete"
    except RpcError as e:
        return e.error["data"]["failcode"]


def test_one_onion_sent_three_times_with_a_cancel_between(node_factory, plugin_path):
    """A reuses one onion (same shared secret) for three HTLCs with one hash: S refuses the
    second while it holds the first, fails the first back on a cancel, holds and delivers the
    third. Each HTLC is answered once, S never loses, no channel closes."""
    a, s, b = node_factory.line_graph(3, opts=[{"may_reconnect": True}, opts(plugin_path),
                                               {"may_reconnect": True}], wait_for_announce=True)
    payment_hash, onion = held_payment_onion(a, s, b, "thrice")
    balances = [balance(s)]

    send_part(a, s, onion, payment_hash, 1)
    wait_for(lambda: (held(s, payment_hash) or {}).get("state") == "held")
    balances.append(balance(s))

    send_part(a, s, onion, payment_hash, 2)  # the same onion, while the first is held
    assert outcome(a, payment_hash, 2) == failures.TEMPORARY_NODE_FAILURE
    assert held(s, payment_hash)["state"] == "held"

    call(s, "asyncln-cancel", payment_hash=payment_hash)
    assert outcome(a, payment_hash, 1) == failures.TEMPORARY_TRAMPOLINE_FAILURE
    wait_for(lambda: channel_with(s, a)["htlcs"] == [])
    balances.append(balance(s))

    send_part(a, s, onion, payment_hash, 3)  # once the first's fail is delivered: held anew
    wait_for(lambda: (held(s, payment_hash) or {}).get("state") == "held"
             and held(s, payment_hash)["attempts"] >= 1)
    deliver(s, b)
    assert outcome(a, payment_hash, 3) == "complete"
    wait_for(lambda: channel_with(s, a)["htlcs"] == [] and channel_with(s, b)["htlcs"] == [])
    balances.append(balance(s))

    parts = {p["partid"]: p["status"] for p in a.rpc.listsendpays(payment_hash=payment_hash)["payments"]}
    assert parts == {1: "failed", 2: "failed", 3: "complete"}
    assert b.rpc.listinvoices(payment_hash=payment_hash)["invoices"][0]["status"] == "paid"
    assert balances == sorted(balances) and balances[-1] > balances[0]  # S never paid out of pocket
    for node, peer in ((a, s), (s, a), (s, b), (b, s)):
        assert channel_with(node, peer)["state"] == "CHANNELD_NORMAL"
    assert not s.daemon.is_in_log("internal error")


def test_the_same_onion_on_a_second_channel_is_a_new_htlc_not_a_replay(node_factory, bitcoind,
                                                                       plugin_path):
    """A's two channels to S each number their HTLCs from 0: the first HTLC on the second
    channel has the first one's peer, HTLC id, amount, expiry and (one onion) shared secret.
    S must not take it for the first (cancelled) HTLC: it holds it and delivers it."""
    a, s, b = node_factory.line_graph(3, opts=[{"may_reconnect": True}, opts(plugin_path),
                                               {"may_reconnect": True}], wait_for_announce=True)
    a.fundwallet(10**7)
    a.rpc.fundchannel(s.info["id"], 10**6)
    bitcoind.generate_block(6)
    sync_blockheight(bitcoind, [a, s, b])
    wait_for(lambda: [c["state"] for c in a.rpc.listpeerchannels(s.info["id"])["channels"]]
             == ["CHANNELD_NORMAL"] * 2)
    first, second = (c["short_channel_id"]
                     for c in a.rpc.listpeerchannels(s.info["id"])["channels"])
    payment_hash, onion = held_payment_onion(a, s, b, "two channels")

    send_part(a, s, onion, payment_hash, 1, channel=first)
    wait_for(lambda: (held(s, payment_hash) or {}).get("state") == "held")
    call(s, "asyncln-cancel", payment_hash=payment_hash)
    assert outcome(a, payment_hash, 1) == failures.TEMPORARY_TRAMPOLINE_FAILURE

    send_part(a, s, onion, payment_hash, 2, channel=second)  # HTLC id 0 again, same onion
    wait_for(lambda: (held(s, payment_hash) or {}).get("state") == "held")
    assert held(s, payment_hash)["channel"] == second
    deliver(s, b)
    assert outcome(a, payment_hash, 2) == "complete"
    assert b.rpc.listinvoices(payment_hash=payment_hash)["invoices"][0]["status"] == "paid"
    wait_for(lambda: all(c["htlcs"] == [] for n in (a, s) for c in n.rpc.listpeerchannels()["channels"]))
    for c in a.rpc.listpeerchannels()["channels"] + s.rpc.listpeerchannels()["channels"]:
        assert c["state"] == "CHANNELD_NORMAL"
