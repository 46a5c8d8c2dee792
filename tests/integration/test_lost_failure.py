"""Issue 11.7 on real lightningd: what a holder that missed ``sendpay_failure`` can still read.

lightningd stores a failed part's failure code, erring index and erring node,
but not the failure's data, and shows them only in ``waitsendpay``'s error
(``listsendpays`` has no failure code). ``Node.failure_of`` relies on this.
"""

import hashlib
import os

import pytest
from coincurve import PrivateKey
from helpers import opts, send_failing
from pyln.client import RpcError
from test_bad_input import stream

from asyncln import failures
from asyncln.lightningd import judge_failure
from asyncln.record import TrampolineRecord

ELSEWHERE = PrivateKey(bytes([9]) * 32).public_key.format().hex()


def test_a_failed_parts_code_outlives_its_notification(node_factory, plugin_path):
    a, s = node_factory.line_graph(2, opts=opts(plugin_path))
    delay = 200
    expiry = a.rpc.getinfo()["blockheight"] + 1 + delay
    record = TrampolineRecord(next_node=ELSEWHERE, amount_msat=100_000, final_cltv_delta=18,
                              payment_secret="22" * 32, total_msat=100_000, please_poll=True)
    payment_hash = hashlib.sha256(os.urandom(32)).hexdigest()
    # Too little fee: S refuses with #836's trampoline_fee_or_expiry_insufficient.
    code, raw = send_failing(a, s, stream(100_500, expiry, record.encode()), 100_500, delay,
                             payment_hash)
    assert code == failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT and raw

    [part] = a.rpc.listsendpays(payment_hash=payment_hash)["payments"]
    assert part["status"] == "failed" and "failcode" not in part and "erroronion" not in part
    with pytest.raises(RpcError) as e:
        a.rpc.call("waitsendpay", {"payment_hash": payment_hash, "timeout": 0,
                                   "partid": part.get("partid", 0), "groupid": part["groupid"]})
    data = e.value.error["data"]
    assert data["failcode"] == code and data["erring_index"] == 1
    assert "raw_message" not in data  # the terms are gone: only the code is left
    failed = judge_failure(data, e.value.error["message"])
    assert failed.holder_failure == (1, f"{code:04x}")
