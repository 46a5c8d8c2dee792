"""Issue 11.7 on real lightningd: S delivers after a crash between sending and the HTLC's commit,
and S's deliveries never force a close."""

import os
import time

from asyncln.store import PAGED, decode_page, encode_page
from asyncln.wire import decode_bigsize, decode_tlv_stream
from helpers import (
    assert_proof_of_payment,
    call,
    channel_with,
    drop_torn_plugin_io,
    held,
    held_for_payer,
    opts,
    pay_status,
    wait_status,
)
from pyln.testing.utils import sync_blockheight, wait_for

# S's channeld waits this long before committing a change: S can be killed after its
# sendonion was recorded and before the HTLC reached a commitment (CLN #3916).
SLOW_COMMIT_MS = 5000


def no_force_close(*nodes):
    for node in nodes:
        for c in node.rpc.listpeerchannels()["channels"]:
            assert c["state"] == "CHANNELD_NORMAL", (node.info["id"], c["state"])
        assert not node.daemon.is_in_log("Peer permanent failure")


def test_holder_killed_between_sending_and_the_commit_still_delivers(
        node_factory, bitcoind, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=[
        opts(plugin_path), opts(plugin_path, may_fail=True, **{"commit-time": SLOW_COMMIT_MS}),
        opts(plugin_path)], wait_for_announce=True)
    assert call(s, "asyncln-getinfo")["synced"]  # getchaininfo answers through lightningd's RPC
    inv = held_for_payer(a, s, b)
    payment_hash = inv["payment_hash"]

    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    deadline = time.time() + 60
    while not s.rpc.listsendpays(payment_hash=payment_hash)["payments"]:
        assert time.time() < deadline, "S never sent"
        time.sleep(0.02)
    s.daemon.kill()  # kill -9, the HTLC not yet in any commitment
    drop_torn_plugin_io(s)

    del s.daemon.opts["commit-time"]
    s.start()
    s.rpc.connect(a.info["id"], "localhost", a.port)
    s.rpc.connect(b.info["id"], "localhost", b.port)
    wait_for(lambda: channel_with(s, a)["peer_connected"] and channel_with(s, b)["peer_connected"])

    # Lost at two heights (the restart's catch-up may already count as the second), held
    # again, and delivered beside the lost part: when B reconnects, or at the next poll.
    bitcoind.generate_block(1)
    sync_blockheight(bitcoind, [a, s, b])
    deadline = time.time() + 15
    while pay_status(a, payment_hash)["status"] != "complete" and time.time() < deadline:
        time.sleep(0.5)
    if pay_status(a, payment_hash)["status"] != "complete":
        bitcoind.generate_block(s.daemon.opts["asyncln-poll-blocks"])
        sync_blockheight(bitcoind, [a, s, b])
    assert_proof_of_payment(wait_status(a, payment_hash, "complete"))
    assert b.rpc.listinvoices(payment_hash=payment_hash)["invoices"][0]["status"] == "paid"
    parts = {p["partid"]: p["status"] for p in s.rpc.listsendpays(payment_hash=payment_hash)["payments"]}
    # The lost part stays pending; one later part went beside it, in its group, and completed.
    assert parts.pop(1) == "pending" and list(parts.values()).count("complete") == 1
    assert "pending" not in parts.values()
    assert held(s, payment_hash)["state"] == "complete"
    assert held(s, payment_hash)["lost_partids"] == [1]
    for x, y in ((a, s), (s, b)):
        wait_for(lambda: channel_with(x, y)["htlcs"] == [])  # part 1: pending with no HTLC (#3916)
    no_force_close(a, s, b)


def test_no_delivery_until_lightningd_has_reached_bitcoinds_tip(node_factory, bitcoind, plugin_path):
    """Soak seed A: blocks reach bitcoind and S's lightningd has not read them yet, with no
    getinfo warning. S waits, and its HTLC to B gets its expiry from the tip."""
    a, s, b = node_factory.line_graph(3, opts=[opts(plugin_path), opts(plugin_path),
                                               opts(plugin_path)], wait_for_announce=True)
    inv = held_for_payer(a, s, b)
    final_cltv = a.rpc.decode(inv["bolt11"])["min_final_cltv_expiry"]
    s.stop()
    s.daemon.opts["dev-bitcoind-poll"] = 30  # S's lightningd reads new blocks late
    s.start()
    s.rpc.connect(a.info["id"], "localhost", a.port)

    bitcoind.generate_block(8)
    tip = bitcoind.rpc.getblockcount()
    sync_blockheight(bitcoind, [a])
    assert s.rpc.getinfo()["blockheight"] < tip
    assert "warning_lightningd_sync" not in s.rpc.getinfo()  # what the old check relied on
    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)

    wait_for(lambda: s.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"]
             or s.rpc.getinfo()["blockheight"] == tip)
    assert s.rpc.getinfo()["blockheight"] == tip, "S sent while its lightningd was behind"
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))
    [out] = [h for h in s.rpc.listhtlcs()["htlcs"]
             if h["payment_hash"] == inv["payment_hash"] and h["direction"] == "out"]
    assert out["expiry"] >= tip + 1 + final_cltv
    bitcoind.generate_block(10)
    sync_blockheight(bitcoind, [a, s, b])
    no_force_close(a, s, b)


def test_the_payers_final_tlvs_reach_the_recipients_hook(node_factory, plugin_path):
    """A held record's final_tlvs (item 6 puts the amount commitment there) ride in B's
    final-hop payload beside the payment data, and B is paid."""
    recorder = os.path.join(os.path.dirname(__file__), "plugins", "record_payload.py")
    a, s, b = node_factory.line_graph(3, opts=[
        opts(plugin_path), opts(plugin_path, may_fail=True),
        opts(plugin_path, plugin=[plugin_path, recorder])], wait_for_announce=True)
    inv = held_for_payer(a, s, b)
    # The page that holds it (asyncln/store.py names pages with a secret of S's).
    key, page = next((e["key"], decode_page(e["string"]))
                     for e in s.rpc.listdatastore(["asyncln", PAGED["held"]])["datastore"]
                     if inv["payment_hash"] in decode_page(e["string"]))
    page[inv["payment_hash"]]["record"]["final_tlvs"] = [[66105, "c0ffee"], [66107, ""]]
    s.rpc.datastore(key=key, string=encode_page(page), mode="must-replace")
    s.restart()  # the record is read back from the datastore
    s.rpc.connect(a.info["id"], "localhost", a.port)
    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))
    [seen] = [p["payload"] for p in call(b, "recorded-payloads")["payloads"]
              if p["payment_hash"] == inv["payment_hash"]]
    raw = bytes.fromhex(seen)
    length, offset = decode_bigsize(raw)
    tlvs = decode_tlv_stream(raw[offset:offset + length], known_even=(2, 4, 8))
    assert tlvs[66105] == bytes.fromhex("c0ffee") and tlvs[66107] == b""
    assert tlvs[8][:32] == bytes.fromhex(b.rpc.decode(inv["bolt11"])["payment_secret"])
