"""Soaks under fixed seeds: async payments while payer, holder and payee are killed at random.

Every payment must end complete with the invoice paid, or failed with it
unpaid; nothing stays pending; the holder never ends poorer; no channel is
force-closed.
"""

import hashlib
import random
import time

from helpers import call, channel_with, drop_torn_plugin_io, held, opts, say, wait_for_terms
from pyln.client import RpcError
from pyln.testing.utils import sync_blockheight, wait_for

SEED = 20260627
PAYMENTS = 20
AMOUNT_MSAT = 20_000
KILL_A_AFTER_PAY = 4        # the payment after which A dies at once
KILL_S_IN_FLIGHT = 11       # the payment after which S dies at once, B online
B_AWAY = (3, 7)             # B is stopped before this payment and back before that one
FINAL = ("complete", "failed")

DELIVERY_SEED = 20261207
DELIVERY_ROUNDS = 6         # each: B away, two payments held, then a disturbance at delivery
BURST = (4, 12)             # blocks mined while a node is down: below S's safety margin + hold


def _within(predicate, seconds):
    """True as soon as predicate holds, False after ``seconds``."""
    deadline = time.time() + seconds
    while True:
        if predicate():
            return True
        if time.time() > deadline:
            return False
        time.sleep(0.25)


class Soak:
    """A, S, B in a line; kills, restarts and blocks, logged; the money checks at the end."""

    def __init__(self, node_factory, bitcoind, plugin_path):
        self.bitcoind = bitcoind
        a, s, b = node_factory.line_graph(3, opts=[
            opts(plugin_path, may_fail=True),
            opts(plugin_path, may_fail=True, **{"asyncln-max-held-per-peer": 50}),
            opts(plugin_path, may_fail=True)], wait_for_announce=True)
        self.a, self.s, self.b = a, s, b
        self.nodes = {"A": a, "S": s, "B": b}
        self.up = {"A", "S", "B"}
        self.log = []
        self.invoices = []
        self.start_balance = self.s_total()
        self.began = time.time()

    def live(self):
        return [self.nodes[n] for n in "ASB" if n in self.up]

    @staticmethod
    def linked(x, y):
        ch = channel_with(x, y)
        return ch["state"] == "CHANNELD_NORMAL" and ch["peer_connected"]

    def reconnect(self):
        a, s, b = self.a, self.s, self.b
        pairs = [(a, s)] if {"A", "S"} <= self.up else []
        if {"B", "S"} <= self.up:
            pairs.append((b, s))
        for x, y in pairs:
            wait_for(lambda: self.connect(x, y))
        for x, y in pairs:
            wait_for(lambda: self.linked(x, y) and self.linked(y, x))

    @staticmethod
    def connect(x, y):
        """False when the call raced the peers' own reconnection ("disconnected during
        connection"): the caller tries again."""
        try:
            x.rpc.connect(y.info["id"], "localhost", y.port)
        except RpcError:
            return False
        return True

    def kill9(self, name, burst=0):
        """kill -9, ``burst`` blocks mined while it is down, then start it again."""
        self.log.append(f"kill -9 {name}" + (f", mine {burst} while down" if burst else ""))
        self.nodes[name].daemon.kill()
        drop_torn_plugin_io(self.nodes[name])
        self.up.discard(name)
        if burst:
            self.mine(burst)
        self.nodes[name].start()
        self.up.add(name)
        self.reconnect()

    def stop_b(self):
        self.log.append("stop B")
        self.b.stop()
        self.up.discard("B")

    def start_b(self, connect=True):
        self.log.append("start B")
        self.b.start()
        self.up.add("B")
        if connect:
            self.reconnect()

    def mine(self, n):
        self.log.append(f"mine {n}")
        self.bitcoind.generate_block(n)
        sync_blockheight(self.bitcoind, self.live())

    def s_total(self):
        return sum(c["to_us_msat"] for c in self.s.rpc.listpeerchannels()["channels"])

    def new_invoice(self):
        inv = self.b.rpc.invoice(AMOUNT_MSAT, f"soak{len(self.invoices)}",
                                 f"soak {len(self.invoices)}")
        self.invoices.append(inv)
        return inv

    def pay(self, inv):
        a, s = self.a, self.s
        assert {"A", "S"} <= self.up
        wait_for(lambda: self.linked(a, s))
        wait_for_terms(a, s)
        started = call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
        assert started["payment_hash"] == inv["payment_hash"]
        return started

    def statuses(self):
        return {p["payment_hash"]: p for p in call(self.a, "asyncln-listpays")["pays"]}

    def invoice_status(self, inv):
        b = self.b
        return b.rpc.listinvoices(payment_hash=inv["payment_hash"])["invoices"][0]["status"]

    def settle(self):
        """Mine in small steps until every payment on A is complete or failed."""
        mined = 0
        while not _within(lambda: all(p["status"] in FINAL for p in self.statuses().values()), 5):
            if mined >= 80:
                open_ones = {h[:8]: p["status"] for h, p in self.statuses().items()
                             if p["status"] not in FINAL}
                raise AssertionError(f"still open after {mined} blocks: {open_ones}")
            self.mine(3)
            mined += 3
        return mined

    def finish(self):
        """Settle, retry what failed unpaid, settle again; then every money check."""
        a, s, b = self.a, self.s, self.b
        say(f"{len(self.invoices)} payments sent in {time.time() - self.began:.0f}s: "
            + "; ".join(self.log))
        if "B" not in self.up:
            self.start_b(connect=False)
        self.reconnect()
        mined = self.settle()
        pays = self.statuses()
        assert len(pays) == len(self.invoices)
        retried = []
        for inv in self.invoices:
            if pays[inv["payment_hash"]]["status"] == "failed" and self.invoice_status(inv) == "unpaid":
                retried.append((inv["payment_hash"][:8], pays[inv["payment_hash"]]["reason"]))
                self.pay(inv)  # a retry is accepted
        mined += self.settle()
        say(f"settled after {mined} blocks; retried {len(retried)}: {retried}")

        # Every payment: complete, paid, proof of payment -- or failed and unpaid.
        pays = self.statuses()
        summary = {}
        for inv in self.invoices:
            pay_ = pays[inv["payment_hash"]]
            paid = self.invoice_status(inv)
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
        end_balance = self.s_total()
        assert end_balance >= self.start_balance, (self.start_balance, end_balance)

        # No force-close anywhere.
        for name, node in self.nodes.items():
            for c in node.rpc.listpeerchannels()["channels"]:
                assert c["state"] == "CHANNELD_NORMAL", (name, c["state"])
            assert not node.daemon.is_in_log("Peer permanent failure"), name
            assert not node.daemon.is_in_log("ONCHAIN"), name
        lingering = [p for p in a.rpc.listsendpays()["payments"] if p["status"] == "pending"]
        say(f"S earned {end_balance - self.start_balance} msat; lightningd parts still pending "
            f"on A: {len(lingering)}; total {time.time() - self.began:.0f}s")


