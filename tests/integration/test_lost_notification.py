"""Issue 11.7 on real lightningd: what a holder that missed ``sendpay_failure`` can still read.

For a ``sendonion`` attempt given the onion's ``shared_secrets``, lightningd
decodes the reply, stores the code without the erring node, and afterwards
shows nothing: ``listsendpays`` has no failure code and ``waitsendpay`` says
"Payment failure reason unknown". Without them it keeps the reply as
``erroronion``, which S decodes with the secrets it saved
(``lightningd.onion_failure``): the code and its data survive.
"""

import hashlib
import os

import pytest
from coincurve import PrivateKey
from helpers import opts
from pyln.client import RpcError
from test_bad_input import stream

from asyncln import failures
from asyncln.lightningd import onion_failure
from asyncln.record import TrampolineRecord

ELSEWHERE = PrivateKey(bytes([9]) * 32).public_key.format().hex()
DELAY = 200


def refused_by_s(a, s, shared_secrets: bool):
    """A sends S a clear record with too little fee: S refuses with #836's NODE|26."""
    expiry = a.rpc.getinfo()["blockheight"] + 1 + DELAY
    record = TrampolineRecord(next_node=ELSEWHERE, amount_msat=100_000, final_cltv_delta=18,
                              payment_secret="22" * 32, total_msat=100_000, please_poll=True)
    payment_hash = hashlib.sha256(os.urandom(32)).hexdigest()
    made = a.rpc.createonion(hops=[{"pubkey": s.info["id"],
                                    "payload": stream(100_500, expiry, record.encode())}],
                             assocdata=payment_hash)
    a.rpc.call("sendonion", {
        "onion": made["onion"], "payment_hash": payment_hash, "partid": 1, "groupid": 1,
        "first_hop": {"id": s.info["id"], "amount_msat": 100_500, "delay": DELAY},
        **({"shared_secrets": made["shared_secrets"]} if shared_secrets else {})})
    with pytest.raises(RpcError):
        a.rpc.call("waitsendpay", {"payment_hash": payment_hash, "partid": 1, "groupid": 1,
                                   "timeout": 30})
    [part] = a.rpc.listsendpays(payment_hash=payment_hash)["payments"]
    assert part["status"] == "failed" and "failcode" not in part
    return payment_hash, part, made["shared_secrets"]


def test_with_our_own_secrets_the_reply_outlives_the_notification(node_factory, plugin_path):
    a, s = node_factory.line_graph(2, opts=opts(plugin_path))
    _, part, secrets = refused_by_s(a, s, shared_secrets=False)
    assert "erroronion" in part
    saved = {"partid": 1, "shared_secrets": secrets, "destination": s.info["id"]}
    decoded = onion_failure(part, saved)
    assert decoded["failcode"] == failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT
    assert decoded["erring_index"] == 1 and decoded["erring_node"] == s.info["id"]
    assert len(bytes.fromhex(decoded["raw_message"])) == 12  # the terms are there


def test_with_lightningds_secrets_nothing_outlives_the_notification(node_factory, plugin_path):
    """Why S keeps the secrets itself (docs/PROTOCOL.md, 'Known problems')."""
    a, s = node_factory.line_graph(2, opts=opts(plugin_path))
    payment_hash, part, _ = refused_by_s(a, s, shared_secrets=True)
    assert "erroronion" not in part
    with pytest.raises(RpcError) as e:
        a.rpc.call("waitsendpay", {"payment_hash": payment_hash, "partid": 1, "groupid": 1,
                                   "timeout": 0})
    assert "failcode" not in (e.value.error.get("data") or {}), e.value.error
