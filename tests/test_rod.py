"""The Rod's core: deposits, fetches, notes, pruning and restarts.

Unit tests pin each refusal and its code; a state machine drives random
deposits (re-deposits of served hashes included), fetches, notes, time
jumps, pruning and restarts through JSON, checking the rules listed in
asyncln/rod.py's docstring after every step.
"""

import hashlib
import json
from dataclasses import replace

import pytest
from factories import node_id
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from asyncln import payee
from asyncln.errors import AsynclnError, Code
from asyncln.rod import (ENTRY_BYTES, RECORD_BYTES, SERVE_MARGIN_SECONDS, DepositResult,
                         Deposited, Pool, Rod, RodLimits, Served, check_invoice, invoice_bytes)

B, C, A, A2, STRANGER = (node_id(n) for n in range(11, 16))
NOW = 1_700_000_000
DAY = 86_400
ROD_ID = node_id(19)


def refused(code, call, *args, **kw) -> str:
    """Run ``call``, expect an AsynclnError with ``code``; return its message."""
    with pytest.raises(AsynclnError) as err:
        call(*args, **kw)
    assert err.value.code == code
    return str(err.value)


def payment_hash(name) -> str:
    return hashlib.sha256(str(name).encode()).hexdigest()


def invoice(name, amount=None, expires_at=NOW + 2 * DAY, size=100) -> Deposited:
    return Deposited(payment_hash(name), "lnbcrt" + "x" * (size - 6), amount, expires_at)


def decoded(**kw):
    base = {"type": "bolt11 invoice", "valid": True, "payee": B,
            "payment_hash": payment_hash(1), "payment_secret": "22" * 32,
            "amount_msat": 5000, "created_at": NOW - 100, "expiry": 2 * DAY}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def rod_with(*invoices, limits=RodLimits(), now=NOW) -> Rod:
    rod = Rod(limits)
    result = rod.deposit(B, True, invoices, now)
    assert result.refused == ()
    return rod


# --- options -----------------------------------------------------------------------------

def test_from_options_reads_every_option():
    limits = RodLimits.from_options({
        "asyncln-rod-max-invoices": "7", "asyncln-rod-max-bytes": 900,
        "asyncln-rod-min-expiry": 3600, "asyncln-rod-fetches-per-hour": 3,
        "asyncln-rod-max-notes": 0, "asyncln-rod-depositors": f" {B.upper()} , {C}"})
    assert limits == RodLimits(max_invoices=7, max_bytes=900, min_expiry_seconds=3600,
                               fetches_per_hour=3, max_notes=0, depositors=f"{B},{C}")
    assert RodLimits.from_options({}) == RodLimits()
    for mode in ("peers", "any", "none", "ANY"):
        assert RodLimits.from_options({"asyncln-rod-depositors": mode}).depositors == mode.lower()


@pytest.mark.parametrize("options, named", [
    ({"asyncln-rod-max-invoices": "many"}, "asyncln-rod-max-invoices must be an integer"),
    ({"asyncln-rod-max-invoices": 0}, "asyncln-rod-max-invoices must be at least 1"),
    ({"asyncln-rod-max-bytes": None}, "asyncln-rod-max-bytes must be an integer"),
    ({"asyncln-rod-min-expiry": SERVE_MARGIN_SECONDS - 1},
     f"asyncln-rod-min-expiry must be at least {SERVE_MARGIN_SECONDS}"),
    ({"asyncln-rod-fetches-per-hour": 0}, "asyncln-rod-fetches-per-hour must be at least 1"),
    ({"asyncln-rod-max-notes": -1}, "asyncln-rod-max-notes must be at least 0"),
    ({"asyncln-rod-depositors": "friends"}, "asyncln-rod-depositors must be"),
    ({"asyncln-rod-depositors": f"{B},"}, "asyncln-rod-depositors must be"),
    ({"asyncln-rod-depositors": "04" + "aa" * 32}, "asyncln-rod-depositors must be"),
    ({"asyncln-rod-max-bytes": "x", "asyncln-rod-depositors": "x"}, "asyncln-rod-max-bytes"),
])
def test_from_options_names_the_first_bad_option(options, named):
    with pytest.raises(ValueError, match=named):
        RodLimits.from_options(options)


# --- check_invoice -----------------------------------------------------------------------

def test_check_invoice_keeps_what_the_rod_needs():
    assert check_invoice(B, decoded(), "lnbcrt1x", NOW, RodLimits()) == Deposited(
        payment_hash(1), "lnbcrt1x", 5000, NOW - 100 + 2 * DAY)
    assert check_invoice(B, decoded(amount_msat=None), "lnbcrt1x", NOW,
                         RodLimits()).amount_msat is None
    assert check_invoice(B, decoded(amount_msat="42msat"), "ln", NOW,
                         RodLimits()).amount_msat == 42


