"""counters.py: getinfo's counters are sums over stored records, whatever the records."""

import json
from dataclasses import replace

from factories import PAYMENT_HASH, PREIMAGE, RECIPIENT, incoming, node_id, payload, record
from hypothesis import given
from hypothesis import strategies as st

from asyncln import counters, failures, hold
from asyncln.policy import Policy
from asyncln.rod import Pool, Served
from asyncln.states import HOLD_OPEN, HoldState

NEXT_HOLDER = replace(record(), next_onion="00" * 32)


def held(state=HoldState.HELD, amount=110_000, sent=None, error=None, failure=None, rec=None,
         payment_hash=PAYMENT_HASH, woken=None, paid=None):
    return hold.HeldPayment(payment_hash, incoming(amount=amount), rec or record(), 1000, 1100, 1006,
                            state=state, last_error=error, failure_message=failure, sent_msat=sent,
                            woken_at=woken, paid_at=paid)


def failed(error, failure=None, rec=None):
    return held(HoldState.FAILED, error=error, rec=rec,
                failure=failure or failures.temporary_trampoline_failure())


def test_each_fail_back_reason_has_its_word():
    cases = [
        (failed(hold.GAVE_UP), "recipient_offline"),
        (failed("recipient unreachable: no route"), "recipient_offline"),
        (failed(hold.CANCELLED_BY_PAYER), "cancelled"),
        (failed("cancelled by the holding node's operator"), "cancelled"),
        (failed("recipient refused the payment: WIRE_INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS"),
         "refused_by_recipient"),
        (failed("unknown next holder: not in gossip", failures.unknown_next_trampoline(), NEXT_HOLDER),
         "next_holder_failed"),
        (failed("the next holder gave up", "400c", NEXT_HOLDER), "next_holder_failed"),
        (failed("could not save the attempt: disk full"), "other"),
    ]
    assert [counters.failure_reason(h) for h, _ in cases] == [word for _, word in cases]


def test_a_delivery_earns_incoming_less_what_was_sent_and_times_its_wake_to_paid():
    now = iter([1_700_000_100.0, 1_700_000_103.5])
    relay = hold.Relay(Policy(poll_blocks=6, max_hold_blocks=100, safety_blocks=10), 1000,
                       clock=lambda: next(now))
    rec = record()
    inc = incoming()
    relay.htlc_accepted(PAYMENT_HASH, inc, payload(rec, inc.amount_msat, inc.cltv_expiry),
                        inc.amount_msat, inc.cltv_expiry, None)
    route = [{"id": node_id(9), "channel": "105x1x0", "direction": 0, "amount_msat": 100_100, "delay": 24},
             {"id": RECIPIENT, "channel": "106x1x0", "direction": 0, "amount_msat": 100_000, "delay": 18}]
    relay.block(1006)
    relay.route_found(PAYMENT_HASH, route)
    relay.attempt_succeeded(PAYMENT_HASH, PREIMAGE)
    stored = hold.HeldPayment.from_json(json.loads(json.dumps(relay.held[PAYMENT_HASH].to_json())))
    assert (stored.sent_msat, stored.woken_at, stored.paid_at) == (100_100, 1_700_000_100.0, 1_700_000_103.5)
    got = counters.counters([stored], [])  # from the persisted record: it survives a restart
    assert got["payments_delivered"] == 1 and got["fees_earned_msat"] == 110_000 - 100_100
    assert got["wake_to_paid"] == {"deliveries": 1, "median_seconds": 3.5, "p90_seconds": 3.5}


def test_a_record_from_before_sent_msat_loads_and_counts_the_next_nodes_amount():
    data = held(HoldState.COMPLETE).to_json()
    for new in ("sent_msat", "woken_at", "paid_at"):
        data.pop(new, None)
    old = hold.HeldPayment.from_json(data)
    assert old.sent_msat is None and counters.fee_earned(old) == 110_000 - 100_000
    assert counters.counters([old], [])["wake_to_paid"] == {
        "deliveries": 0, "median_seconds": None, "p90_seconds": None}


