"""Issue 11.7: a lost ``sendpay_failure`` no longer loses the next holder's #836 failure.

When S judges an attempt from lightningd's records instead (``check_attempt``),
``listsendpays`` shows only ``failed``; ``waitsendpay`` on that part answers at
once with the failure code, erring index and node lightningd stored. S reads
it as it reads the notification, so R's give-up still goes upstream at once.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyln.client import RpcError
from test_review_issue7 import ARRIVAL, PAYMENT_HASH, R, X, forwarding_to_r, sendpay_failure, via_x

from asyncln import failures, hold
from asyncln.lightningd import Failed, judge_failure
from asyncln.states import HoldState


def lost_failure(shell, send, error):
    """sendpay_failure never came; lightningd shows the part failed and waitsendpay says ``error``."""
    part = {"payment_hash": PAYMENT_HASH, "partid": send.partid, "groupid": 1, "status": "failed",
            "created_at": 0, "amount_sent_msat": 1}
    shell.rpc.answers["listsendpays"] = {"payments": [part]}
    asked = []
    plain = shell.rpc.call

    def call(method, params=None):
        if method == "waitsendpay":
            asked.append(params)
            if error is None:
                return {}
            raise RpcError(method, params, error)
        return plain(method, params)
    shell.rpc.call = call
    actions = shell.check_attempt(PAYMENT_HASH, send.partid)
    assert asked == [{"payment_hash": PAYMENT_HASH, "timeout": 0, "partid": send.partid,
                      "groupid": 1}]
    return actions


@pytest.mark.parametrize("failcode", sorted(failures.TRAMPOLINE_FAILURES))
def test_the_next_holders_failure_is_passed_upstream_without_the_notification(failcode):
    shell, send = forwarding_to_r(via_x(), sent_at=ARRIVAL + 2)
    stored = sendpay_failure(send, failcode, R, 2)
    del stored["data"]["raw_message"]  # lightningd does not keep it for a part that failed earlier
    actions = lost_failure(shell, send, stored)
    held = shell.relay.held[PAYMENT_HASH]
    assert held.state == HoldState.FAILED
    assert held.failure_message == f"{failcode:04x}"
    [fail] = [a for a in actions if isinstance(a, hold.FailIncoming)]
    assert fail.failure_message == f"{failcode:04x}"


def test_a_trampoline_code_from_a_routing_node_still_does_not_end_the_hold():
    shell, send = forwarding_to_r(via_x(), sent_at=ARRIVAL + 2)
    lost_failure(shell, send, sendpay_failure(send, failures.TEMPORARY_TRAMPOLINE_FAILURE, X, 1))
    assert shell.relay.held[PAYMENT_HASH].state == HoldState.HELD


@pytest.mark.parametrize("error", [
    None,                                                           # answered: nothing stored
    {"code": -32601, "message": "Unknown command 'waitsendpay'"},  # no data
    {"code": 202, "message": "Malformed error reply",               # lightningd could not read it
     "data": {"payment_hash": PAYMENT_HASH, "onionreply": "00" * 32}},
])
def test_without_a_stored_code_the_listsendpays_verdict_stands(error):
    shell, send = forwarding_to_r(via_x(), sent_at=ARRIVAL + 2)
    lost_failure(shell, send, error)
    held = shell.relay.held[PAYMENT_HASH]
    assert held.state == HoldState.HELD and held.last_error == "the attempt failed"


def test_a_pending_part_is_not_asked_about():
    shell, send = forwarding_to_r(via_x(), sent_at=ARRIVAL + 2)
    shell.rpc.answers["listsendpays"] = {"payments": [
        {"payment_hash": PAYMENT_HASH, "partid": send.partid, "groupid": 1, "status": "pending"}]}
    shell.check_attempt(PAYMENT_HASH, send.partid)
    assert "waitsendpay" not in [m for m, _ in shell.rpc.calls]


def test_a_permanent_failure_names_the_node_that_refused():
    failed = judge_failure({"failcode": failures.PERM | 15, "erring_node": R, "erring_index": 2},
                           "unknown payment")
    assert failed == Failed("unknown payment", R, None)
    assert judge_failure({"failcode": 0x1007, "erring_node": R}, "temp") == Failed("temp")


@given(st.dictionaries(st.sampled_from(["failcode", "erring_index", "erring_node", "raw_message"]),
                       st.one_of(st.none(), st.integers(0, 0xFFFF), st.text(max_size=8))),
       st.text(max_size=20))
def test_judge_failure_reads_any_data_lightningd_might_send(data, message):
    failed = judge_failure(data, message)
    assert isinstance(failed, Failed)