@pytest.mark.parametrize("changes, bolt11, reason", [
    ({"type": "bolt12 offer"}, "ln", "not a valid BOLT11 invoice"),
    ({"valid": False}, "ln", "not a valid BOLT11 invoice"),
    ({"valid": None}, "ln", "not a valid BOLT11 invoice"),
    ({"valid": "yes"}, "ln", "not a valid BOLT11 invoice"),
    ({"payment_hash": None}, "ln", "no valid payment hash"),
    ({"payment_hash": "ab" * 31}, "ln", "no valid payment hash"),
    ({}, "", "no invoice string"),
    ({"payee": C}, "ln", "not the depositor's own"),
    ({"payee": None}, "ln", "not the depositor's own"),
    ({"payment_secret": None}, "ln", "no payment secret"),
    ({"payment_secret": "zz" * 32}, "ln", "no payment secret"),
    ({"amount_msat": 0}, "ln", "asks for 0msat"),
    ({"amount_msat": "lots"}, "ln", "unreadable amount"),
    ({"created_at": None}, "ln", "unreadable creation time"),
    ({"created_at": "1700000000"}, "ln", "unreadable creation time"),
    ({"expiry": True}, "ln", "unreadable creation time"),
    ({"expiry": DAY - 1, "created_at": NOW}, "ln", "the Rod keeps invoices valid for at least"),
    ({"expiry": None, "created_at": NOW}, "ln", "expires in 3600s"),  # BOLT 11's default
    ({"created_at": NOW - 3 * DAY}, "ln", "expires in -"),
])
def test_check_invoice_refusals(changes, bolt11, reason):
    message = refused(Code.DEPOSIT_REFUSED, check_invoice, B, decoded(**changes), bolt11, NOW,
                      RodLimits())
    assert reason in message
    if "payment hash" not in reason and "BOLT11" not in reason:
        assert message.startswith(payment_hash(1)[:16])


def test_check_invoice_honours_min_expiry():
    limits = RodLimits(min_expiry_seconds=3600)
    assert check_invoice(B, decoded(created_at=NOW, expiry=3600), "ln", NOW, limits)
    refused(Code.DEPOSIT_REFUSED, check_invoice, B, decoded(created_at=NOW, expiry=3599), "ln",
            NOW, limits)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70)
    | st.sampled_from(["bolt11 invoice", B, "ab" * 32, "12msat", "-5", "nan", "0"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6)
KEYS = ["type", "valid", "payee", "payment_hash", "payment_secret", "amount_msat",
        "created_at", "expiry"]


@st.composite
def mangled_decodes(draw):
    """A valid answer with each key kept, dropped or replaced by any JSON value."""
    answer = {}
    for key, value in decoded().items():
        match draw(st.sampled_from(["keep", "drop", "replace"])):
            case "keep":
                answer[key] = value
            case "replace":
                answer[key] = draw(JSON)
    return answer


@settings(max_examples=500)
@given(answer=mangled_decodes() | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6),
                                                  JSON) | JSON,
       bolt11=st.just("lnbcrt1x") | JSON, now=st.integers(0, 2 * NOW))
def test_check_invoice_refuses_any_shape_with_deposit_refused(answer, bolt11, now):
    try:
        deposited = check_invoice(B, answer, bolt11, now, RodLimits())
    except AsynclnError as e:
        assert e.code == Code.DEPOSIT_REFUSED
        return
    assert answer["payee"] == B and deposited.bolt11 == bolt11
    assert deposited.expires_at - now >= RodLimits().min_expiry_seconds
    assert deposited.amount_msat is None or deposited.amount_msat >= 1


# --- deposits ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode, depositor, is_peer, allowed", [
    ("peers", B, True, True), ("peers", B, False, False),
    ("any", STRANGER, False, True), ("none", B, True, False),
    (f"{C},{B}", B, False, True), (f"{C},{B}", STRANGER, True, False),
])
def test_only_allowed_depositors_change_anything(mode, depositor, is_peer, allowed):
    rod = Rod(RodLimits(depositors=mode))
    if allowed:
        rod.may_deposit(depositor, is_peer)
        assert rod.deposit(depositor, is_peer, [invoice(1)], NOW) == DepositResult(1, (), 1)
    else:
        refused(Code.DEPOSIT_REFUSED, rod.may_deposit, depositor, is_peer)
        refused(Code.DEPOSIT_REFUSED, rod.deposit, depositor, is_peer, [invoice(1)], NOW)
        refused(Code.DEPOSIT_REFUSED, rod.deposit, depositor, is_peer, [], NOW)  # no level either
        assert rod.pool(depositor) == Pool()


def test_each_refused_item_has_its_reason_and_takes_no_room():
    # Room for the record, one served hash and three 100-character invoices (300 each).
    rod = Rod(RodLimits(max_invoices=3, max_bytes=RECORD_BYTES + 4 * ENTRY_BYTES + 300))
    served = invoice("served")
    rod.deposit(B, True, [served], NOW)
    assert rod.fetch(A, B, 1, NOW) == served
    result = rod.deposit(B, True, [
        invoice(1), invoice(1), served, "lnbcrt9: decode failed",
        invoice(2, expires_at=NOW + DAY - 1), invoice(3, size=401), invoice(4), invoice(5),
        invoice(6)], NOW)
    assert result.accepted == 3 and result.level == 3
    assert [i.payment_hash for i in rod.pool(B).invoices] == [
        payment_hash(n) for n in (1, 4, 5)]
    assert len(result.refused) == 6
    dup, served_again, shell, soon, big, full = result.refused
    assert dup.startswith(payment_hash(1)[:16]) and "already in the pool" in dup
    assert served_again.startswith(served.payment_hash[:16]) and "already served" in served_again
    assert shell == "lnbcrt9: decode failed"
    assert soon.startswith(payment_hash(2)[:16]) and "asyncln-rod-min-expiry" in soon
    assert big.startswith(payment_hash(3)[:16]) and "asyncln-rod-max-bytes=1250" in big
    assert full.startswith(payment_hash(6)[:16]) and "asyncln-rod-max-invoices=3" in full


