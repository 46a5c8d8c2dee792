"""`make demo`: two stories of asyncln on a local regtest, told in a few lines each.

lightningd's own logs go to files (named at the end of each story); only the
story reaches the terminal. Any failed step fails the demo (non-zero exit).
"""

import hashlib
import os

from pyln.testing.utils import wait_for

HOLD = {"asyncln-poll-blocks": 6, "asyncln-safety-blocks": 6, "asyncln-max-hold-blocks": 30,
        "may_reconnect": True}


def call(node, method, **params):
    return node.rpc.call(method, params)


def status(node, payment_hash):
    return call(node, "asyncln-listpays", payment_hash=payment_hash)["pays"][0]


def until(node, payment_hash, wanted):
    wait_for(lambda: status(node, payment_hash)["status"] == wanted)
    return status(node, payment_hash)


def held(node, payment_hash):
    found = call(node, "asyncln-listheld", payment_hash=payment_hash)["held"]
    return found[0] if found else {}


def proof(pay) -> str:
    digest = hashlib.sha256(bytes.fromhex(pay["payment_preimage"])).hexdigest()
    assert digest == pay["payment_hash"]
    return f"sha256(preimage) = {digest[:16]}... = payment_hash"


def logs(directory, names) -> str:
    return f"{os.path.join(directory, 'lightning-{' + ','.join(map(str, range(1, len(names) + 1))) + '}', 'log')}" \
           f" ({', '.join(names)})"


def test_1_the_recipient_goes_offline_and_s_holds(node_factory, plugin_path, directory, say):
    say("\n== Story 1: B goes offline; S holds A's payment until B is back ==")
    a, s, b = node_factory.line_graph(3, opts={**HOLD, "plugin": plugin_path}, wait_for_announce=True)
    invoice = b.rpc.invoice(100_000, "coffee", "a coffee")
    wait_for(lambda: any(t["id"] == s.info["id"] for t in call(a, "asyncln-getinfo")["trampolines"]))
    b.stop()
    say("1. B made an invoice for 100,000 msat and went offline.")
    paying = call(a, "asyncln-pay", invstring=invoice["bolt11"], trampoline=s.info["id"])
    h = paying["payment_hash"]
    say(f"2. A: asyncln-pay through S -> status {paying['status']}")
    wait_for(lambda: held(s, h).get("state") == "held")
    entry = held(s, h)
    say(f"3. S: asyncln-listheld -> state {entry['state']}, gives up at block {entry['give_up_height']}")
    say(f"   A: asyncln-listpays -> status {until(a, h, 'held')['status']}")
    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    say("4. B came back and connected to S.")
    done = until(a, h, "complete")
    say(f"5. A: status complete; {proof(done)}")
    say(f"   fee paid: {done['amount_sent_msat'] - done['amount_msat']} msat")
    wait_for(lambda: held(s, h).get("state") == "complete")
    paid = b.rpc.listinvoices(payment_hash=h)["invoices"][0]["status"]
    say(f"6. S: state {held(s, h)['state']}; B: invoice {paid}")
    assert paid == "paid"
    say(f"   logs: {logs(directory, 'ASB')}")


def test_2_the_recipient_is_offline_from_the_start(node_factory, plugin_path, directory, say):
    say("\n== Story 2: B is offline before anyone pays it; its Rod R serves its invoices ==")
    pool = 4
    (a, r) = node_factory.get_nodes(2, opts={**HOLD, "plugin": plugin_path})
    (b,) = node_factory.get_nodes(1, opts=[{**HOLD, "plugin": plugin_path, "asyncln-rod-pool": pool,
                                            "asyncln-rod": f"{r.info['id']}@localhost:{r.port}"}])
    node_factory.join_nodes([a, r], wait_for_announce=True)
    node_factory.join_nodes([r, b], announce_channels=False)
    b.rpc.disconnect(r.info["id"], force=True)   # the first top-up may beat the channel
    b.rpc.connect(r.info["id"], "localhost", r.port)

    def level():
        return next((d["level"] for d in call(r, "asyncln-getinfo")["rod_depositors"]
                     if d["id"] == b.info["id"]), 0)
    wait_for(lambda: level() == pool)
    code = call(b, "asyncln-code")["code"]
    b.stop()
    say(f"1. B deposited {level()} presigned invoices at R, gave out its code {code[:16]}..., went offline.")
    paying = call(a, "asyncln-pay", invstring=code, amount_msat=60_000, trampoline=r.info["id"],
                  note="thanks for the coffee")
    h = paying["payment_hash"]
    say(f"2. A: asyncln-pay <code> 60,000 msat with a note -> status {paying['status']}, "
        f"note sent {paying['note_sent']}")
    wait_for(lambda: held(r, h).get("state") == "held")
    say(f"3. R: asyncln-listheld -> state {held(r, h)['state']}; A: {until(a, h, 'held')['status']}")
    b.start()
    b.rpc.connect(r.info["id"], "localhost", r.port)
    say("4. B came back and connected to R.")
    done = until(a, h, "complete")
    payee = a.rpc.decode(done["bolt11"])["payee"]
    say(f"5. A: status complete; {proof(done)}; the invoice is signed by B: {payee == b.info['id']}")
    wait_for(lambda: call(b, "asyncln-listnotes")["notes"] != [])
    (note,) = call(b, "asyncln-listnotes")["notes"]
    say(f"6. B: invoice {note['invoice_status']}; asyncln-listnotes -> \"{note['note']}\"")
    assert payee == b.info["id"] and note["note"] == "thanks for the coffee"
    say(f"   logs: {logs(directory, 'ARB')}")
