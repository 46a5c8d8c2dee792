"""Issue 11.7: a lost ``sendpay_failure`` no longer loses the next holder's #836 failure.

When S judges an attempt from lightningd's records instead (``check_attempt``),
``listsendpays`` shows only ``failed``. For an attempt to a next holder S keeps
the onion's secrets, so lightningd keeps the reply as ``erroronion`` and S
decodes it; for a ``sendpay`` attempt, ``waitsendpay`` on that part answers at
once with the code lightningd stored. Either way S reads it as it reads the
notification, so R's give-up still goes upstream at once.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pyln.client import RpcError
from test_review_issue7 import ARRIVAL, PAYMENT_HASH, R, X, forwarding_to_r, sendpay_failure, via_x

from asyncln import failures, hold, sphinx
from asyncln.lightningd import Failed, judge_failure, onion_failure
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


# --- an attempt to a next holder: the reply is ours to decode, and lightningd keeps it ----------

X_SECRET, R_SECRET = bytes([0x0a]) * 32, bytes([0x0b]) * 32


def sent_to_r():
    """S sent its attempt to R via X with sendonion; the onion's secrets are S's own."""
    shell, send = forwarding_to_r(via_x(), sent_at=ARRIVAL + 2)
    shell.rpc.answers.update(createonion={"onion": "00" * 1366,
                                          "shared_secrets": [X_SECRET.hex(), R_SECRET.hex()]},
                             sendonion={"status": "pending"})
    assert shell.send_attempt(send) == []
    return shell, send


def reply_from(index, message: str) -> str:
    """The error onion as S receives it, sent by hop ``index`` (0: X, 1: R)."""
    secrets = [X_SECRET, R_SECRET][:index + 1]
    packet = sphinx.create_error(secrets[-1], bytes.fromhex(message))
    for secret in reversed(secrets[:-1]):
        packet = sphinx.wrap_error(secret, packet)
    return packet.hex()


TERMS = failures.trampoline_fee_or_expiry_insufficient(5000, 200, 300)


def test_the_attempts_secrets_are_saved_before_sendonion_and_not_given_to_lightningd():
    shell, send = sent_to_r()
    methods = [m for m, _ in shell.rpc.calls]
    saved = [p for m, p in shell.rpc.calls if m == "datastore" and p["key"][1] == "secrets"]
    assert len(saved) == 1 and methods.index("datastore", methods.index("createonion")) \
        < methods.index("sendonion")
    [sendonion] = [p for m, p in shell.rpc.calls if m == "sendonion"]
    assert "shared_secrets" not in sendonion


def test_an_attempt_whose_secrets_cannot_be_saved_is_not_sent():
    shell, send = forwarding_to_r(via_x(), sent_at=ARRIVAL + 2)
    shell.rpc.answers["createonion"] = {"onion": "00" * 1366,
                                        "shared_secrets": [X_SECRET.hex(), R_SECRET.hex()]}
    shell.rpc.fail.add("datastore")
    with pytest.raises(OSError):  # the worker hands this to relay.action_failed
        shell.send_attempt(send)
    assert "sendonion" not in [m for m, _ in shell.rpc.calls]


@pytest.mark.parametrize("message", [TERMS, failures.temporary_trampoline_failure()])
def test_the_next_holders_failure_from_the_notification_keeps_its_data(message):
    shell, send = sent_to_r()
    shell.attempt_failed({"code": 202, "message": "Malformed error reply", "data": {
        "payment_hash": PAYMENT_HASH, "partid": send.partid, "groupid": 1,
        "onionreply": reply_from(1, message)}})
    held = shell.relay.held[PAYMENT_HASH]
    assert held.state == HoldState.FAILED and held.failure_message == message


def test_the_next_holders_failure_from_listsendpays_keeps_its_data():
    """The notification was lost: listsendpays' erroronion carries R's whole failure."""
    shell, send = sent_to_r()
    shell.rpc.answers["listsendpays"] = {"payments": [
        {"payment_hash": PAYMENT_HASH, "partid": send.partid, "groupid": 1, "status": "failed",
         "erroronion": reply_from(1, TERMS)}]}
    actions = shell.check_attempt(PAYMENT_HASH, send.partid)
    held = shell.relay.held[PAYMENT_HASH]
    assert held.state == HoldState.FAILED and held.failure_message == TERMS
    assert [a.failure_message for a in actions if isinstance(a, hold.FailIncoming)] == [TERMS]
    assert "waitsendpay" not in [m for m, _ in shell.rpc.calls]


def test_a_trampoline_code_from_a_node_before_r_in_the_reply_does_not_end_the_hold():
    shell, send = sent_to_r()
    shell.attempt_failed({"code": 202, "message": "Malformed error reply", "data": {
        "payment_hash": PAYMENT_HASH, "partid": send.partid, "groupid": 1,
        "onionreply": reply_from(0, failures.temporary_trampoline_failure())}})
    assert shell.relay.held[PAYMENT_HASH].state == HoldState.HELD


def test_forgetting_the_hold_deletes_its_secrets():
    shell, _ = sent_to_r()
    shell.execute(hold.Forget(PAYMENT_HASH))
    assert ("deldatastore", {"key": ["asyncln", "secrets", PAYMENT_HASH]}) in shell.rpc.calls
    assert PAYMENT_HASH not in shell.onion_secrets


SAVED = {"partid": 3, "shared_secrets": [X_SECRET.hex(), R_SECRET.hex()], "destination": R}


def test_onion_failure_names_the_destination_only_for_the_last_hop():
    last = onion_failure({"partid": 3, "onionreply": reply_from(1, "400f")}, SAVED)
    assert (last["failcode"], last["erring_index"], last["erring_node"]) == (0x400F, 2, R)
    first = onion_failure({"partid": 3, "erroronion": reply_from(0, "1007")}, SAVED)
    assert (first["failcode"], first["erring_index"]) == (0x1007, 1) and "erring_node" not in first
    other_part = {"partid": 2, "onionreply": reply_from(1, "400f")}
    assert onion_failure(other_part, SAVED) == other_part


@given(st.dictionaries(st.sampled_from(["partid", "onionreply", "erroronion", "failcode"]),
                       st.one_of(st.integers(0, 5), st.text(max_size=20),
                                 st.binary(max_size=300).map(bytes.hex))),
       st.one_of(st.none(), st.just(SAVED),
                 st.fixed_dictionaries({"partid": st.integers(0, 5),
                                        "shared_secrets": st.lists(st.text(max_size=66)),
                                        "destination": st.text(max_size=5)})))
def test_onion_failure_never_raises(data, saved):
    out = onion_failure(data, saved)
    assert out == data or {"failcode", "erring_index", "raw_message"} <= set(out)