def test_an_empty_deposit_asks_the_level_and_expired_invoices_hold_no_room():
    rod = Rod(RodLimits(max_invoices=2))
    assert rod.deposit(B, True, [], NOW) == DepositResult(0, (), 0)
    assert rod.pool(B) == Pool()  # a query keeps nothing for a newcomer
    rod.deposit(B, True, [invoice(1, expires_at=NOW + DAY), invoice(2)], NOW)
    assert rod.deposit(B, True, [], NOW).level == 2
    later = NOW + DAY
    assert rod.deposit(B, True, [invoice(3, expires_at=later + 2 * DAY)], later) == \
        DepositResult(1, (), 2)
    assert [i.payment_hash for i in rod.pool(B).invoices] == [payment_hash(2), payment_hash(3)]


def test_a_served_hash_is_accepted_again_only_as_expired():
    rod = rod_with(invoice(1, expires_at=NOW + DAY))
    served = rod.fetch(A, B, 1, NOW)
    rod.prune(NOW + DAY)
    assert rod.pool(B) == Pool()
    again = rod.deposit(B, True, [served], NOW + DAY)
    assert again.accepted == 0 and "expires in 0s" in again.refused[0]


# --- fetches -----------------------------------------------------------------------------

def test_fetch_prefers_the_exact_amount_then_amountless_then_the_latest_expiry():
    late = NOW + 3 * DAY
    rod = rod_with(invoice("none-early", None, NOW + DAY), invoice("5k", 5000, NOW + DAY),
                   invoice("none-late", None, late), invoice("7k", 7000),
                   invoice("5k-late", 5000, late), invoice("5k-late-2", 5000, late))
    assert [rod.fetch(A, B, 5000, NOW).payment_hash for _ in range(3)] == [
        payment_hash(n) for n in ("5k-late", "5k-late-2", "5k")]
    assert [rod.fetch(A, B, 5000, NOW).payment_hash for _ in range(2)] == [
        payment_hash(n) for n in ("none-late", "none-early")]
    refused(Code.POOL_EMPTY, rod.fetch, A, B, 5000, NOW)
    assert rod.fetch(A2, B, 7000, NOW).amount_msat == 7000


def test_fetch_moves_the_invoice_to_served():
    rod = rod_with(invoice(1), invoice(2, 9))
    got = rod.fetch(A, B, 10, NOW)
    assert got == invoice(1)
    assert rod.pool(B) == Pool((invoice(2, 9),), {got.payment_hash: Served(A, got.expires_at)})
    assert rod.level(B) == 1


def test_fetch_refusals():
    rod = rod_with(invoice(1, 5000), invoice(2, None, NOW + DAY))
    before = rod.pool(B)
    refused(Code.UNKNOWN_RECIPIENT, rod.fetch, A, C, 5000, NOW)
    assert "any amount" in refused(Code.POOL_EMPTY, rod.fetch, A, B, 5000, NOW + 2 * DAY)
    refused(Code.POOL_EMPTY, rod.fetch, A, B, 5000, NOW + 2 * DAY - SERVE_MARGIN_SECONDS + 1)
    for bad in (0, -1, True, 1.5, "5000"):
        refused(Code.BAD_PARAMETER, rod.fetch, A2, B, bad, NOW)
    assert rod.pool(B) == before
    # the amountless one is about to expire: only the exact amount fits
    late = NOW + DAY - SERVE_MARGIN_SECONDS + 1
    refused(Code.POOL_EMPTY, rod.fetch, C, B, 4000, late)
    assert rod.fetch(C, B, 5000, late) == invoice(1, 5000)


def test_the_rate_limit_is_a_token_bucket_per_requester():
    rod = rod_with(*(invoice(n) for n in range(30)), limits=RodLimits(fetches_per_hour=10))
    for _ in range(10):
        rod.fetch(A, B, 1, NOW)
    message = refused(Code.RATE_LIMITED, rod.fetch, A, B, 1, NOW)
    assert "retry in 360s" in message
    refused(Code.RATE_LIMITED, rod.fetch, A, B, 1, NOW + 359.5)
    rod.fetch(A, B, 1, NOW + 360)  # refused requests cost nothing: one token is back
    refused(Code.RATE_LIMITED, rod.fetch, A, B, 1, NOW + 360)
    rod.fetch(A2, B, 1, NOW)  # each requester has its own bucket
    refused(Code.UNKNOWN_RECIPIENT, rod.fetch, A2, C, 1, NOW)  # answered: costs a token
    for _ in range(8):
        rod.fetch(A2, B, 1, NOW)
    refused(Code.RATE_LIMITED, rod.fetch, A2, B, 1, NOW)
    for _ in range(10):
        rod.fetch(A, B, 1, NOW + 360 + 3600)  # an hour later the bucket is full again


def test_no_rounding_refuses_the_last_request_of_a_burst():
    for per_hour in (3, 7, 11, 13):
        rod = rod_with(*(invoice(n) for n in range(3 * per_hour)),
                       limits=RodLimits(fetches_per_hour=per_hour))
        for t in (NOW, NOW + 3600, NOW + 7200):  # a full bucket each hour
            for _ in range(per_hour):
                rod.fetch(A, B, 1, t)
            refused(Code.RATE_LIMITED, rod.fetch, A, B, 1, t)


@settings(max_examples=300)
@given(per_hour=st.sampled_from([1, 3, 10, 40]) | st.integers(1, 100), data=st.data(),
       requests=st.lists(st.tuples(st.sampled_from([A, A2]), st.integers(0, 3),
                                   st.sampled_from([-1, 0, 1]) | st.integers(-100, 100)),
                         max_size=40))
