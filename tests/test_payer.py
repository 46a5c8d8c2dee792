"""The paying side: invoices, trampoline choice, amounts, expiries, onion hops and transitions."""

import hashlib
from dataclasses import replace

import coincurve
import pytest

from asyncln import commitment, failures, note, payer
from asyncln.errors import AsynclnError, Code
from asyncln.messages import PaymentStatus
from asyncln.policy import Policy
from asyncln.record import RECORD_TYPE, TrampolineRecord, find_record
from asyncln.states import IllegalTransition, PayState
from asyncln.wire import decode_tlv_stream, decode_tu


def node(n: int) -> str:
    """A real secp256k1 point: record.py refuses anything else."""
    return coincurve.PrivateKey(bytes([n]) * 32).public_key.format().hex()


ME, RECIPIENT, S, X, T, U = (node(n) for n in range(1, 7))
PREIMAGE = "11" * 32
PAYMENT_HASH = hashlib.sha256(bytes.fromhex(PREIMAGE)).hexdigest()
NOW = 1_700_000_000
INFO = Policy(poll_blocks=6, max_hold_blocks=1008, safety_blocks=144, fee_base_msat=1000,
              fee_ppm=1000, max_held_msat=10**9)
INVOICE = payer.Invoice("lnbcrt1...", PAYMENT_HASH, "22" * 32, RECIPIENT, 100_000, 18)


def hop(node_in, node_out, scid, amount_in, amount_out, cltv_in, cltv_out):
    return {"short_channel_id_dir": scid, "node_id_in": node_in, "node_id_out": node_out,
            "amount_in_msat": amount_in, "amount_out_msat": amount_out,
            "cltv_in": cltv_in, "cltv_out": cltv_out}


def refused(code, call, *args, **kw) -> str:
    """Run ``call``, expect an AsynclnError with ``code``; return its message."""
    with pytest.raises(AsynclnError) as err:
        call(*args, **kw)
    assert err.value.code == code
    return str(err.value)


# --- invoices --------------------------------------------------------------------

def decoded(**kw):
    base = {"type": "bolt11 invoice", "valid": True, "payment_hash": PAYMENT_HASH,
            "payment_secret": "22" * 32, "payee": RECIPIENT, "amount_msat": 100_000,
            "created_at": NOW - 100, "expiry": 3600, "min_final_cltv_expiry": 40}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def test_check_invoice_reads_what_asyncln_needs():
    inv = payer.check_invoice(decoded(), NOW, "lnbcrt1x")
    assert inv == payer.Invoice("lnbcrt1x", PAYMENT_HASH, "22" * 32, RECIPIENT, 100_000, 40,
                                NOW + 3500)
    assert payer.check_invoice(decoded(amount_msat="2500msat"), NOW).amount_msat == 2500
    assert payer.check_invoice(decoded(min_final_cltv_expiry=None), NOW).min_final_cltv_expiry == 18
    assert payer.check_invoice(decoded(expiry=None), NOW).expires_at is None


@pytest.mark.parametrize("fields, words", [
    ({"type": "bolt12 offer"}, "not a valid BOLT11"),
    ({"valid": False}, "not a valid BOLT11"),
    ({"amount_msat": None}, "no amount"),
    ({"amount_msat": "0msat"}, "at least 1msat"),
    ({"payment_secret": None}, "payment secret"),
    ({"created_at": NOW - 3600}, "expired"),
    ({"created_at": NOW - 4000}, "expired"),
])
def test_check_invoice_refuses_unusable_invoices(fields, words):
    assert words in refused(Code.INVOICE_UNUSABLE, payer.check_invoice, decoded(**fields), NOW)


# --- fees, hold and amounts --------------------------------------------------------

def test_hold_and_fee_choices():
    assert payer.hold_blocks(None, INFO, INVOICE, NOW) == 1008
    assert payer.hold_blocks(30, INFO, INVOICE, NOW) == 30
    assert payer.hold_blocks(5000, INFO, INVOICE, NOW) == 1008
    refused(Code.HOLD_TOO_SHORT, payer.hold_blocks, 0, INFO, INVOICE, NOW)
    assert payer.final_cltv_to_trampoline(INVOICE, 30, INFO) == 30 + 144 + 18 + 144


