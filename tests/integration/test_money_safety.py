"""Issue 5 on real lightningd: replays across scid changes, stale heights, plugin death, load."""

import os

from helpers import (
    assert_proof_of_payment,
    call,
    channel_with,
    held,
    held_for_payer,
    opts,
    wait_for_terms,
    wait_status,
)
from pyln.testing.utils import sync_blockheight, wait_for

PLUGINS = os.path.join(os.path.dirname(__file__), "plugins")
HOLDER = os.path.join(PLUGINS, "hold_incoming.py")
ZEROCONF = os.path.join(PLUGINS, "zeroconf_accept.py")


def test_replay_after_a_zero_conf_channel_confirms(node_factory, bitcoind, plugin_path):
    """Item 1: S holds over an alias, the channel confirms, S dies with its attempt in flight."""
    a, s, b = node_factory.get_nodes(3, opts=[
        opts(plugin_path), opts(plugin_path, plugin=[plugin_path, ZEROCONF], may_fail=True),
        opts(plugin_path, plugin=[plugin_path, HOLDER])])
    node_factory.join_nodes([s, b], wait_for_announce=True)
    a.rpc.connect(s.info["id"], "localhost", s.port)
    a.fundwallet(10**7)
    a.rpc.fundchannel(s.info["id"], 10**6, mindepth=0)
    wait_for(lambda: channel_with(a, s)["state"] == "CHANNELD_NORMAL")
    alias = channel_with(s, a)["alias"]["local"]
    assert "short_channel_id" not in channel_with(s, a)  # not confirmed: only the alias

    inv = held_for_payer(a, s, b, label="zeroconf")
    assert held(s, inv["payment_hash"])["channel"] == alias

    bitcoind.generate_block(1)
    sync_blockheight(bitcoind, [a, s])
    wait_for(lambda: "short_channel_id" in channel_with(s, a))
    scid = channel_with(s, a)["short_channel_id"]
    assert scid != alias

    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    wait_for(lambda: call(b, "hold-incoming-count")["held"] == 1)
    assert held(s, inv["payment_hash"])["state"] == "forwarding"

    s.daemon.kill()
    s.start()
    wait_for(lambda: channel_with(s, a)["peer_connected"] and channel_with(s, b)["peer_connected"])
    # The replay names the real scid now, and is still the same HTLC.
    wait_for(lambda: held(s, inv["payment_hash"])["channel"] == scid)
    assert held(s, inv["payment_hash"])["state"] == "forwarding"
    assert not s.daemon.is_in_log("rejecting asyncln HTLC")
    assert call(b, "hold-incoming-release")["released"] == 1
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))
    wait_for(lambda: channel_with(a, s)["htlcs"] == [])
    assert channel_with(s, a)["state"] == "CHANNELD_NORMAL"


def test_holder_down_past_give_up_never_pays_late(node_factory, bitcoind, plugin_path):
    """Item 2: S restarts past the give-up height with B back: A fails, B is not paid."""
    a, s, b = node_factory.line_graph(3, opts=[opts(plugin_path), opts(plugin_path, may_fail=True),
                                               opts(plugin_path)], wait_for_announce=True)
    inv = held_for_payer(a, s, b)
    entry = held(s, inv["payment_hash"])
    s.stop()
    height = bitcoind.rpc.getblockcount()
    bitcoind.generate_block(entry["give_up_height"] - height + 2)
    sync_blockheight(bitcoind, [a])
    b.start()
    s.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    s.rpc.connect(a.info["id"], "localhost", a.port)
    failed = wait_status(a, inv["payment_hash"], "failed")
    assert "offline" in failed["reason"] or failed["reason"]
    assert held(s, inv["payment_hash"])["state"] == "failed"
    assert b.rpc.listinvoices(payment_hash=inv["payment_hash"])["invoices"][0]["status"] == "unpaid"
    assert s.rpc.listsendpays(payment_hash=inv["payment_hash"])["payments"] == []
    wait_for(lambda: channel_with(a, s)["htlcs"] == [])
    assert channel_with(a, s)["state"] == "CHANNELD_NORMAL"


def test_unimportant_warned_bad_options_keep_records(
        node_factory, plugin_path):
    """Item 5: a warning without important-plugin; refused options keep serving what is held."""
    a, s, b = node_factory.line_graph(3, opts=[opts(plugin_path), opts(plugin_path, may_fail=True),
                                               opts(plugin_path)], wait_for_announce=True)
    assert any("important-plugin" in w for w in call(s, "asyncln-getinfo")["warnings"])
    inv = held_for_payer(a, s, b)

    s.stop()
    s.daemon.opts["asyncln-poll-blocks"] = "0"
    s.start()
    info = call(s, "asyncln-getinfo")
    assert any("options refused" in w for w in info["warnings"])
    wait_for(lambda: channel_with(s, a)["peer_connected"] or
             s.rpc.connect(a.info["id"], "localhost", a.port))
    assert held(s, inv["payment_hash"])["state"] == "held"
    b.start()
    b.rpc.connect(s.info["id"], "localhost", s.port)
    assert_proof_of_payment(wait_status(a, inv["payment_hash"], "complete"))


def test_important_plugin_has_no_warning(node_factory, plugin_path):
    """Item 5: loaded as important-plugin, asyncln-getinfo is quiet about it."""
    options = opts(plugin_path)
    del options["plugin"]
    options["important-plugin"] = plugin_path
    node = node_factory.get_nodes(1, opts=[options])[0]
    info = call(node, "asyncln-getinfo")
    assert info["important_plugin"] is True
    assert not any("important-plugin" in w for w in info["warnings"])


def test_forwards_flow_while_a_poll_round_runs(node_factory, bitcoind, plugin_path):
    """Load: plain payments through S keep flowing while S polls many held payments."""
    a, s, b, c = node_factory.get_nodes(4, opts=opts(plugin_path, **{"asyncln-max-held-per-peer": 50}))
    node_factory.join_nodes([a, s, b], wait_for_announce=True)
    node_factory.join_nodes([s, c], wait_for_announce=True)
    wait_for(lambda: len(a.rpc.listchannels()["channels"]) == 6)
    wait_for_terms(a, s)
    invoices = [b.rpc.invoice(20_000, f"load{i}", "load") for i in range(15)]
    b.stop()
    for inv in invoices:
        call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
    wait_for(lambda: sum(h["state"] == "held" for h in call(s, "asyncln-listheld")["held"]) == 15)
    for i in range(3):
        bitcoind.generate_block(6)  # a poll round for all 15, in the worker
        sync_blockheight(bitcoind, [a, s, c])  # xpay's expiries must match C's height
        plain = c.rpc.invoice(10_000, f"plain{i}", "plain")
        assert a.rpc.xpay(plain["bolt11"])["payment_preimage"]
    sync_blockheight(bitcoind, [s])
    assert all(h["state"] == "held" for h in call(s, "asyncln-listheld")["held"])
