"""The operator's view: help, discovery, errors, poll and cancel on real nodes."""

import pytest
from helpers import call, held, held_for_payer, opts, wait_for_terms, wait_status
from pyln.client import RpcError

from asyncln.errors import Code
from asyncln.features import FEATURE_BIT, has_feature


def test_help_feature_bit_and_discovery(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    usage = {h["command"].split()[0]: h["command"] for h in s.rpc.help()["help"]}
    assert usage["asyncln-pay"].startswith(
        "asyncln-pay invstring [trampoline] [maxfee_msat] [max_hold_blocks]")
    assert "offline recipient" in usage["asyncln-pay"]
    for name in ("asyncln-listpays", "asyncln-listheld", "asyncln-poll", "asyncln-cancel",
                 "asyncln-getinfo"):
        assert name in usage
    assert has_feature(a.rpc.listpeers(s.info["id"])["peers"][0]["features"])
    assert has_feature(a.rpc.listnodes(s.info["id"])["nodes"][0]["features"])

    info = call(s, "asyncln-getinfo")
    assert info["feature_bit"] == FEATURE_BIT
    assert info["options"]["poll_blocks"] == 6 and info["options"]["safety_blocks"] == 6

    wait_for_terms(a, s)
    inv = b.rpc.invoice(10_000, "auto", "auto trampoline")
    b.stop()
    started = call(a, "asyncln-pay", invstring=inv["bolt11"])
    assert started["trampoline"] == s.info["id"]


def test_rpc_errors_have_codes(node_factory, plugin_path):
    lonely = node_factory.get_node(options={"plugin": plugin_path})
    other = node_factory.get_node(options={"plugin": plugin_path})
    inv = other.rpc.invoice(1000, "x", "x")["bolt11"]
    with pytest.raises(RpcError) as none:
        call(lonely, "asyncln-pay", invstring=inv)
    assert none.value.error["code"] == 2121
    with pytest.raises(RpcError) as bad:
        call(lonely, "asyncln-pay", invstring="lnbcrt1garbage")
    assert bad.value.error["code"] == 2123
    with pytest.raises(RpcError) as unknown:
        call(lonely, "asyncln-cancel", payment_hash="00" * 32)
    assert unknown.value.error["code"] == Code.UNKNOWN_PAYMENT


def test_operator_poll_and_cancel(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    inv = held_for_payer(a, s, b)
    before = held(s, inv["payment_hash"])["attempts"]
    polled = call(s, "asyncln-poll", payment_hash=inv["payment_hash"])["held"][0]
    assert polled["attempts"] == before + 1 and polled["state"] == "held"

    cancelled = call(s, "asyncln-cancel", payment_hash=inv["payment_hash"])
    assert cancelled["state"] == "failed"
    assert "cancelled" in wait_status(a, inv["payment_hash"], "failed")["reason"]
    with pytest.raises(RpcError) as again:
        call(s, "asyncln-cancel", payment_hash=inv["payment_hash"])
    assert again.value.error["code"] == Code.ALREADY_RESOLVED