def test_default_maxfee_is_the_payers_not_the_trampolines():
    """xpay's default: 5000msat or 1%; a trampoline's fee does not raise it."""
    assert payer.default_maxfee(100_000) == 5000
    assert payer.default_maxfee(500_000) == 5000
    assert payer.default_maxfee(10_000_000) == 100_000
    assert payer.default_maxfee(10_000_099) == 100_000


def test_hold_never_outlasts_the_invoice():
    expiring = replace(INVOICE, expires_at=NOW + 6 * 600 + 599)
    assert payer.hold_blocks(None, INFO, expiring, NOW) == 6
    assert payer.hold_blocks(30, INFO, expiring, NOW) == 6
    assert payer.hold_blocks(3, INFO, expiring, NOW) == 3
    soon = replace(INVOICE, expires_at=NOW + 599)
    assert "invoice expires" in refused(Code.HOLD_TOO_SHORT, payer.hold_blocks,
                                        None, INFO, soon, NOW)
    assert "asked 0" in refused(Code.HOLD_TOO_SHORT, payer.hold_blocks, 0, INFO, expiring, NOW)
    stingy = Policy(max_hold_blocks=0)
    assert "allows 0" in refused(Code.HOLD_TOO_SHORT, payer.hold_blocks, None, stingy, INVOICE, NOW)


def test_trampoline_amount_keeps_total_fee_under_maxfee():
    assert payer.trampoline_amount(INVOICE, 3000, 200, INFO, 10_000) == 102_800
    message = refused(Code.MAXFEE_TOO_LOW, payer.trampoline_amount, INVOICE, 1099, 0, INFO, 0)
    assert "announced fee 1100msat exceeds the payer's cap" in message
    # Its fee fits, but not with what reaching it costs.
    assert "to reach it" in refused(Code.MAXFEE_TOO_LOW, payer.trampoline_amount,
                                    INVOICE, 1500, 401, INFO, 0)


# --- choosing the trampoline -------------------------------------------------------

CHEAP = Policy(fee_base_msat=100, fee_ppm=0)
DEAR = Policy(fee_base_msat=3000, fee_ppm=0)


def choose(requested=None, terms=None, connected=(S, X, T), amount=100_000, maxfee=5000,
           destination=RECIPIENT):
    terms = {S: DEAR, X: CHEAP} if terms is None else terms
    return payer.choose_trampoline(requested, destination, terms, set(connected), amount, maxfee)


def test_choose_the_requested_trampoline():
    assert choose(S) == (S, DEAR)
    assert choose(S, connected=()) == (S, DEAR)  # reachable through others: a route will tell
    assert "recipient" in refused(Code.NO_TRAMPOLINE, choose, RECIPIENT,
                                  terms={RECIPIENT: CHEAP}, connected={RECIPIENT})
    refused(Code.NO_TRAMPOLINE, choose, U)
    assert "retry" in refused(Code.TRAMPOLINE_TERMS_UNKNOWN, choose, T)
    refused(Code.NO_TRAMPOLINE, choose, S, terms={S: Policy(relay=False)})
    assert "exceeds the payer's cap" in refused(Code.MAXFEE_TOO_LOW, choose, S, maxfee=2999)