def test_each_requester_gets_at_most_its_tokens_and_always_them(per_hour, data, requests):
    """Against a sliding-window statement of the bucket: admit iff, for every earlier admitted
    request, those since it plus this one fit in ``per_hour`` plus what refilled meanwhile.

    No pool exists: an answered request (UNKNOWN_RECIPIENT) costs a token all the same.
    """
    rod = Rod(RodLimits(fetches_per_hour=per_hour))
    now, admitted = NOW, {A: [], A2: []}
    for requester, tokens, jitter in requests:
        now = max(now, now + tokens * 3600 // per_hour + jitter)  # waits near a token's refill
        times = admitted[requester]
        admit = all((len(times) - j + 1) * 3600 <= per_hour * (3600 + now - t)
                    for j, t in enumerate(times))
        with pytest.raises(AsynclnError) as err:
            rod.fetch(requester, B, 1000, now)
        assert err.value.code == (Code.UNKNOWN_RECIPIENT if admit else Code.RATE_LIMITED)
        if admit:
            times.append(now)


def test_a_restart_refills_every_bucket_and_prune_forgets_full_ones():
    rod = rod_with(*(invoice(n) for n in range(5)), limits=RodLimits(fetches_per_hour=1))
    rod.fetch(A, B, 1, NOW)
    refused(Code.RATE_LIMITED, rod.fetch, A, B, 1, NOW)
    rod = Rod(rod.limits, {B: rod.pool(B)})
    rod.fetch(A, B, 1, NOW)
    rod.prune(NOW + 3599)
    assert A in rod._full_at  # memory: only the buckets not yet full are kept
    rod.prune(NOW + 3600)
    assert rod._full_at == {}
    rod.fetch(A, B, 1, NOW + 3600)


# --- notes -------------------------------------------------------------------------------

def test_notes_wait_for_the_recipient_in_arrival_order():
    rod = rod_with(invoice(1), invoice(2))
    first, second = rod.fetch(A, B, 1, NOW), rod.fetch(A2, B, 1, NOW)
    rod.store_note(A2, B, second.payment_hash, b"\x00hello")
    rod.store_note(A, B, first.payment_hash, b"x" * 561)
    assert rod.notes_for(B) == [(second.payment_hash, b"\x00hello"),
                                (first.payment_hash, b"x" * 561)]
    assert rod.notes_for(C) == []
    rod.prune(NOW + 3 * DAY)  # the invoices expired; the notes still wait for B
    assert rod.pool(B).served == {} and len(rod.notes_for(B)) == 2
    assert rod.note_delivered(B, second.payment_hash) is True
    assert rod.note_delivered(B, second.payment_hash) is False
    assert rod.note_delivered(C, first.payment_hash) is False
    assert rod.notes_for(B) == [(first.payment_hash, b"x" * 561)]
    assert rod.note_delivered(B, first.payment_hash)
    assert rod.pool(B) == Pool()


def test_note_refusals():
    rod = rod_with(*(invoice(n) for n in range(4)), limits=RodLimits(max_notes=2))
    rod.deposit(C, True, [invoice("c")], NOW)
    mine, theirs, third, fourth = (rod.fetch(A, B, 1, NOW).payment_hash for _ in range(4))
    other = rod.fetch(A2, C, 1, NOW).payment_hash
    before = {d: rod.pool(d) for d in (B, C)}
    for sender, recipient, h in [(A2, B, mine), (A, C, mine), (A, B, payment_hash("never")),
                                 (A, B, other), (A2, C, mine)]:
        assert "was served to you" in refused(Code.NOTE_REFUSED, rod.store_note, sender,
                                              recipient, h, b"note")
    assert "1 to 561 bytes" in refused(Code.NOTE_REFUSED, rod.store_note, A, B, mine, b"")
    refused(Code.NOTE_REFUSED, rod.store_note, A, B, mine, b"x" * 562)
    assert {d: rod.pool(d) for d in (B, C)} == before
    rod.store_note(A, B, mine, b"note")
    assert "already waiting" in refused(Code.NOTE_REFUSED, rod.store_note, A, B, mine, b"again")
    rod.store_note(A, B, theirs, b"note")
    assert "2 notes already wait" in refused(Code.NOTE_REFUSED, rod.store_note, A, B, third, b"n")
    rod.note_delivered(B, mine)
    rod.store_note(A, B, fourth, b"n")


# --- upkeep and persistence ----------------------------------------------------------------

def test_prune_reports_what_changed_and_forgets_empty_pools():
    rod = rod_with(invoice(1, expires_at=NOW + DAY), invoice(2, expires_at=NOW + 2 * DAY))
    rod.deposit(C, True, [invoice("c", expires_at=NOW + 3 * DAY)], NOW)
    served = rod.fetch(A, B, 1, NOW)
    assert served == invoice(2, expires_at=NOW + 2 * DAY)
    assert rod.prune(NOW + DAY - 1) == []
    assert rod.prune(NOW + DAY) == [B]
    assert rod.pool(B) == Pool((), {served.payment_hash: Served(A, served.expires_at)})
    refused(Code.POOL_EMPTY, rod.fetch, A2, B, 1, NOW + DAY)
    assert rod.prune(NOW + 2 * DAY) == [B]
    assert rod.pool(B) == Pool()
    refused(Code.UNKNOWN_RECIPIENT, rod.fetch, A2, B, 1, NOW + 2 * DAY)
    assert rod.prune(NOW + 3 * DAY) == [C]


def test_a_pool_round_trips_through_json_and_cannot_be_changed_in_place():
    pool = Pool((invoice(1, 5), invoice(2)), {payment_hash(3): Served(A, NOW)},
                {payment_hash(3): "00ff"})
    data = json.loads(json.dumps(pool.to_json()))
    assert Pool.from_json(data) == pool
    assert Pool.from_json(Pool().to_json()) == Pool()
    with pytest.raises(TypeError):
        pool.served[payment_hash(4)] = Served(A, NOW)
    raw = {payment_hash(4): Served(A, NOW)}
    copy = Pool(served=raw)
    raw.clear()
    assert payment_hash(4) in copy.served


# --- the rules over random histories -------------------------------------------------------

DEPOSITORS = [B, C, STRANGER]
PAYEE_SECRETS = {d: hashlib.sha256(b"payee" + d.encode()).hexdigest() for d in DEPOSITORS}
PAYEE_KEYS = {d: payee.public_key(secret) for d, secret in PAYEE_SECRETS.items()}
PEERS = {B, C}
REQUESTERS = [A, A2, B]
AMOUNTS = [1000, 2000, 3000]
CATALOGUE_SIZE = 5
# Seconds from the start to each catalogue invoice's expiry: mostly long, some at the edges.
EXPIRIES = st.integers(DAY, 10 * DAY) | st.sampled_from([0, SERVE_MARGIN_SECONDS, 3600, DAY])
MODES = ["peers", "peers", "any", "none", B]
TIME_STEPS = st.sampled_from([0, 1, SERVE_MARGIN_SECONDS - 1, SERVE_MARGIN_SECONDS, 1800,
                              3600, 4 * 3600]) | st.integers(0, DAY)


class RodMachine(RuleBasedStateMachine):
    @initialize(data=st.data(), mode=st.sampled_from(MODES),
                max_invoices=st.integers(1, 4),
                max_bytes=st.integers(RECORD_BYTES, RECORD_BYTES + 4 * ENTRY_BYTES + 400),
                min_expiry=st.sampled_from([SERVE_MARGIN_SECONDS, 3600, DAY]),
                max_expiry=st.sampled_from([DAY, 3 * DAY, 14 * DAY]),
                per_hour=st.sampled_from([10, 40, 1, 3]), max_notes=st.integers(0, 3),
                note_bytes=st.integers(1, 6))
    def start(self, data, mode, max_invoices, max_bytes, min_expiry, max_expiry, per_hour,
              max_notes, note_bytes):
        self.limits = RodLimits(max_invoices=max_invoices, max_bytes=max_bytes,
                                min_expiry_seconds=min_expiry,
                                max_expiry_seconds=max(min_expiry, max_expiry),
                                fetches_per_hour=per_hour,
                                max_notes=max_notes, max_note_bytes=note_bytes, depositors=mode)
        self.rod = Rod(self.limits)
        self.now = NOW
        # One fixed invoice per hash: a re-deposit of a hash is the same invoice.
        self.catalogue = {d: [Deposited(payment_hash((d, n)),
                                        "ln" + "x" * data.draw(st.integers(8, 150)),
                                        data.draw(st.sampled_from([None, None] + AMOUNTS)),
                                        NOW + data.draw(EXPIRIES),
                                        data.draw(st.sampled_from([None, "0f" * 20])))
                              for n in range(CATALOGUE_SIZE)] for d in DEPOSITORS}
        self.proven = set()     # (depositor, payee key) a valid owner signature was shown for
        self.served = {}        # payment_hash -> requester: every hash ever served
        self.admitted = {r: [] for r in REQUESTERS}  # times of requests the bucket let through
        self.notes = {d: {} for d in DEPOSITORS}     # what must be waiting for each recipient

    def allowed(self, depositor):
        return self.limits.allows(depositor, depositor in PEERS)

    def snapshot(self):
        return {d: self.rod.pool(d) for d in DEPOSITORS}

    def refused(self, code, call, *args):
        before = self.snapshot()
        with pytest.raises(AsynclnError) as err:
            call(*args)
        assert err.value.code == code
        assert self.snapshot() == before, "a refused call changed a pool"

    @rule(depositor=st.sampled_from(DEPOSITORS),
          picks=st.lists(st.sampled_from([*range(CATALOGUE_SIZE), "bad"]), max_size=6))
    def deposit(self, depositor, picks):
        items = [p if p == "bad" else self.catalogue[depositor][p] for p in picks]
        if not self.allowed(depositor):
            return self.refused(Code.DEPOSIT_REFUSED, self.rod.deposit, depositor,
                                depositor in PEERS, items, self.now)
        start = self.rod.pool(depositor).fresh(self.now)
        kept, size, reasons = list(start.invoices), start.size_bytes, []
        for item in items:
            if item == "bad":
                reasons.append(item)
            elif (item.payment_hash in {i.payment_hash for i in kept} | set(start.served)
                  or item.expires_at - self.now < self.limits.min_expiry_seconds
                  or item.expires_at - self.now > self.limits.max_expiry_seconds
                  or len(kept) == self.limits.max_invoices
                  or size + len(item.bolt11) + len(item.offer or "") + ENTRY_BYTES
                  > self.limits.max_bytes):
                reasons.append(item.payment_hash[:16])
            else:
                assert item.payment_hash not in self.served, "a served hash was accepted again"
                kept.append(item)
                size += len(item.bolt11) + len(item.offer or "") + ENTRY_BYTES
        result = self.rod.deposit(depositor, depositor in PEERS, items, self.now)
        assert result.level == len(kept) == self.rod.level(depositor)
        assert result.accepted == len(kept) - len(start.invoices)
        assert [r if r == "bad" else r[:16] for r in result.refused] == reasons
        expected = replace(start, invoices=tuple(kept))
        # An emptied pool is forgotten, its payee key too: the next deposit proves it again.
        assert self.rod.pool(depositor) == (Pool() if expected.is_empty else expected)

    @rule(requester=st.sampled_from(REQUESTERS), amount=st.sampled_from(AMOUNTS * 3 + [0]),
          data=st.data())
    def fetch(self, requester, amount, data):
        """Mostly from a recipient with invoices; private ones name a payee key, or guess."""
        stocked = [d for d in DEPOSITORS if self.rod.level(d)]
        recipient = data.draw((st.sampled_from(stocked) if stocked else st.nothing())
                              | st.sampled_from(DEPOSITORS))
        private = data.draw(st.booleans())
        name = recipient
        if private:  # the pool's key, another key, or the node id itself: a guess
            name = data.draw(st.sampled_from([PAYEE_KEYS[recipient], recipient]))
            recipient = next((d for d in DEPOSITORS if (d, name) in self.proven
                              and self.rod.pool(d).payee_key == name), None)
        times = self.admitted[requester]
        # A sliding-window form of the bucket: admit iff, for every earlier admitted
        # request j, the requests since j plus this one fit in per_hour tokens plus the refill.
        per_hour = self.limits.fetches_per_hour
        admit = all((len(times) - j + 1) * 3600 <= per_hour * (3600 + self.now - t)
                    for j, t in enumerate(times))
        before = self.rod.pool(recipient) if recipient else Pool()
        usable = [i for i in before.invoices if i.expires_at - self.now >= SERVE_MARGIN_SECONDS
                  and (i.offer is not None or not private)]
        fits = ([i for i in usable if i.amount_msat == amount]
                or [i for i in usable if i.amount_msat is None])
        if not admit:
            return self.refused(Code.RATE_LIMITED, self.rod.fetch, requester, name, amount,
                                self.now, private)
        times.append(self.now)
        if amount == 0:
            return self.refused(Code.BAD_PARAMETER, self.rod.fetch, requester, name, 0,
                                self.now, private)
        if before.is_empty:
            return self.refused(Code.UNKNOWN_RECIPIENT, self.rod.fetch, requester, name,
                                amount, self.now, private)
        if not fits:
            return self.refused(Code.POOL_EMPTY, self.rod.fetch, requester, name, amount,
                                self.now, private)
        got = self.rod.fetch(requester, name, amount, self.now, private)
        assert got.payment_hash not in self.served, "a hash was served twice"
        assert got.expires_at - self.now >= SERVE_MARGIN_SECONDS
        assert got == max(fits, key=lambda i: i.expires_at)
        self.served[got.payment_hash] = requester
        start = before.fresh(self.now)
        assert self.rod.pool(recipient) == replace(
            start, invoices=tuple(i for i in start.invoices if i != got),
            served={**start.served, got.payment_hash: Served(requester, got.expires_at)})

    @rule(depositor=st.sampled_from(DEPOSITORS), owner=st.sampled_from(DEPOSITORS),
          key_of=st.sampled_from(DEPOSITORS), named=st.sampled_from(DEPOSITORS),
          rod_id=st.sampled_from([ROD_ID, B]), signed=st.booleans())
    def claim_payee_key(self, depositor, owner, key_of, named, rod_id, signed):
        """``depositor`` claims ``key_of``'s payee key with ``owner``'s signature naming
        ``named`` at ``rod_id``: valid only when all of them are the depositor's, here."""
        key = PAYEE_KEYS[key_of]
        sig = (payee.sign(PAYEE_SECRETS[owner], payee.owner_statement(named, rod_id))
               if signed else None)
        before = self.snapshot()
        problem, changed = self.rod.claim_payee_key(depositor, key, sig, ROD_ID)
        valid = signed and owner == key_of and named == depositor and rod_id == ROD_ID
        assert (problem is None) == valid
        if not valid or before[depositor] == Pool():
            assert self.snapshot() == before and changed == ()
            return
        self.proven.add((depositor, key))
        assert self.rod.pool(depositor).payee_key == key
        assert set(changed) == {d for d in DEPOSITORS if self.snapshot()[d] != before[d]}

    @rule(data=st.data())
    def store_note(self, data):
        """Mostly about a hash served for its recipient, sent by its requester or another."""
        served = [(d, h) for d in DEPOSITORS for h in sorted(self.rod.pool(d).served)]
        recipient, h = data.draw(
            (st.sampled_from(served) if served else st.nothing())
            | st.tuples(st.sampled_from(DEPOSITORS),
                        st.sampled_from([i.payment_hash for i in self.catalogue[B]])))
        pool = self.rod.pool(recipient)
        sender = data.draw(st.sampled_from([self.served.get(h, A)] + REQUESTERS))
        sealed = data.draw(st.binary(max_size=self.limits.max_note_bytes + 1))
        served = pool.served.get(h)
        if (served is None or served.requester != sender or not sealed
                or len(sealed) > self.limits.max_note_bytes or h in pool.notes
                or len(pool.notes) >= self.limits.max_notes):
            return self.refused(Code.NOTE_REFUSED, self.rod.store_note, sender, recipient, h,
                                sealed)
        assert self.served[h] == sender
        self.rod.store_note(sender, recipient, h, sealed)
        self.notes[recipient][h] = sealed

    @rule(recipient=st.sampled_from(DEPOSITORS), n=st.integers(0, CATALOGUE_SIZE - 1))
    def deliver(self, recipient, n):
        h = self.catalogue[recipient][n].payment_hash
        before = self.snapshot()
        assert self.rod.note_delivered(recipient, h) == (h in self.notes[recipient])
        if self.notes[recipient].pop(h, None) is None:
            assert self.snapshot() == before

    @rule(seconds=TIME_STEPS)
    def wait(self, seconds):
        self.now += seconds

    @rule(data=st.data(), early=st.sampled_from([0, 1, SERVE_MARGIN_SECONDS - 1,
                                                  SERVE_MARGIN_SECONDS, SERVE_MARGIN_SECONDS + 1]))
    def near_expiry(self, data, early):
        """Jump to an invoice's expiry, or just before: where the expiry rules bite."""
        ends = sorted({i.expires_at for invoices in self.catalogue.values() for i in invoices})
        self.now = max(self.now, data.draw(st.sampled_from(ends)) - early)

    @rule(tokens=st.integers(1, 3), early=st.booleans())
    def wait_for_tokens(self, tokens, early):
        """Wait exactly as long as ``tokens`` tokens take to come back, or a second less."""
        self.now += tokens * 3600 // self.limits.fetches_per_hour - early

    @rule()
    def prune(self):
        before = self.snapshot()
        changed = self.rod.prune(self.now)
        assert changed == sorted(d for d in DEPOSITORS if before[d].fresh(self.now) != before[d])
        for d in DEPOSITORS:
            assert self.rod.pool(d) == (before[d].fresh(self.now)
                                        if not before[d].fresh(self.now).is_empty else Pool())

    @rule()
    def restart(self):
        saved = {d: json.loads(json.dumps(self.rod.pool(d).to_json())) for d in DEPOSITORS}
        pools = {d: Pool.from_json(data) for d, data in saved.items()}
        assert pools == self.snapshot()
        self.rod = Rod(self.limits, pools)
        self.admitted = {r: [] for r in REQUESTERS}  # buckets live in memory only

    @invariant()
    def rules_hold(self):
        for d in DEPOSITORS:
            pool = self.rod.pool(d)
            if not self.allowed(d):
                assert pool == Pool(), "a depositor not allowed has a pool"
            assert len(pool.invoices) <= self.limits.max_invoices
            # Served hashes count: fetches from throw-away ids cannot grow the record.
            assert pool.size_bytes <= self.limits.max_bytes
            record = json.dumps(replace(pool, notes={}).to_json(), sort_keys=True)
            assert len(record) <= pool.size_bytes, "the size bound misses part of the record"
            # A payee key is filed only under its owner's signature naming this depositor.
            assert pool.payee_key is None or (d, pool.payee_key) in self.proven
            hashes = [i.payment_hash for i in pool.invoices]
            assert len(set(hashes)) == len(hashes)
            assert not set(hashes) & set(self.served), "a served hash is back in a pool"
            assert all(self.served[h] == s.requester for h, s in pool.served.items())
            assert self.rod.notes_for(d) == list(self.notes[d].items())
            assert all(h in self.served for h in pool.notes), "a note for a hash never served"
            assert all(i.amount_msat is None or i.amount_msat in AMOUNTS for i in pool.invoices)
        keys = [self.rod.pool(d).payee_key for d in DEPOSITORS if self.rod.pool(d).payee_key]
        assert len(keys) == len(set(keys)), "two pools share a payee key"


RodMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=80, deadline=None)
TestRodMachine = RodMachine.TestCase