def test_latency_looks_at_the_latest_hundred_deliveries_only():
    slow = [held(HoldState.COMPLETE, woken=t, paid=t + 60.0, payment_hash=f"{t:064x}") for t in range(50)]
    fast = [held(HoldState.COMPLETE, woken=t, paid=t + 1.0, payment_hash=f"{t:064x}")
            for t in range(1000, 1100)]
    assert counters.wake_to_paid(slow + fast) == {"deliveries": 100, "median_seconds": 1.0,
                                                  "p90_seconds": 1.0}
    # nearest rank: the 90th of 100 sorted times
    assert counters.wake_to_paid(slow[:10] + fast[:90])["p90_seconds"] == 1.0
    assert counters.wake_to_paid(slow[:11] + fast[:89])["p90_seconds"] == 60.0


@given(st.lists(st.tuples(st.floats(0, 1e9), st.floats(-10, 1e5)), max_size=150))
def test_latency_is_a_median_and_p90_within_the_times_and_never_negative(times):
    stored = [held(HoldState.COMPLETE, woken=w, paid=w + d, payment_hash=f"{i:064x}")
              for i, (w, d) in enumerate(times)]
    got = counters.wake_to_paid(stored)
    assert got["deliveries"] == min(len(times), counters.LATENCY_WINDOW)
    if times:
        assert 0 <= got["median_seconds"] <= got["p90_seconds"]
        assert got["p90_seconds"] <= round(max(max(0.0, d) for _, d in times), 3) + 1e-3


def test_rod_counts_come_from_its_pools():
    pools = [Pool(served={"aa" * 32: Served(node_id(1), 2_000_000_000),
                          "bb" * 32: Served(node_id(3), 2_000_000_000)},
                  notes={"aa" * 32: "00ff"}),
             Pool(served={"cc" * 32: Served(node_id(1), 2_000_000_000)})]
    got = counters.counters([], pools)
    assert (got["rod_invoices_served"], got["rod_notes_kept"]) == (3, 1)


ERRORS = st.sampled_from([None, hold.GAVE_UP, hold.CANCELLED_BY_PAYER, "recipient refused the payment: x",
                          "unknown next holder: y", "recipient unreachable: z", "anything"])


@st.composite
def records(draw):
    amount = draw(st.integers(100_000, 10**10))
    sent = draw(st.one_of(st.none(), st.integers(100_000, amount)))
    rec = draw(st.sampled_from([record(), NEXT_HOLDER]))
    return held(draw(st.sampled_from(list(HoldState))), amount, sent, draw(ERRORS),
                draw(st.sampled_from([None, "2019", "400c"])), rec,
                draw(st.binary(min_size=32, max_size=32)).hex())


@given(st.lists(records(), max_size=30))
def test_totals_are_the_sums_of_the_records_and_never_negative(stored):
    got = counters.counters(stored, [])
    assert all(v >= 0 for k, v in got.items() if k not in ("failed_back_by_reason", "wake_to_paid"))
    assert got["payments_held"] == len(stored)
    assert (got["payments_open"] + got["payments_delivered"] + got["payments_failed_back"]
            == got["payments_held"])
    assert sum(got["failed_back_by_reason"].values()) == got["payments_failed_back"]
    assert set(got["failed_back_by_reason"]) == set(counters.REASONS)
    assert got["held_now_msat"] == sum(h.incoming.amount_msat for h in stored if h.state in HOLD_OPEN)
    assert got["fees_earned_msat"] == sum(counters.fee_earned(h) for h in stored
                                          if h.state == HoldState.COMPLETE)
    assert got["fees_earned_msat"] <= sum(h.incoming.amount_msat for h in stored)
    assert got == counters.counters(list(reversed(stored)), [])  # order never matters