def test_soak_kill9_payer_holder_payee(node_factory, bitcoind, plugin_path):
    rng = random.Random(SEED)
    soak = Soak(node_factory, bitcoind, plugin_path)
    invoices = [soak.new_invoice() for _ in range(PAYMENTS)]
    b_back_at = None

    for i, inv in enumerate(invoices):
        if "B" not in soak.up and b_back_at is not None and i >= b_back_at:
            soak.start_b()
        if i == B_AWAY[0] and "B" in soak.up:
            soak.stop_b()  # at least one stretch of held payments, whatever the dice say
            b_back_at = B_AWAY[1]
        # A random disturbance before the payment.
        roll = rng.random()
        if roll < 0.55:
            action = rng.choice(["kill A", "kill S", "kill B", "stop B", "mine"])
            if action == "kill A":
                soak.kill9("A")
            elif action == "kill S":
                soak.kill9("S")
            elif action == "kill B" and "B" in soak.up:
                soak.kill9("B")
            elif action == "stop B" and "B" in soak.up:
                soak.stop_b()
                b_back_at = i + rng.randint(2, 5)
            elif action == "mine":
                soak.mine(rng.randint(1, 6))
        soak.log.append(f"pay {i} (B {'up' if 'B' in soak.up else 'down'})")
        soak.pay(inv)
        if i == KILL_A_AFTER_PAY:
            soak.kill9("A")
        elif i == KILL_S_IN_FLIGHT:
            if "B" not in soak.up:
                soak.start_b()
                soak.log.append(f"pay {i} was sent with B down; S dies once B is back")
            soak.kill9("S")
    soak.finish()


def test_soak_restarts_around_delivery_with_block_bursts(node_factory, bitcoind, plugin_path):
    """Issue 11.7's soak: S and B killed or restarted around delivery, blocks mined while
    one is down (seed A: S back behind the tip; seed B: B back past its fulfil deadline).
    Ends with every channel CHANNELD_NORMAL."""
    rng = random.Random(DELIVERY_SEED)
    soak = Soak(node_factory, bitcoind, plugin_path)
    s = soak.s
    invoices = [soak.new_invoice() for _ in range(2 * DELIVERY_ROUNDS)]
    for round_ in range(DELIVERY_ROUNDS):
        these = invoices[2 * round_:2 * round_ + 2]
        soak.stop_b()
        for inv in these:
            soak.log.append(f"pay {inv['payment_hash'][:8]} (B down)")
            soak.pay(inv)
        wait_for(lambda: all((held(s, inv["payment_hash"]) or {}).get("state") == "held"
                             for inv in these))
        action = rng.choice(["S dies as it delivers", "S back behind the tip",
                             "B back past its deadline", "both"])
        soak.log.append(f"round {round_}: {action}")
        if action == "S dies as it delivers":
            soak.start_b()                 # S wakes and delivers ...
            soak.kill9("S")                # ... and dies at once
        elif action == "S back behind the tip":
            s.daemon.kill()                # S down while the chain moves on
            drop_torn_plugin_io(s)
            soak.up.discard("S")
            soak.mine(rng.randint(*BURST))
            s.start()                      # lightningd catches up from its stored height
            soak.up.add("S")
            burst = rng.randint(*BURST)    # and more blocks S's lightningd has not read yet
            soak.log.append(f"mine {burst} unseen, B back at once")
            soak.bitcoind.generate_block(burst)
            soak.start_b()                 # S must wait for the tip before it delivers
        else:
            soak.start_b()
            wait_for(lambda: any(soak.invoice_status(inv) == "paid" for inv in these))
            soak.kill9("B", burst=rng.randint(*BURST))  # B fulfilled, then away for a burst
            if action == "both":
                soak.kill9("S", burst=rng.randint(*BURST))
        soak.mine(rng.randint(1, 3))
    soak.finish()
