"""Soak under a fixed seed: async payments while payer, holder and payee are killed at random.

Every payment must end complete with the invoice paid, or failed with it
unpaid; nothing stays pending; the holder never ends poorer; no channel is
force-closed.
"""

import hashlib
import random
import time

from helpers import call, channel_with, opts, say, wait_for_terms
from pyln.testing.utils import sync_blockheight, wait_for

SEED = 20260627
PAYMENTS = 20
AMOUNT_MSAT = 20_000
KILL_A_AFTER_PAY = 4        # the payment after which A dies at once
KILL_S_IN_FLIGHT = 11       # the payment after which S dies at once, B online
B_AWAY = (3, 7)             # B is stopped before this payment and back before that one
FINAL = ("complete", "failed")


def _within(predicate, seconds):
    """True as soon as predicate holds, False after ``seconds``."""
    deadline = time.time() + seconds
    while True:
        if predicate():
            return True
        if time.time() > deadline:
            return False
        time.sleep(0.25)


def test_soak_kill9_payer_holder_payee(node_factory, bitcoind, plugin_path):
    rng = random.Random(SEED)
    a, s, b = node_factory.line_graph(3, opts=[
        opts(plugin_path, may_fail=True),
        opts(plugin_path, may_fail=True, **{"asyncln-max-held-per-peer": 50}),
        opts(plugin_path, may_fail=True)], wait_for_announce=True)
    nodes = {"A": a, "S": s, "B": b}
    up = {"A", "S", "B"}
    log = []

    def live():
        return [nodes[n] for n in "ASB" if n in up]

    def linked(x, y):
        ch = channel_with(x, y)
        return ch["state"] == "CHANNELD_NORMAL" and ch["peer_connected"]

    def reconnect():
        pairs = [(a, s)] if {"A", "S"} <= up else []
        if {"B", "S"} <= up:
            pairs.append((b, s))
        for x, y in pairs:
            x.rpc.connect(y.info["id"], "localhost", y.port)
        for x, y in pairs:
            wait_for(lambda: linked(x, y) and linked(y, x))

    def kill9(name):
        log.append(f"kill -9 {name}")
        nodes[name].daemon.kill()
        nodes[name].start()
        reconnect()

    def stop_b():
        log.append("stop B")
        b.stop()
        up.discard("B")

    def start_b():
        log.append("start B")
        b.start()
        up.add("B")
        reconnect()

    def mine(n):
        log.append(f"mine {n}")
        bitcoind.generate_block(n)
        sync_blockheight(bitcoind, live())

    def s_total():
        return sum(c["to_us_msat"] for c in s.rpc.listpeerchannels()["channels"])

    def pay(inv):
        assert {"A", "S"} <= up
        wait_for(lambda: linked(a, s))
        wait_for_terms(a, s)
        started = call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
        assert started["payment_hash"] == inv["payment_hash"]
        return started

    def statuses():
        return {p["payment_hash"]: p for p in call(a, "asyncln-listpays")["pays"]}

    def invoice_status(inv):
        return b.rpc.listinvoices(payment_hash=inv["payment_hash"])["invoices"][0]["status"]

    start_balance = s_total()
    invoices = [b.rpc.invoice(AMOUNT_MSAT, f"soak{i}", f"soak {i}") for i in range(PAYMENTS)]
    b_back_at = None
    began = time.time()

    for i, inv in enumerate(invoices):
        if "B" not in up and b_back_at is not None and i >= b_back_at:
            start_b()
        if i == B_AWAY[0] and "B" in up:
            stop_b()  # at least one stretch of held payments, whatever the dice say
            b_back_at = B_AWAY[1]
        # A random disturbance before the payment.
        roll = rng.random()
        if roll < 0.55:
            action = rng.choice(["kill A", "kill S", "kill B", "stop B", "mine"])
            if action == "kill A":
                kill9("A")
            elif action == "kill S":
                kill9("S")
            elif action == "kill B" and "B" in up:
                kill9("B")
            elif action == "stop B" and "B" in up:
                stop_b()
                b_back_at = i + rng.randint(2, 5)
            elif action == "mine":
                mine(rng.randint(1, 6))
        log.append(f"pay {i} (B {'up' if 'B' in up else 'down'})")
        pay(inv)
        if i == KILL_A_AFTER_PAY:
            kill9("A")
        elif i == KILL_S_IN_FLIGHT:
            if "B" not in up:
                start_b()
                log.append(f"pay {i} was sent with B down; S dies once B is back")
            kill9("S")
    say(f"{PAYMENTS} payments sent in {time.time() - began:.0f}s: " + "; ".join(log))

    if "B" not in up:
        start_b()
    reconnect()

    def settle():
        """Mine in small steps until every payment on A is complete or failed."""
        mined = 0
        while not _within(lambda: all(p["status"] in FINAL for p in statuses().values()), 5):
            if mined >= 80:
                open_ones = {h[:8]: p["status"] for h, p in statuses().items()
                             if p["status"] not in FINAL}
                raise AssertionError(f"still open after {mined} blocks: {open_ones}")
            mine(3)
            mined += 3
        return mined

    mined = settle()
    pays = statuses()
    assert len(pays) == PAYMENTS
    retried = []
    for inv in invoices:
        if pays[inv["payment_hash"]]["status"] == "failed" and invoice_status(inv) == "unpaid":
            retried.append((inv["payment_hash"][:8], pays[inv["payment_hash"]]["reason"]))
            pay(inv)  # a retry is accepted
    mined += settle()
    say(f"settled after {mined} blocks; retried {len(retried)}: {retried}")

    # Every payment: complete, paid, proof of payment -- or failed and unpaid.
    pays = statuses()
    summary = {}
    for inv in invoices:
        pay_ = pays[inv["payment_hash"]]
        paid = invoice_status(inv)
        summary[inv["payment_hash"][:8]] = (pay_["status"], paid, pay_.get("reason"))
        if pay_["status"] == "complete":
            assert paid == "paid", summary
            assert hashlib.sha256(bytes.fromhex(pay_["payment_preimage"])).hexdigest() \
                == inv["payment_hash"]
        else:
            assert pay_["status"] == "failed", summary
            assert paid == "unpaid", summary
    say(f"outcomes: {summary}")

    # The holder has nothing open, every HTLC is resolved, and S is not poorer.
    wait_for(lambda: not [h for h in call(s, "asyncln-listheld")["held"]
                          if h["state"] in ("held", "forwarding")])
    for node in (a, s, b):
        wait_for(lambda: all(c["htlcs"] == [] for c in node.rpc.listpeerchannels()["channels"]))
    end_balance = s_total()
    assert end_balance >= start_balance, (start_balance, end_balance)

    # No force-close anywhere.
    for name, node in nodes.items():
        for c in node.rpc.listpeerchannels()["channels"]:
            assert c["state"] == "CHANNELD_NORMAL", (name, c["state"])
        assert not node.daemon.is_in_log("Peer permanent failure"), name
        assert not node.daemon.is_in_log("ONCHAIN"), name
    lingering = [p for p in a.rpc.listsendpays()["payments"] if p["status"] == "pending"]
    say(f"S earned {end_balance - start_balance} msat; lightningd parts still pending on A: "
        f"{len(lingering)}; total {time.time() - began:.0f}s")
