"""`make bench`, part 1: pass-through hook latency while asyncln holds 1,000 payments and polls.

plugin.py runs as a child process over stdio, as in bench_htlc.py. It is
made to hold HELD payments waiting for NODES distinct next nodes that are
all offline: every getroutes fails with "Unknown destination" after a short,
realistic delay, so a poll round takes a while. Then, in alternating rounds
within one run, the round trip of a plain final-hop htlc_accepted (a payment
asyncln only passes through) is timed

* idle: no poll round running, and
* loaded: right after a block_added that makes every held payment due, for
  as long as that round's route searches go on (the getroutes count grows
  during the measurement, which is checked and printed).

Only ratios are meaningful: the machine is shared and noisy, and nothing
here asserts on time.
"""

import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from factories import PAYER, node_id, payload, record  # noqa: E402
from plugin_harness import PluginProcess, RpcFailure, ScriptedRpc, htlc_params  # noqa: E402

HELD = 1_000
NODES = 100
ROUNDS = 5
IDLE_HOOKS = 500            # timed pass-through hooks per idle round
ROUTE_DELAY = 0.002         # what one failing getroutes costs lightningd, roughly
POLL_BLOCKS = 6
HEIGHT = 1000
CLTV_EXPIRY = 1500
TARGET_RATIO = 1.5
OPTIONS = {
    "asyncln-poll-blocks": POLL_BLOCKS,
    "asyncln-safety-blocks": 6,
    "asyncln-max-hold-blocks": 400,      # give up at 1400: far beyond the rounds below
    "asyncln-max-held": 10 * HELD,
    "asyncln-max-held-msat": 10**12,
    "asyncln-max-held-per-peer": 10 * HELD,
    "asyncln-max-held-msat-per-peer": 10**12,
}
PLAIN_PAYLOAD = "0802020102040203e8"  # amt_to_forward + outgoing_cltv_value, like any final hop
PLAIN = htlc_params("ab" * 32, PLAIN_PAYLOAD, 258, CLTV_EXPIRY, htlc_id=10**6)


class OfflineRoutes:
    """getroutes to an offline node: fails after ROUTE_DELAY; counts the calls as they come in."""

    def __init__(self):
        self.count = 0

    def __call__(self, params):
        self.count += 1
        time.sleep(ROUTE_DELAY)
        raise RpcFailure(205, "Unknown destination")


def held_hook(i):
    """The i-th held payment: its own hash, HTLC and onion secret; one of NODES next nodes."""
    rec = record(node=node_id(10 + i % NODES))
    return htlc_params(hashlib.sha256(i.to_bytes(8, "big")).hexdigest(),
                       payload(rec, cltv_expiry=CLTV_EXPIRY).hex(), 110_000, CLTV_EXPIRY,
                       htlc_id=i, peer_id=PAYER, shared_secret=f"{i:064x}")


def listheld(plugin):
    return plugin.request("asyncln-listheld", {}, timeout=60)["result"]["held"]


def settle(plugin, rpc, timeout=120):
    """Poll until all HELD payments are held, each has had a try, and no RPC call came for a poll."""
    deadline = time.monotonic() + timeout
    calls = -1
    while True:
        held = listheld(plugin)
        quiet = len(rpc.calls) == calls
        calls = len(rpc.calls)
        if (quiet and len(held) == HELD and all(h["state"] == "held" for h in held)
                and all(h.get("last_error") for h in held)):
            return held
        if time.monotonic() > deadline:
            raise TimeoutError(f"asyncln did not settle: {len(held)} held, {calls} RPC calls")
        time.sleep(0.05)


def pass_through_us(plugin):
    start = time.perf_counter()
    answer = plugin.request("htlc_accepted", PLAIN)
    elapsed = time.perf_counter() - start
    assert answer["result"] == {"result": "continue"}, answer
    return elapsed * 1e6


