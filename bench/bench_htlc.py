"""`make bench`: htlc_accepted round-trip cost with asyncln loaded vs a bare pass-through plugin.

Both plugins run as child processes driven over stdio exactly as lightningd
drives them, in alternating rounds within one run, so machine noise hits
both alike. The number that matters is the ratio, not the microseconds.
"""

import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, ".."))

from plugin_harness import PluginProcess, ScriptedRpc, htlc_params  # noqa: E402

ROUNDS = 7
HOOKS_PER_ROUND = 500
PAYMENT_HASH = "ab" * 32
PLAIN_PAYLOAD = "0802020102040203e8"  # amt_to_forward + outgoing_cltv_value, like any final hop


def round_trip_us(plugin, params):
    start = time.perf_counter()
    for _ in range(HOOKS_PER_ROUND):
        answer = plugin.request("htlc_accepted", params)
        assert answer["result"] == {"result": "continue"}, answer
    return (time.perf_counter() - start) / HOOKS_PER_ROUND * 1e6


def main():
    directory = tempfile.mkdtemp(prefix="asyncln-bench-")
    rpc = ScriptedRpc(directory)
    asyncln = PluginProcess(directory=directory)
    asyncln.start(rpc)
    bare = PluginProcess(os.path.join(HERE, "passthrough_plugin.py"), directory)
    bare.start(rpc)
    final_hop = htlc_params(PAYMENT_HASH, PLAIN_PAYLOAD, 258, 1500)
    forward = dict(final_hop, onion=dict(final_hop["onion"], short_channel_id="1x2x3"))

    results = {"bare": [], "asyncln final hop": [], "asyncln forward": []}
    try:
        for _ in range(ROUNDS):
            results["bare"].append(round_trip_us(bare, final_hop))
            results["asyncln final hop"].append(round_trip_us(asyncln, final_hop))
            results["asyncln forward"].append(round_trip_us(asyncln, forward))
    finally:
        asyncln.close()
        bare.close()

    base = statistics.median(results["bare"])
    print(f"htlc_accepted round trip, median of {ROUNDS} rounds x {HOOKS_PER_ROUND} hooks, one run:")
    for name, samples in results.items():
        median = statistics.median(samples)
        print(f"  {name:18} {median:8.1f} us   ratio to bare pass-through {median / base:5.2f}")


if __name__ == "__main__":
    main()