def test_a_rod_keeps_only_invoices_that_name_it():
    """The description says where the invoice was deposited: the payer checks it too."""
    mine = decoded(description=f"asyncln-rod:{C}")
    assert check_invoice(B, mine, "lnbcrt1x", NOW, RodLimits(), rod_id=C).payment_hash
    for other in ({"description": f"asyncln-rod:{B}"}, {"description": "Order #7"}, {}):
        with pytest.raises(AsynclnError, match="description") as e:
            check_invoice(B, {**mine, **other} if other else
                          {k: v for k, v in mine.items() if k != "description"},
                          "lnbcrt1x", NOW, RodLimits(), rod_id=C)
        assert e.value.code == Code.DEPOSIT_REFUSED


# --- who a pool belongs to (issue 11, item 4) ----------------------------------------------

B_PAYEE_SECRET, M_PAYEE_SECRET = "b1" * 32, "e1" * 32
B_PAYEE_KEY = payee.public_key(B_PAYEE_SECRET)
MALLORY = STRANGER


def owner_sig(secret, depositor, rod_id=ROD_ID):
    return payee.sign(secret, payee.owner_statement(depositor, rod_id))


def with_payee_key(limits=RodLimits(depositors="any")) -> Rod:
    """B keeps a pool with an offer-carrying invoice and its signed payee key."""
    rod = Rod(limits)
    rod.deposit(B, True, [replace(invoice("b"), offer="0f" * 400)], NOW)
    assert rod.claim_payee_key(B, B_PAYEE_KEY, owner_sig(B_PAYEE_SECRET, B), ROD_ID) == (
        None, (B,))
    return rod


