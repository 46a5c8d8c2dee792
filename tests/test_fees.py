"""The payer pays what the route costs: the holder's fee, its estimated route, a small margin.

Issue 12 item 5: maxfee_msat is a cap, not a target. Before, the holder got
all of it (a 100,000msat payment paid 5,000msat, S announcing 1,100).
"""

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import chain, failures, payer
from asyncln.errors import AsynclnError, Code
from asyncln.policy import Policy
from asyncln.states import PayState

INFO = Policy(fee_base_msat=1000, fee_ppm=1000)
INVOICE = payer.Invoice("lnbcrt1x", "ab" * 32, "22" * 32, "02" + "11" * 32, 100_000, 18)


def test_a_holder_with_a_direct_channel_gets_its_fee_and_the_margin_not_the_cap():
    budget = payer.routing_budget(0, INVOICE.amount_msat)
    assert budget == payer.ROUTE_MARGIN_MSAT == 100
    # maxfee defaults to 5,000msat: the holder gets its 1,100 and 100 for routing.
    amount = payer.trampoline_amount(INVOICE, payer.default_maxfee(100_000), 0, INFO, budget)
    assert amount == 100_000 + 1100 + 100


def test_the_routing_budget_is_the_estimate_plus_a_margin_or_a_default_without_one():
    assert payer.routing_budget(2000, 100_000) == 2000 + 100 + 200
    assert payer.routing_budget(None, 1_000_000) == 1000 + 2000  # no estimate: 1000msat + 0.2%


def test_the_cap_cuts_the_routing_budget_never_the_holders_fee():
    # 1,100 for the holder, 300 to reach it: 100 of a 1,500 cap is left for routing.
    assert payer.trampoline_amount(INVOICE, 1500, 300, INFO, 2000) == 100_000 + 1100 + 100
    assert payer.trampoline_amount(INVOICE, 1400, 300, INFO, 2000) == 100_000 + 1100


def test_the_estimate_is_the_fee_of_the_first_route():
    answer = {"routes": [{"path": [{"amount_out_msat": 100_350}, {"amount_out_msat": 100_000}]}]}
    assert payer.route_estimate(answer, 100_000) == 350
    assert payer.route_estimate({"routes": []}, 100_000) is None
    assert payer.route_estimate({"routes": [{"path": [{"amount_out_msat": 99}]}]}, 100) is None


@given(amount=st.integers(1, 10**9), base=st.integers(0, 10_000), ppm=st.integers(0, 20_000),
       estimate=st.one_of(st.none(), st.integers(0, 10**6)), to_trampoline=st.integers(0, 10**5),
       maxfee=st.integers(0, 10**7))
@settings(max_examples=500, deadline=None)
def test_the_fee_sent_stays_between_the_holders_fee_and_its_needs_within_the_cap(
        amount, base, ppm, estimate, to_trampoline, maxfee):
    info = Policy(fee_base_msat=base, fee_ppm=ppm)
    invoice = replace(INVOICE, amount_msat=amount)
    budget = payer.routing_budget(estimate, amount)
    try:
        sent = payer.trampoline_amount(invoice, maxfee, to_trampoline, info, budget)
    except AsynclnError as e:
        assert e.code == Code.MAXFEE_TOO_LOW
        assert info.fee(amount) + to_trampoline > maxfee
        return
    fee = sent - amount
    assert fee >= info.fee(amount)                      # the holder's check passes
    assert fee <= info.fee(amount) + budget             # never more than it needs
    assert fee + to_trampoline <= maxfee                # a cap, not a target
    if estimate is not None:
        assert budget <= estimate + payer.ROUTE_MARGIN_MSAT + estimate // 10


# --- a holder's refusal with its terms (#836 NODE|26) ------------------------------

TERMS = failures.trampoline_fee_or_expiry_insufficient(3000, 2000, 400)
PAY = payer.Pay(payment_hash="ab" * 32, bolt11="lnbcrt1x", destination="02" + "11" * 32,
                trampoline="02" + "33" * 32, amount_msat=100_000, amount_sent_msat=101_200,
                cltv_expiry=1500, max_hold_blocks=30, created_at=0, trampoline_index=1,
                status=PayState.FAILED, maxfee_msat=5000)


def test_the_holders_terms_are_read_from_its_refusal():
    assert payer.holder_terms(TERMS) == (3000, 2000, 400)
    assert payer.holder_terms(failures.temporary_trampoline_failure()) is None
    assert payer.holder_terms(TERMS[:-2]) is None
    assert payer.holder_terms("zz") is None and payer.holder_terms(None) is None


def test_a_refusal_with_new_terms_is_retried_once_per_terms_and_boundedly():
    assert payer.retry_terms(PAY, 1, TERMS) == (3000, 2000, 400)
    assert payer.retry_terms(PAY, 2, TERMS) is None                  # not from the holder
    assert payer.retry_terms(replace(PAY, status=PayState.HELD), 1, TERMS) is None
    tried = replace(PAY, retried_terms=(3000, 2000, 400), terms_retries=1)
    assert payer.retry_terms(tried, 1, TERMS) is None                # same terms: no loop
    other = failures.trampoline_fee_or_expiry_insufficient(3500, 2000, 400)
    assert payer.retry_terms(tried, 1, other) == (3500, 2000, 400)   # changed: once more
    spent = replace(tried, terms_retries=payer.MAX_TERMS_RETRIES)
    assert payer.retry_terms(spent, 1, other) is None                # and never endlessly
    assert payer.retry_terms(replace(PAY, maxfee_msat=None), 1, TERMS) is None  # older record
    assert payer.retry_terms(replace(PAY, bolt11=""), 1, TERMS) is None  # a private offer


def test_a_retry_pays_the_new_terms_within_the_cap_and_their_cltv():
    info = payer.with_terms(INFO, (3000, 2000, 400))
    assert info.fee(100_000) == 3200 and info.safety_blocks == INFO.safety_blocks
    assert payer.trampoline_amount(INVOICE, 5000, 0, info, 100) == 100_000 + 3200 + 100
    try:
        payer.trampoline_amount(INVOICE, 3000, 0, info, 100)
        raise AssertionError("terms above the cap must be refused")
    except AsynclnError as e:
        assert e.code == Code.MAXFEE_TOO_LOW
    plain = payer.final_cltv_to_trampoline(INVOICE, 30, INFO)
    honest = chain.refusal_terms(INFO, 30)["cltv_expiry_delta"]
    assert payer.final_cltv_to_trampoline(INVOICE, 30, INFO, (3000, 2000, honest)) == honest + 18
    assert payer.final_cltv_to_trampoline(INVOICE, 30, INFO, (3000, 2000, 10)) == plain


def test_a_retry_never_locks_the_payer_longer_than_the_hold_needs():
    """A holder's refusal asking more CLTV than a hold of this length needs under its own
    terms (a lying holder) must not stretch the payer's HTLC by itself: at most what an
    honest holder asks for this hold."""
    honest = chain.refusal_terms(INFO, 30)["cltv_expiry_delta"]
    assert payer.final_cltv_to_trampoline(INVOICE, 30, INFO, (3000, 2000, 1900)) == honest + 18


def test_pay_records_keep_their_retry_fields_across_a_restart():
    tried = replace(PAY, retried_terms=(3000, 2000, 400), terms_retries=1)
    assert payer.Pay.from_json(tried.to_json()) == tried
    old = {k: v for k, v in PAY.to_json().items()
           if k not in ("maxfee_msat", "retried_terms", "terms_retries")}
    assert payer.Pay.from_json(old).maxfee_msat is None
