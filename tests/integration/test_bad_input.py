"""Bad input reaching a real holding node: a clear failure, and nothing held."""

import hashlib
import os

import pytest
from helpers import call, held, held_for_payer, opts, send_failing, wait_for_terms, wait_status
from pyln.client import RpcError

from asyncln import failures
from asyncln.record import RECORD_TYPE, FinalPayload, TrampolineRecord
from asyncln.wire import encode_bigsize, encode_tlv_stream, encode_tu


def record_to(b, amount=100_000):
    return TrampolineRecord(next_node=b.info["id"], amount_msat=amount, final_cltv_delta=18,
                            payment_secret="22" * 32, total_msat=amount, please_poll=True)


def stream(amount, cltv, raw_record):
    tlvs = encode_tlv_stream({2: encode_tu(amount), 4: encode_tu(cltv), RECORD_TYPE: raw_record})
    return (encode_bigsize(len(tlvs)) + tlvs).hex()


def send_raw(a, s, payload_hex, amount_msat, delay):
    """Send one HTLC to S with a hand-made final payload; return S's failcode."""
    return send_failing(a, s, payload_hex, amount_msat, delay,
                        hashlib.sha256(os.urandom(32)).hexdigest())[0]


def test_bad_onion_records_are_refused(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(3, opts=opts(plugin_path), wait_for_announce=True)
    height = a.rpc.getinfo()["blockheight"]
    delay = 200
    expiry = height + 1 + delay
    good = record_to(b).encode()

    cases = [  # (final payload, HTLC amount, expected failcode)
        (stream(102_000, expiry, b"\x02" + good[1:]), 102_000, failures.INVALID_ONION_PAYLOAD),
        (stream(102_000, expiry, good[:-6]), 102_000, failures.INVALID_ONION_PAYLOAD),
        (stream(102_000, expiry, good + bytes([12, 1, 0])), 102_000, failures.INVALID_ONION_PAYLOAD),
        (stream(100_500, expiry, good), 100_500, failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT),
        (stream(103_000, expiry, good), 102_000, failures.FINAL_INCORRECT_HTLC_AMOUNT),
        (stream(102_000, expiry + 5, good), 102_000, failures.FINAL_INCORRECT_CLTV_EXPIRY),
    ]
    for payload_hex, amount, code in cases:
        assert send_raw(a, s, payload_hex, amount, delay) == code
    too_soon = FinalPayload(102_000, height + 1 + 20, record_to(b)).encode().hex()
    assert send_raw(a, s, too_soon, 102_000, 20) == failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT

    assert call(s, "asyncln-listheld")["held"] == []
    assert s.rpc.listdatastore(["asyncln", "heldpage"])["datastore"] == []
    assert s.rpc.getinfo()["id"] == s.info["id"]


def test_malformed_and_stray_custom_messages_are_ignored(node_factory, plugin_path):
    a, s = node_factory.line_graph(2, opts=opts(plugin_path))
    wait_for_terms(a, s)
    a.rpc.sendcustommsg(s.info["id"], "ae9d")  # query without its version
    s.daemon.wait_for_log("ignoring malformed asyncln message .* unsupported message version")
    a.rpc.sendcustommsg(s.info["id"], "aea1000101")  # status lacking its fields
    s.daemon.wait_for_log("ignoring malformed asyncln message .* lacks fields")
    stray = "aea1" + encode_tlv_stream({0: b"\x01", 2: bytes(32), 4: b"\x01", 6: b"\x05",
                                        8: b"\x05", 10: b"\x01"}).hex()
    a.rpc.sendcustommsg(s.info["id"], stray)
    s.daemon.wait_for_log("ignoring status for 0{64} from")
    assert call(s, "asyncln-getinfo")["pays"] == {"pending": 0, "held": 0, "complete": 0, "failed": 0}


def test_flood_beyond_max_held_is_refused(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(
        3, opts=[opts(plugin_path), opts(plugin_path, **{"asyncln-max-held": 1}), opts(plugin_path)],
        wait_for_announce=True)
    second = b.rpc.invoice(100_000, "second", "second")
    held_for_payer(a, s, b, label="first")
    call(a, "asyncln-pay", invstring=second["bolt11"], trampoline=s.info["id"])
    failed = wait_status(a, second["payment_hash"], "failed")
    assert "TEMPORARY_NODE_FAILURE" in failed["reason"]
    assert held(s, second["payment_hash"]) is None
    s.daemon.wait_for_log("asyncln-max-held reached")


def test_relay_off_neither_offers_nor_holds(node_factory, plugin_path):
    a, s, b = node_factory.line_graph(
        3, opts=[opts(plugin_path), opts(plugin_path, **{"asyncln-relay": False}), opts(plugin_path)],
        wait_for_announce=True)
    wait_for_terms(a, s)
    inv = b.rpc.invoice(10_000, "relay-off", "relay off")
    with pytest.raises(RpcError) as refused:
        call(a, "asyncln-pay", invstring=inv["bolt11"], trampoline=s.info["id"])
    assert refused.value.error["code"] == 2121
    height = a.rpc.getinfo()["blockheight"]
    payload_hex = FinalPayload(12_000, height + 201, record_to(b, 10_000)).encode().hex()
    assert send_raw(a, s, payload_hex, 12_000, 200) == failures.PERM | 15  # lightningd: unknown payment
    assert call(s, "asyncln-listheld")["held"] == []