def test_a_payee_key_is_filed_only_under_its_signature_for_the_depositor_and_this_rod():
    rod = with_payee_key()
    rod.deposit(MALLORY, False, [replace(invoice("m"), offer="0e" * 400)], NOW)
    before = {d: rod.pool(d) for d in (B, MALLORY)}
    for sig in (None,                                         # an old depositor: no signature
                owner_sig(B_PAYEE_SECRET, B),                 # B's own, replayed
                owner_sig(M_PAYEE_SECRET, MALLORY),           # by another key
                owner_sig(B_PAYEE_SECRET, MALLORY, rod_id=B),  # for another Rod
                payee.sign(B_PAYEE_SECRET, b"anything else"), "00" * 8):
        problem, changed = rod.claim_payee_key(MALLORY, B_PAYEE_KEY, sig, ROD_ID)
        assert problem and changed == (), sig
    assert {d: rod.pool(d) for d in (B, MALLORY)} == before
    # B's private payers are still served from B's pool, by B's payee key only.
    assert rod.fetch(A, B_PAYEE_KEY, 1000, NOW, private=True).payment_hash == payment_hash("b")


def test_a_payee_key_filed_first_by_a_hijacker_does_not_keep_it_from_its_owner():
    rod = Rod(RodLimits(depositors="any"))
    rod.deposit(MALLORY, False, [replace(invoice("m"), offer="0e" * 400)], NOW)
    assert rod.claim_payee_key(MALLORY, B_PAYEE_KEY, None, ROD_ID)[0]
    rod.deposit(B, True, [replace(invoice("b"), offer="0f" * 400)], NOW)
    assert rod.claim_payee_key(B, B_PAYEE_KEY, owner_sig(B_PAYEE_SECRET, B), ROD_ID) == (
        None, (B,))
    assert rod.depositor_of(B_PAYEE_KEY, private=True) == B
    assert rod.fetch(A, B_PAYEE_KEY, 1000, NOW, private=True).payment_hash == payment_hash("b")