def percentile(samples, fraction):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main():
    directory = tempfile.mkdtemp(prefix="asyncln-bench-load-")
    rpc = ScriptedRpc(directory, blockheight=HEIGHT)
    routes = OfflineRoutes()
    rpc.handlers["getroutes"] = routes
    plugin = PluginProcess(directory=directory)
    try:
        plugin.start(rpc, OPTIONS)
        for i in range(HELD):
            plugin.send("htlc_accepted", held_hook(i))  # held: lightningd waits, no answer yet
        held = settle(plugin, rpc)
        assert len({h["next_node"] for h in held}) == NODES

        height = HEIGHT
        idle, loaded, round_routes, routes_at_start, routes_at_end = [], [], [], [], []
        for _ in range(ROUNDS):
            idle.append([pass_through_us(plugin) for _ in range(IDLE_HOOKS)])

            before = routes.count
            height += POLL_BLOCKS  # every held payment is due again
            rpc.blockheight = height
            plugin.notify("block_added", {"block_added": {"hash": "00" * 32, "height": height}})
            samples, deadline = [], time.monotonic() + 60
            routes_at_start.append(routes.count - before)
            while routes.count < before + NODES and time.monotonic() < deadline:
                samples.append(pass_through_us(plugin))
            routes_at_end.append(routes.count - before)  # the round ran while we timed
            loaded.append(samples)
            held = settle(plugin, rpc)
            round_routes.append(routes.count - before)
        # Each round really woke every held payment: one more try each.
        assert all(h["attempts"] == 1 + ROUNDS for h in held), {h["attempts"] for h in held}
    finally:
        plugin.close()
        shutil.rmtree(directory, ignore_errors=True)

    idle_us = statistics.median(statistics.median(s) for s in idle)
    loaded_us = statistics.median(statistics.median(s) for s in loaded)
    idle_p90 = percentile([x for s in idle for x in s], 0.9)
    loaded_p90 = percentile([x for s in loaded for x in s], 0.9)
    idle_max = max(x for s in idle for x in s)
    loaded_max = max(x for s in loaded for x in s)
    per_round = statistics.median(round_routes)
    distinct = len({p["destination"] for p in rpc.called("getroutes")[-round_routes[-1]:]})

    ratio = loaded_us / idle_us
    hooks = [len(x) for x in loaded]
    print()
    print(f"Pass-through htlc_accepted while asyncln holds {HELD:,} payments for {NODES} offline "
          f"nodes, {ROUNDS} rounds alternating idle / poll round, one run:")
    print(f"  {'idle (no poll round running)':30} median {idle_us:7.1f} us   p90 {idle_p90:7.1f} us"
          f"   max {idle_max / 1e3:5.1f} ms   ({IDLE_HOOKS} hooks a round)")
    print(f"  {'during a poll round':30} median {loaded_us:7.1f} us   p90 {loaded_p90:7.1f} us"
          f"   max {loaded_max / 1e3:5.1f} ms   ({min(hooks)}-{max(hooks)} hooks a round)")
    print(f"  {'ratio poll round / idle':30} median {ratio:7.2f}      p90 {loaded_p90 / idle_p90:7.2f}"
          f"      target <= {TARGET_RATIO} on the median  ({'met' if ratio <= TARGET_RATIO else 'MISSED'})")
    print(f"  {'':30} (the round ran while timed: each round had made at most {max(routes_at_start)} "
          f"getroutes when timing began, at least {min(routes_at_end)} when it ended)")
    print(f"  {'getroutes per poll round':30} {per_round:7.0f}   to {distinct} distinct nodes")
    print(f"  {'  per offline node':30} {per_round / NODES:7.2f}   target ~1 "
          f"(one probe per node, not one search per held payment)")
    print(f"  {'  per held payment':30} {per_round / HELD:7.2f}   target ~{NODES / HELD:.2f} "
          f"({NODES} nodes / {HELD:,} held)")


if __name__ == "__main__":
    main()