def test_choose_the_cheapest_suitable_peer():
    assert choose() == (X, CHEAP)
    assert choose(terms={S: DEAR, X: CHEAP, T: Policy(relay=False, fee_base_msat=0)}) == (X, CHEAP)
    assert choose(connected=(S, T)) == (S, DEAR)  # X is cheaper but not connected
    assert choose(destination=X) == (S, DEAR)
    assert choose(terms={S: DEAR, X: Policy(fee_base_msat=100, fee_ppm=0, min_held_msat=200_000)}) \
        == (S, DEAR)
    tie = min(S, X)
    assert choose(terms={S: CHEAP, X: CHEAP}) == (tie, CHEAP)
    # Proportional fees rank by the amount paid.
    flat, ppm = Policy(fee_base_msat=2000, fee_ppm=0), Policy(fee_base_msat=0, fee_ppm=10_000)
    assert choose(terms={S: flat, X: ppm}, amount=100_000)[0] == X
    assert choose(terms={S: flat, X: ppm}, amount=1_000_000, maxfee=10_000)[0] == S


def test_choose_refuses_when_none_fits():
    refused(Code.NO_TRAMPOLINE, choose, terms={})
    refused(Code.NO_TRAMPOLINE, choose, connected=(T,))
    refused(Code.NO_TRAMPOLINE, choose, terms={S: Policy(relay=False)})
    assert "cap" in refused(Code.MAXFEE_TOO_LOW, choose, maxfee=99)


# --- the onion --------------------------------------------------------------------

def test_plan_direct_trampoline():
    path = [hop(ME, S, "103x1x0/1", 102_600, 102_600, 336, 336)]
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
    assert rec.report_to is None


def test_plan_asks_for_reports_when_told():
    path = [hop(ME, S, "103x1x0/1", 102_600, 102_600, 336, 336)]
    hops, _, _ = payer.plan(INVOICE, path, 500, 30, report_to=ME)
    record = TrampolineRecord.decode(find_record(bytes.fromhex(hops[0]["payload"]))[1])
    assert record.report_to == ME


def test_plan_refuses_a_route_dearer_than_maxfee():
    path = [hop(ME, X, "103x1x0/0", 103_100, 103_100, 342, 342),
            hop(X, S, "110x2x1/1", 103_100, 102_600, 342, 336)]
    assert payer.plan(INVOICE, path, 500, 30, maxfee_msat=3100)[1]["amount_msat"] == 103_100
    refused(Code.MAXFEE_TOO_LOW, payer.plan, INVOICE, path, 500, 30, maxfee_msat=3099)