def test_node_ids_and_payee_keys_are_separate_namespaces():
    """A private request naming B's node id learns nothing: no guessing who is behind a key."""
    rod = with_payee_key()
    before = rod.pool(B)
    refused(Code.UNKNOWN_RECIPIENT, rod.fetch, A, B, 1000, NOW, private=True)
    refused(Code.UNKNOWN_RECIPIENT, rod.fetch, A, B_PAYEE_KEY, 1000, NOW)  # and the reverse
    assert rod.pool(B) == before
    assert rod.depositor_of(B) == B and rod.depositor_of(B, private=True) is None
    assert rod.depositor_of(B_PAYEE_KEY, private=True) == B and rod.depositor_of(B_PAYEE_KEY) is None


def test_a_note_needs_a_pool_and_is_filed_under_the_namespace_it_names():
    rod = with_payee_key()
    served = rod.fetch(A, B_PAYEE_KEY, 1000, NOW, private=True).payment_hash
    for recipient, private in ((C, False), (C, True), (B, True), (B_PAYEE_KEY, False)):
        assert "no pool" in refused(Code.NOTE_REFUSED, rod.store_note, A, recipient, served,
                                    b"sealed", private)
    assert rod.notes_for(B) == []
    assert rod.store_note(A, B_PAYEE_KEY, served, b"sealed", private=True) == B
    assert rod.notes_for(B) == [(served, b"sealed")]


