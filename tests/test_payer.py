"""The paying side: amounts, expiries, onion hops and status transitions."""

import pytest
from factories import PAYMENT_HASH, RECIPIENT

from asyncln import failures, payer
from asyncln.messages import PaymentStatus
from asyncln.policy import Policy
from asyncln.record import RECORD_TYPE, TrampolineRecord, find_record
from asyncln.wire import decode_tlv_stream, decode_tu

INFO = Policy(poll_blocks=6, max_hold_blocks=1008, safety_blocks=144, fee_base_msat=1000,
              fee_ppm=1000, max_held_msat=10**9)
INVOICE = payer.Invoice("lnbcrt1...", PAYMENT_HASH, "22" * 32, RECIPIENT, 100_000, 18)
S = "02" + "55" * 32
X = "02" + "66" * 32


def hop(node_in, node_out, scid, amount_in, amount_out, cltv_in, cltv_out):
    return {"short_channel_id_dir": scid, "node_id_in": node_in, "node_id_out": node_out,
            "amount_in_msat": amount_in, "amount_out_msat": amount_out,
            "cltv_in": cltv_in, "cltv_out": cltv_out}


def test_hold_and_fee_choices():
    assert payer.hold_blocks(None, INFO) == 1008
    assert payer.hold_blocks(30, INFO) == 30
    assert payer.hold_blocks(5000, INFO) == 1008
    with pytest.raises(payer.PlanError):
        payer.hold_blocks(0, INFO)
    assert payer.default_maxfee(100_000, INFO) == 1100 + 1000 + 500
    assert payer.final_cltv_to_trampoline(INVOICE, 30, INFO) == 30 + 144 + 18 + 144


def test_trampoline_amount_keeps_total_fee_under_maxfee():
    assert payer.trampoline_amount(INVOICE, 3000, 200, INFO) == 102_800
    with pytest.raises(payer.PlanError) as low:
        payer.trampoline_amount(INVOICE, 1099, 0, INFO)
    assert low.value.code == payer.MAXFEE_TOO_LOW


def test_plan_direct_trampoline():
    path = [hop("02" + "00" * 32, S, "103x1x0/1", 102_600, 102_600, 336, 336)]
    hops, first_hop, expiry = payer.plan(INVOICE, path, 500, 30)
    assert expiry == 501 + 336
    assert first_hop == {"id": S, "amount_msat": 102_600, "delay": 336}
    assert [h["pubkey"] for h in hops] == [S]
    payload = bytes.fromhex(hops[0]["payload"])
    fields = decode_tlv_stream(payload[1:], known_even=[2, 4])
    assert decode_tu(fields[2], 8) == 102_600 and decode_tu(fields[4], 4) == expiry
    rec = TrampolineRecord.decode(find_record(payload)[1])
    assert rec.next_node == RECIPIENT and rec.amount_msat == 100_000
    assert rec.please_poll and rec.max_hold_blocks == 30 and rec.payment_secret == "22" * 32


def test_plan_through_an_intermediate():
    path = [hop("02" + "00" * 32, X, "103x1x0/0", 102_700, 102_700, 342, 342),
            hop(X, S, "110x2x1/1", 102_700, 102_600, 342, 336)]
    hops, first_hop, expiry = payer.plan(INVOICE, path, 500, 30)
    assert first_hop == {"id": X, "amount_msat": 102_700, "delay": 342}
    assert [h["pubkey"] for h in hops] == [X, S]
    forward = decode_tlv_stream(bytes.fromhex(hops[0]["payload"])[1:], known_even=[2, 4, 6])
    assert decode_tu(forward[2], 8) == 102_600
    assert decode_tu(forward[4], 4) == 501 + 336 == expiry
    assert int.from_bytes(forward[6], "big") == (110 << 40) | (2 << 16) | 1
    assert RECORD_TYPE not in decode_tlv_stream(bytes.fromhex(hops[0]["payload"])[1:],
                                                known_even=[2, 4, 6])


def pay(**kw):
    base = dict(payment_hash=PAYMENT_HASH, bolt11="lnbcrt1", destination=RECIPIENT, trampoline=S,
                amount_msat=100_000, amount_sent_msat=102_600, cltv_expiry=837,
                max_hold_blocks=30, created_at=1, trampoline_index=1)
    base.update(kw)
    return payer.Pay(**base)


def test_status_messages_only_from_our_trampoline():
    held = PaymentStatus(PAYMENT_HASH, "held", 530, 506, 1, "offline")
    assert payer.on_status(pay(), held, X) is None
    updated = payer.on_status(pay(), held, S)
    assert updated.status == "held" and updated.give_up_height == 530
    assert payer.on_status(pay(status="complete"), held, S) is None


def test_failure_reasons():
    temporary = failures.TEMPORARY_NODE_FAILURE
    gave_up = PaymentStatus(PAYMENT_HASH, "failed", 530, 536, 5, "recipient stayed offline until the hold deadline")
    told = payer.on_status(pay(status="held"), gave_up, S)
    assert payer.on_failure(told, temporary, 1, "WIRE_TEMPORARY_NODE_FAILURE").reason == gave_up.reason
    assert "offline" in payer.on_failure(pay(status="held"), temporary, 1, "x").reason
    assert payer.on_failure(pay(), temporary, 1, "refused at once").reason == "refused at once"
    assert payer.on_failure(pay(), temporary, 0, "local failure").reason == "local failure"
    assert payer.on_failure(pay(status="complete"), temporary, 1, "x") is None


def test_success_is_final():
    done = payer.on_success(pay(status="held"), "11" * 32)
    assert done.status == "complete" and done.payment_preimage == "11" * 32
    assert payer.on_success(done, "11" * 32) is None
    assert payer.Pay.from_json(done.to_json()) == done