def test_plan_through_an_intermediate():
    path = [hop(ME, X, "103x1x0/0", 102_700, 102_700, 342, 342),
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


# --- the payment's life -------------------------------------------------------------

def pay(**kw):
    base = dict(payment_hash=PAYMENT_HASH, bolt11="lnbcrt1", destination=RECIPIENT, trampoline=S,
                amount_msat=100_000, amount_sent_msat=102_600, cltv_expiry=837,
                max_hold_blocks=30, created_at=1, trampoline_index=1, partid=0, groupid=1)
    base.update(kw)
    return payer.Pay(**base)


HELD_STATUS = PaymentStatus(PAYMENT_HASH, "held", 530, 506, 1, "offline")


def test_status_messages_only_from_our_trampoline():
    assert payer.on_status(pay(), HELD_STATUS, X) is None
    updated = payer.on_status(pay(), HELD_STATUS, S)
    assert updated.status is PayState.HELD and updated.give_up_height == 530
    assert payer.on_status(pay(status=PayState.COMPLETE), HELD_STATUS, S) is None
    assert payer.on_status(pay(status=PayState.FAILED), HELD_STATUS, S) is None
    other = PaymentStatus("33" * 32, "held", 530, 506, 1, "offline")
    assert payer.on_status(pay(), other, S) is None


def test_failure_reasons():
    temporary = failures.TEMPORARY_TRAMPOLINE_FAILURE
    gave_up = PaymentStatus(PAYMENT_HASH, "failed", 530, 536, 5,
                            "recipient stayed offline until the hold deadline")
    told = payer.on_status(pay(status=PayState.HELD), gave_up, S)
    assert told.status is PayState.HELD  # the HTLC's failure, not the message, ends it
    held = pay(status=PayState.HELD)
    assert payer.on_failure(told, 0, 1, temporary, 1, "WIRE_TEMPORARY_NODE_FAILURE").reason \
        == gave_up.reason
    assert "offline" in payer.on_failure(held, 0, 1, temporary, 1, "x").reason
    # Before S's "held" report arrived (a race on real nodes): the code still says it gave up,
    # not lightningd's "UNKNOWN 8217 (reply from remote)".
    at_once = payer.on_failure(pay(), 0, 1, temporary, 1, "failed: UNKNOWN 8217 (reply from remote)")
    assert at_once.reason == failures.TRAMPOLINE_FAILURES[temporary] and "gave up" in at_once.reason
    failed = payer.on_failure(pay(), 0, 1, temporary, 0, "local failure")
    assert failed.status is PayState.FAILED and failed.reason == "local failure"
    assert payer.on_failure(pay(status=PayState.COMPLETE), 0, 1, temporary, 1, "x") is None


def test_only_the_current_attempts_failure_counts():
    current = pay(partid=2, groupid=3)
    assert payer.on_failure(current, 1, 3, None, 1, "stale") is None
    assert payer.on_failure(current, 2, 2, None, 1, "stale") is None
    assert payer.on_failure(current, None, 3, None, 1, "stale") is None
    assert payer.on_failure(current, 2, 3, None, 1, "now").status is PayState.FAILED
    # lightningd omits partid 0.
    assert payer.on_failure(pay(partid=0, groupid=3), None, 3, None, 1, "now").reason == "now"
    # Records from before partids take any failure.
    assert payer.on_failure(pay(partid=None, groupid=None), 7, 9, None, 1, "x").reason == "x"


def test_success_is_final():
    done = payer.on_success(pay(status=PayState.HELD), PREIMAGE)
    assert done.status is PayState.COMPLETE and done.payment_preimage == PREIMAGE
    assert payer.on_success(done, PREIMAGE) is None
    assert payer.Pay.from_json(done.to_json()) == done
    assert payer.on_failure(done, 0, 1, None, 1, "late") is None
    assert payer.on_status(done, HELD_STATUS, S) is None


def test_a_preimage_beats_an_earlier_failure():
    failed = pay(status=PayState.FAILED, reason="the attempt failed")
    done = payer.on_success(failed, PREIMAGE)
    assert done.status is PayState.COMPLETE and done.reason is None


def test_json_round_trip_and_older_records():
    stored = pay(status=PayState.HELD, lost_since=7, report=True).to_json()
    assert stored["status"] == "held" and type(stored["status"]) is str
    assert payer.Pay.from_json(stored) == pay(status=PayState.HELD, lost_since=7, report=True)
    old = {"payment_hash": PAYMENT_HASH, "bolt11": "lnbcrt1", "destination": RECIPIENT,
           "trampoline": S, "amount_msat": 100_000, "amount_sent_msat": 102_600,
           "cltv_expiry": 837, "max_hold_blocks": 30, "created_at": 1, "trampoline_index": 1,
           "status": "held", "give_up_height": 530, "next_poll_height": 506,
           "payment_preimage": None, "reason": None}
    loaded = payer.Pay.from_json(old)
    assert loaded.status is PayState.HELD
    assert (loaded.partid, loaded.groupid, loaded.lost_since, loaded.report) \
        == (None, None, None, False)


# --- crash recovery ----------------------------------------------------------------

def part(status, partid=0, groupid=1, preimage=None):
    out = {"status": status, "groupid": groupid, "payment_hash": PAYMENT_HASH}
    if partid:
        out["partid"] = partid
    if preimage:
        out["payment_preimage"] = preimage
    return out


def test_reconcile_settles_from_lightningds_records():
    done = payer.reconcile(pay(), [part("failed"), part("complete", 1, 1, PREIMAGE)], False, 10)
    assert done.status is PayState.COMPLETE and done.payment_preimage == PREIMAGE
    failed = payer.reconcile(pay(status=PayState.HELD), [part("failed")], False, 10)
    assert failed.status is PayState.FAILED and failed.reason == "the attempt failed"
    assert payer.reconcile(pay(), [], False, 10).status is PayState.FAILED
    assert payer.reconcile(pay(), [part("pending")], True, 10) is None
    assert payer.reconcile(pay(status=PayState.COMPLETE), [part("failed")], False, 10) is None
    assert payer.reconcile(pay(status=PayState.FAILED), [part("pending")], False, 10) is None


def test_reconcile_judges_only_our_attempt():
    # An older attempt still pending does not keep a failed current one open.
    ours = pay(partid=2, groupid=1)
    failed = payer.reconcile(ours, [part("pending", 1), part("failed", 2)], True, 10)
    assert failed.status is PayState.FAILED


def test_a_lost_attempt_fails_only_a_block_later():
    first = payer.reconcile(pay(), [part("pending")], False, 10)
    assert first.status is PayState.PENDING and first.lost_since == 10
    assert payer.reconcile(first, [part("pending")], False, 10) is None
    assert payer.reconcile(first, [part("pending")], False, 9) is None
    later = payer.reconcile(first, [part("pending")], False, 11)
    assert later.status is PayState.FAILED and later.reason == payer.LOST_REASON
    # The HTLC showed up after all: start over.
    back = payer.reconcile(first, [part("pending")], True, 11)
    assert back.lost_since is None and back.status is PayState.PENDING


# --- retrying ----------------------------------------------------------------------

def test_only_a_failed_payment_may_be_paid_again():
    payer.may_pay_again(None)
    payer.may_pay_again(pay(status=PayState.FAILED))
    for state in (PayState.PENDING, PayState.HELD, PayState.COMPLETE):
        assert state.value in refused(Code.PAYMENT_EXISTS, payer.may_pay_again, pay(status=state))


def test_restart_a_failed_payment():
    failed = pay(status=PayState.HELD, give_up_height=530, next_poll_height=506, lost_since=4,
                 reason="x")
    failed = payer.on_failure(failed, 0, 1, None, 1, "gone")
    again = payer.restart(failed, partid=1, groupid=2, trampoline=X, amount_sent_msat=103_000)
    assert again == pay(partid=1, groupid=2, trampoline=X, amount_sent_msat=103_000)
    refused(Code.PAYMENT_EXISTS, payer.restart, pay(), partid=1)
    with pytest.raises(TypeError):
        payer.restart(failed, status=PayState.COMPLETE)


def test_transitions_go_through_the_table(monkeypatch):
    """A move the table forbids raises, even if a caller slips past the guards."""
    monkeypatch.setattr(payer, "PAY_OPEN", frozenset(PayState))
    with pytest.raises(IllegalTransition):
        payer.on_status(pay(status=PayState.COMPLETE), HELD_STATUS, S)
    with pytest.raises(IllegalTransition):
        payer.on_failure(pay(status=PayState.COMPLETE), 0, 1, None, 1, "x")


def test_an_amountless_invoice_takes_the_payers_amount():
    assert payer.check_invoice(decoded(amount_msat=None), NOW, amount_msat=7_000).amount_msat == 7_000
    assert payer.check_invoice(decoded(), NOW, amount_msat=100_000).amount_msat == 100_000
    with pytest.raises(AsynclnError, match="differs") as e:
        payer.check_invoice(decoded(), NOW, amount_msat=99_999)
    assert e.value.code == Code.INVOICE_UNUSABLE


def test_route_hints_ride_in_the_record():
    hint = {"pubkey": S, "short_channel_id": "103x1x0", "fee_base_msat": 1000,
           "fee_proportional_millionths": 10, "cltv_expiry_delta": 6}
    routes = [[hint] * 4, [hint]] + [[hint, hint]] * 4  # too long a route is left out
    inv = payer.check_invoice(decoded(routes=routes), NOW)
    assert [len(r) for r in inv.route_hints] == [1, 2, 2, 2]
    path = [hop(ME, S, "1x1x1/0", 102_000, 102_000, 200, 200)]
    hops, _, _ = payer.plan(inv, path, 100, 50)
    record = TrampolineRecord.decode(find_record(bytes.fromhex(hops[-1]["payload"]))[1])
    assert record.route_hints == inv.route_hints
    assert record.route_hints[0][0].short_channel_id == "103x1x0"


def test_a_fetched_invoice_must_be_the_recipients_own_unexpired_fresh_and_fit():
    def check(used=frozenset(), amount=100_000, rod=S, **fields):
        deposited = {"description": f"asyncln-rod:{S}", **fields}
        return payer.check_fetched(decoded(**deposited), RECIPIENT, amount, NOW, "lnbcrt1y",
                                   set(used), rod_id=rod)

    fetched = check(amount=5_000, amount_msat=None)
    assert (fetched.amount_msat, fetched.bolt11) == (5_000, "lnbcrt1y")
    assert "not by the recipient" in refused(Code.INVOICE_MISMATCH, check, payee=S)
    assert "expired" in refused(Code.INVOICE_MISMATCH, check, created_at=NOW - 4000)
    assert "differs" in refused(Code.INVOICE_MISMATCH, check, amount=5_000)
    assert "not a valid" in refused(Code.INVOICE_MISMATCH, check, valid=False)
    assert "deposited" in refused(Code.INVOICE_MISMATCH, check, rod=X)
    assert "deposited" in refused(Code.INVOICE_MISMATCH, check, description="Order #7")
    assert "reuses" in refused(Code.HASH_REUSED, check, used={PAYMENT_HASH})


# --- a chain of holders (record version 2): S holds for the payee's Rod R -----------------

from hypothesis import event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from asyncln import chain, onion, peel  # noqa: E402
from asyncln.hold import Incoming  # noqa: E402
from asyncln.record import HintHop  # noqa: E402
from asyncln.wire import decode_bigsize  # noqa: E402

ROD = T
S_MAKESECRET, ROD_MAKESECRET = "44" * 32, "55" * 32
DEFAULTS = Policy()


def chain_of(hold, invoice=INVOICE, first=DEFAULTS, rod=DEFAULTS, budget=10_000, report_to=ME):
    return payer.chain_layers(invoice, (S, first), (ROD, rod), hold, budget, report_to)


def holds(layers):
    return [layer.max_hold_blocks for layer in layers]


def test_every_default_hold_splits_within_the_payers_hold_and_one_htlcs_cltv():
    for hold in range(2, DEFAULTS.max_hold_blocks + 1):
        layers, leg = chain_of(hold)
        s_hold, r_hold = holds(layers)
        assert s_hold + r_hold <= hold, hold
        assert 1 <= s_hold <= payer.FIRST_HOLDER_MAX_HOLD and r_hold >= 1, hold
        assert leg.cltv_delta_in + chain.LEG_CLTV_BUDGET <= payer.MAX_HTLC_CLTV, hold
        assert leg.holder == S and leg.max_hold_blocks == s_hold


def test_a_one_block_hold_is_not_stretched_to_two():
    try:
        layers, _ = chain_of(1)
    except AsynclnError as e:
        assert e.code == Code.HOLD_TOO_SHORT
        return
    assert sum(holds(layers)) <= 1


terms = st.builds(Policy, safety_blocks=st.integers(1, 400), max_hold_blocks=st.integers(1, 2016),
                  fee_base_msat=st.integers(0, 5000), fee_ppm=st.integers(0, 5000))


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 2016), st.integers(0, 1500), terms, terms, st.integers(0, 50_000))
def test_a_chain_fits_one_htlc_or_is_refused_as_hold_too_short(hold, final_cltv, first, rod,
                                                               budget):
    invoice = replace(INVOICE, min_final_cltv_expiry=final_cltv)
    try:
        layers, leg = chain_of(hold, invoice, first, rod, budget)
    except AsynclnError as e:
        event("refused")
        assert e.code == Code.HOLD_TOO_SHORT
        # Refused only when even a one-block hold at R would not fit.
        s_hold = min(max(1, hold // 4), payer.FIRST_HOLDER_MAX_HOLD, first.max_hold_blocks)
        tightest = chain.plan_chain([(S, first), (ROD, rod)], invoice.amount_msat, final_cltv,
                                    [s_hold, 1], [budget // 2] * 2)
        assert tightest[0].cltv_delta_in + chain.LEG_CLTV_BUDGET > payer.MAX_HTLC_CLTV
        return
    s_hold, r_hold = holds(layers)
    event("fits" if leg.cltv_delta_in + chain.LEG_CLTV_BUDGET < payer.MAX_HTLC_CLTV
          else "R's hold cut to fit")
    assert s_hold + r_hold <= hold
    assert 1 <= s_hold <= min(payer.FIRST_HOLDER_MAX_HOLD, first.max_hold_blocks)
    assert 1 <= r_hold <= rod.max_hold_blocks
    assert leg.cltv_delta_in + chain.LEG_CLTV_BUDGET <= payer.MAX_HTLC_CLTV
    # Each holder takes its own leg on arrival, whatever the height.
    to_rod, final = layers
    assert chain.check_leg(first, leg.amount_in_msat, 800_000 + leg.cltv_delta_in, 800_000,
                           to_rod.amt_to_forward, to_rod.outgoing_cltv_delta, s_hold) is None
    assert chain.check_leg(rod, to_rod.amt_to_forward, 800_000 + to_rod.outgoing_cltv_delta,
                           800_000, final.amt_to_forward, final.outgoing_cltv_delta,
                           r_hold) is None
    assert leg.amount_in_msat <= (invoice.amount_msat + rod.fee(invoice.amount_msat)
                                  + first.fee(to_rod.amt_to_forward) + budget)


def test_a_chain_that_cannot_fit_one_htlc_is_hold_too_short():
    invoice = replace(INVOICE, min_final_cltv_expiry=1500)
    assert "CLTV" in refused(Code.HOLD_TOO_SHORT, chain_of, 1008, invoice)
    # A large final CLTV shrinks R's hold instead, while it still fits.
    layers, leg = chain_of(1008, replace(INVOICE, min_final_cltv_expiry=500))
    assert holds(layers)[1] < 1008 - holds(layers)[0]
    assert leg.cltv_delta_in + chain.LEG_CLTV_BUDGET == payer.MAX_HTLC_CLTV


def test_the_first_layer_names_only_the_rod_and_the_second_pays_the_recipient():
    hint = HintHop(X, "103x1x0", 1000, 10, 40)
    invoice = replace(INVOICE, route_hints=((hint,),))
    (to_rod, final), leg = chain_of(288, invoice)
    assert to_rod.outgoing_node_id == ROD and to_rod.report_to == ME
    assert not to_rod.is_final and to_rod.payment_secret is None and to_rod.route_hints == ()
    assert to_rod.please_poll
    assert final.is_final and final.outgoing_node_id == RECIPIENT
    assert (final.payment_secret, final.total_msat) == ("22" * 32, 100_000)
    assert (final.amt_to_forward, final.outgoing_cltv_delta) == (100_000, 18)
    assert final.route_hints == ((hint,),) and final.report_to is None
    # S forwards what R needs; R's delta covers its hold, route and safety
    legs = chain.plan_chain([(S, DEFAULTS), (ROD, DEFAULTS)], 100_000, 18, holds([to_rod, final]),
                            [5000, 5000])
    assert (to_rod.amt_to_forward, to_rod.outgoing_cltv_delta) == (legs[1].amount_in_msat,
                                                                   legs[1].cltv_delta_in)
    assert leg == legs[0]
    assert chain_of(288, report_to=None)[0][0].report_to is None


def test_plan_with_a_packet_carries_the_onion_not_the_clear_record():
    layers, leg = chain_of(288)
    packet, _ = onion.build([(onion.public_key(S_MAKESECRET), layers[0]),
                             (onion.public_key(ROD_MAKESECRET), layers[1])], PAYMENT_HASH)
    path = [hop(ME, X, "103x1x0/0", leg.amount_in_msat + 100, leg.amount_in_msat + 100,
                leg.cltv_delta_in + 34, leg.cltv_delta_in + 34),
            hop(X, S, "110x2x1/1", leg.amount_in_msat + 100, leg.amount_in_msat,
                leg.cltv_delta_in + 34, leg.cltv_delta_in)]
    hops, first_hop, expiry = payer.plan(INVOICE, path, 500, 288, report_to=ME, packet=packet)
    assert [h["pubkey"] for h in hops] == [X, S] and expiry == 501 + leg.cltv_delta_in
    assert first_hop == {"id": X, "amount_msat": leg.amount_in_msat + 100,
                         "delay": leg.cltv_delta_in + 34}
    payload = bytes.fromhex(hops[-1]["payload"])
    length, start = decode_bigsize(payload)
    assert start == 3 and start + length == len(payload)  # a packet needs a 3-byte prefix
    fields = decode_tlv_stream(payload[start:], known_even=[2, 4])
    assert set(fields) == {2, 4, onion.ONION_TLV}
    assert RECORD_TYPE not in fields and find_record(payload) is None
    assert fields[onion.ONION_TLV] == packet and onion.find_onion(payload)[1] == packet
    assert (decode_tu(fields[2], 8), decode_tu(fields[4], 4)) == (leg.amount_in_msat, expiry)
    assert bytes.fromhex(RECIPIENT) not in payload and bytes.fromhex("22" * 32) not in payload
    # the intermediate's payload is an ordinary forward, nothing of asyncln in it
    forward = decode_tlv_stream(bytes.fromhex(hops[0]["payload"])[1:], known_even=[2, 4, 6])
    assert set(forward) == {2, 4, 6} and decode_tu(forward[2], 8) == leg.amount_in_msat
    # and S, arriving with exactly that, holds for the Rod without refusal
    inc = Incoming("110x2x1", 0, leg.amount_in_msat, expiry)
    record, _, refusal = peel.read(payload, PAYMENT_HASH, onion.secret_key(S_MAKESECRET), S,
                                   DEFAULTS, inc, 500)
    assert refusal is None and record.next_node == ROD and record.next_onion is not None


# --- issue 11.6: the amount committed to the recipient, in the last holder's instructions ---

NOTE_SECRET = "5a" * 32


def test_committed_seals_our_amount_to_the_recipients_note_key():
    sealed = payer.committed(INVOICE, note.note_public_key(NOTE_SECRET))
    assert commitment.open_commitment(sealed.commitment, NOTE_SECRET, PAYMENT_HASH) == 100_000
    assert payer.committed(INVOICE, None) == INVOICE  # not from a Rod: its amount is signed
    assert refused(Code.BAD_PARAMETER, payer.committed, INVOICE, "02" + "00" * 32)


def test_the_last_holders_layer_carries_the_commitment_however_the_payer_plans():
    """Direct to the Rod, around a private offer's tail, or as the second holder of a chain."""
    blob = bytes(57)
    invoice = replace(INVOICE, commitment=blob)
    assert payer.final_layer(invoice, 36).amount_commitment == blob
    assert payer.tail_layer(invoice, 36, b"\x01" * 40).amount_commitment == blob
    layers, _ = payer.chain_layers(invoice, (S, INFO), (T, INFO), 100, 10_000, None)
    assert (layers[0].amount_commitment, layers[1].amount_commitment) == (None, blob)
    assert payer.final_layer(INVOICE, 36).amount_commitment is None


def test_a_clear_record_carries_the_commitment_too():
    invoice = replace(INVOICE, commitment=bytes(57))
    path = [hop(ME, S, "103x1x0/1", 102_600, 102_600, 336, 336)]
    hops, _, _ = payer.plan(invoice, path, 1000, 36)
    _, raw = find_record(bytes.fromhex(hops[-1]["payload"]))
    assert TrampolineRecord.decode(raw).final_tlvs == ((66105, bytes(57)),)