# --- bounds a greedy depositor cannot break (issue 11, item 5) -----------------------------

def test_an_invoice_valid_longer_than_max_expiry_is_refused():
    limits = RodLimits(max_expiry_seconds=14 * DAY)
    fifty_years = decoded(created_at=NOW, expiry=50 * 365 * DAY)
    assert "asyncln-rod-max-expiry" in refused(Code.DEPOSIT_REFUSED, check_invoice, B,
                                               fifty_years, "ln", NOW, limits)
    assert check_invoice(B, decoded(created_at=NOW, expiry=14 * DAY), "ln", NOW, limits)
    rod = Rod(limits)
    result = rod.deposit(B, True, [invoice(1, expires_at=NOW + 14 * DAY + 1)], NOW)
    assert result.accepted == 0 and "asyncln-rod-max-expiry" in result.refused[0]
    assert rod.pool(B) == Pool()


def test_max_expiry_is_an_option_and_never_below_min_expiry():
    assert RodLimits().max_expiry_seconds == 14 * DAY
    assert RodLimits.from_options({"asyncln-rod-max-expiry": "3600",
                                   "asyncln-rod-min-expiry": 600}).max_expiry_seconds == 3600
    with pytest.raises(ValueError, match="asyncln-rod-max-expiry must be at least asyncln-rod-min"):
        RodLimits.from_options({"asyncln-rod-max-expiry": DAY - 1})


def test_fetches_from_throw_away_ids_keep_the_record_within_max_bytes():
    """A depositor re-fills its pool as throw-away requesters empty it: served hashes count."""
    limits = RodLimits(depositors="any", fetches_per_hour=1)
    rod = Rod(limits)
    now = NOW
    for n in range(1000):
        rod.deposit(B, True, [invoice(n, expires_at=now + 14 * DAY, size=400)], now)
        try:
            rod.fetch(f"02{n:064x}", B, 1000, now)
        except AsynclnError as e:
            assert e.code == Code.POOL_EMPTY  # the budget is spent on served hashes
        record = json.dumps(rod.pool(B).to_json(), sort_keys=True)
        assert len(record) <= rod.pool(B).size_bytes <= limits.max_bytes
        now += 60
    served = len(rod.pool(B).served)
    assert 0 < served < 1000 and rod.pool(B).invoices == ()
    assert rod.prune(now + 14 * DAY) == [B] and rod.pool(B) == Pool()  # pruned at expiry


def test_a_proven_payee_key_is_taken_from_a_pool_an_older_version_filed_it_with():
    """An older Rod filed keys without proof: a hijacked pool may come from its datastore."""
    hijacked = Pool((replace(invoice("m"), offer="0e" * 400),), payee_key=B_PAYEE_KEY)
    rod = Rod(RodLimits(depositors="any"), {MALLORY: hijacked})
    rod.deposit(B, True, [replace(invoice("b"), offer="0f" * 400)], NOW)
    assert rod.claim_payee_key(B, B_PAYEE_KEY, owner_sig(B_PAYEE_SECRET, B), ROD_ID) == (
        None, (MALLORY, B))
    assert rod.pool(MALLORY) == replace(hijacked, payee_key=None)
    assert rod.fetch(A, B_PAYEE_KEY, 1000, NOW, private=True).payment_hash == payment_hash("b")
