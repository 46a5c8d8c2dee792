"""Issue 12 item 6 on real nodes: getinfo's counters, and what bookkeeper shows for a delivery."""

from helpers import call, held, held_for_payer, opts, wait_status
from pyln.testing.utils import wait_for


def test_counters_and_bookkeeper_after_a_delivery(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    inv = held_for_payer(a, s, b)
    incoming = held(s, inv["payment_hash"])["incoming_msat"]
    counters = call(s, "asyncln-getinfo")["counters"]
    assert (counters["payments_open"], counters["held_now_msat"]) == (1, incoming)

    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    wait_status(a, inv["payment_hash"], "complete")
    wait_for(lambda: held(s, inv["payment_hash"])["state"] == "complete")
    counters = call(s, "asyncln-getinfo")["counters"]
    assert counters["payments_delivered"] == 1 and counters["held_now_msat"] == 0
    assert counters["fees_earned_msat"] == incoming - 100_000  # B is S's direct peer: no route fees
    assert counters["wake_to_paid"]["deliveries"] == 1
    assert 0 <= counters["wake_to_paid"]["median_seconds"] < 60

    # S is the final hop of A's onion and B's payer: two invoice entries, no forward.
    def events():
        return [e for e in s.rpc.call("bkpr-listaccountevents")["events"]
                if e.get("payment_id") == inv["payment_hash"]]
    wait_for(lambda: len(events()) >= 2)
    assert {e["tag"] for e in events()} == {"invoice"}
    assert sum(e["credit_msat"] for e in events()) == incoming
    assert sum(e["debit_msat"] for e in events()) == 100_000
    assert s.rpc.listforwards()["forwards"] == []
