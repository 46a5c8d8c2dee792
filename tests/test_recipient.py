"""The often-offline recipient's pure side: its Rods, how many invoices to deposit, when to ask.

Unit tests pin the parsing and the arithmetic; properties drive a simulated
B <-> R top-up loop with a real :class:`asyncln.rod.Rod`, so the recipient's
rules are checked against what the Rod actually answers.
"""

import hashlib
import itertools
import json

import pytest
from factories import node_id
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncln import rod
from asyncln.code import Rod
from asyncln.messages import MAX_DEPOSIT_BATCH, PoolStatus
from asyncln.recipient import (
    DEFAULT_INVOICE_EXPIRY,
    DEFAULT_POOL,
    MintBudget,
    RecipientConfig,
    invoices_needed,
    parse_rods,
    refuses_depositor,
    wants_query,
    wants_query_on_channel,
    wants_retry,
)

R1, R2, R3, B = (node_id(n) for n in range(31, 35))
NOW = 1_700_000_000
DAY = 86_400


def status(level=0, max_invoices=50, refused=(), accepted=0, min_expiry=DAY) -> PoolStatus:
    return PoolStatus(level, accepted, max_invoices, min_expiry, tuple(refused))


# --- parse_rods ------------------------------------------------------------------------------

def test_parse_rods_reads_ids_and_addresses_in_order():
    rods = parse_rods(f"{R2}@rod.example:9735, {R1} ,{R3}@[2001:db8::1]:9736")
    assert rods == (Rod(R2, ("rod.example:9735",)), Rod(R1, ()),
                    Rod(R3, ("[2001:db8::1]:9736",)))


@pytest.mark.parametrize("text", ["", "  ", ",", " , ,, "])
def test_no_rods_is_an_empty_tuple(text):
    assert parse_rods(text) == ()


@pytest.mark.parametrize("text", [
    f"{R1},{R1}",
    f"{R1}@a:1,{R1}@b:2",          # the same Rod with two addresses is still named twice
    f"{R1}, {R2} ,{R1}",
])
def test_a_rod_named_twice_is_refused(text):
    with pytest.raises(ValueError, match=f"asyncln-rod: {R1} is named twice"):
        parse_rods(text)


@pytest.mark.parametrize("bad", [
    "02" + "zz" * 32,               # not hex
    R1[:-2],                        # 32 bytes
    R1 + "00",                      # 34 bytes
    "04" + R1[2:],                  # not a compressed key
    "02" + "00" * 32,               # not on the curve
    "@host:9735",                   # no id at all
    "rod.example:9735",             # an address where the id belongs
])
def test_a_bad_id_is_refused_and_named(bad):
    with pytest.raises(ValueError, match=r"asyncln-rod: .* is not a node id"):
        parse_rods(f"{R1},{bad}")


@pytest.mark.parametrize("text", [R1.upper(), f"{R1} @rod.example:9735", f"{R1[:2]} {R1[2:]}"])
def test_a_rod_id_is_kept_as_lightningd_names_peers(text):
    try:
        rods = parse_rods(text)
    except ValueError:
        return  # refusing it is fine too
    assert rods[0].node_id == R1


# --- RecipientConfig ---------------------------------------------------------------------------

def test_from_options_defaults():
    assert RecipientConfig.from_options({}) == RecipientConfig()
    assert RecipientConfig() == RecipientConfig((), DEFAULT_POOL, DEFAULT_INVOICE_EXPIRY)
    assert RecipientConfig.from_options({"asyncln-rod": None}).rods == ()
    assert RecipientConfig.from_options({"asyncln-rod": ""}).rods == ()


def test_from_options_reads_every_option():
    config = RecipientConfig.from_options({
        "asyncln-rod": f"{R1}@h:1,{R2}", "asyncln-rod-pool": "5",
        "asyncln-rod-invoice-expiry": 3600})
    assert config == RecipientConfig((Rod(R1, ("h:1",)), Rod(R2, ())), 5, 3600)
    assert RecipientConfig.from_options({"asyncln-rod-pool": 0}).pool == 0  # deposit nothing
    assert RecipientConfig.from_options({"asyncln-rod-invoice-expiry": 1}).invoice_expiry == 1


@pytest.mark.parametrize("options, named", [
    ({"asyncln-rod-pool": "many"}, "asyncln-rod-pool must be an integer"),
    ({"asyncln-rod-pool": None}, "asyncln-rod-pool must be an integer"),
    ({"asyncln-rod-pool": -1}, "asyncln-rod-pool must be at least 0"),
    ({"asyncln-rod-invoice-expiry": 0}, "asyncln-rod-invoice-expiry must be at least 1"),
    ({"asyncln-rod-invoice-expiry": -5}, "asyncln-rod-invoice-expiry must be at least 1"),
    ({"asyncln-rod-invoice-expiry": "1.5"}, "asyncln-rod-invoice-expiry must be an integer"),
    ({"asyncln-rod": "nonsense"}, "asyncln-rod: 'nonsense' is not a node id"),
    ({"asyncln-rod": f"{R1},{R1}"}, "is named twice"),
])
def test_from_options_names_the_bad_option(options, named):
    with pytest.raises(ValueError, match=named):
        RecipientConfig.from_options(options)


# --- invoices_needed ---------------------------------------------------------------------------

@pytest.mark.parametrize("target, level, max_invoices, batch, expected", [
    (20, 0, 50, 32, 20),     # fill to the target in one batch
    (60, 0, 50, 32, 32),     # a batch at a time
    (60, 32, 50, 32, 18),    # never above the Rod's max
    (20, 15, 50, 32, 5),
    (20, 20, 50, 32, 0),     # full
    (20, 25, 50, 32, 0),     # above the target (the Rod kept older ones): nothing, never negative
    (20, 10, 5, 32, 0),      # the Rod's max fell below what it holds
    (0, 0, 50, 32, 0),       # asyncln-rod-pool=0
    (20, 0, 0, 32, 0),       # a Rod that keeps nothing
    (20, 0, 50, 0, 0),
    (20, 0, 50, 3, 3),
])
def test_invoices_needed(target, level, max_invoices, batch, expected):
    assert invoices_needed(target, status(level, max_invoices), batch, 1000) == expected
    assert invoices_needed(target, status(level, max_invoices), batch, 4) == min(expected, 4)
    assert invoices_needed(target, status(level, max_invoices), batch, 0) == 0


@pytest.mark.parametrize("refused", [("stranger",), ("one", "two"), ("",)])
def test_any_refusal_stops_the_top_up(refused):
    assert invoices_needed(20, status(0, 50, refused), 32, 20) == 0


@given(target=st.integers(0, 200), level=st.integers(0, 200), max_invoices=st.integers(0, 200),
       batch=st.integers(0, 64), allowance=st.integers(0, 200),
       refused=st.lists(st.text(max_size=5), max_size=3))
def test_invoices_needed_never_overfills(target, level, max_invoices, batch, allowance, refused):
    n = invoices_needed(target, status(level, max_invoices, refused), batch, allowance)
    assert 0 <= n <= min(batch, allowance)
    assert level + n <= max(level, min(target, max_invoices))
    if refused:
        assert n == 0
    elif level < min(target, max_invoices) and batch and allowance:
        assert n > 0  # a pool below target always gets something


# --- MintBudget: B's own count, whatever the Rod says --------------------------------------------

def test_the_budget_allows_a_pool_per_window_and_survives_json():
    budget = MintBudget()
    assert budget.allowance(1000, 20, 6) == 20
    budget = budget.minted(1000, 15, 6)
    assert budget == MintBudget(1000, 15)
    assert MintBudget.from_json(json.loads(json.dumps(budget.to_json()))) == budget
    assert [budget.allowance(h, 20, 6) for h in (999, 1000, 1005, 1006)] == [5, 5, 5, 20]
    assert budget.minted(1005, 5, 6) == MintBudget(1000, 20)
    assert budget.minted(1006, 5, 6) == MintBudget(1006, 5)


@settings(max_examples=300, deadline=None)
@given(pool=st.integers(0, 40), every=st.integers(1, 10),
       steps=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 40), st.booleans()),
                      max_size=60))
def test_a_rod_that_always_reports_level_zero_gets_at_most_a_pool_per_window(pool, every, steps):
    """B asks the Rod's bidding at each step (a block, or several), restarting at random."""
    budget, height, mints = MintBudget(), 1000, []
    for blocks, batch, restart in steps:
        height += blocks
        if restart:
            budget = MintBudget.from_json(json.loads(json.dumps(budget.to_json())))
        count = invoices_needed(pool, status(level=0), batch, budget.allowance(height, pool, every))
        if count:
            budget = budget.minted(height, count, every)
            mints.append((height, count))
    # Windows of ``every`` blocks, each starting at its first mint: the blocks from the
    # first mint to any later one meet at most span // every + 1 windows, any other run one more.
    for first, _ in mints:
        for last, _ in mints:
            if last >= first:
                total = sum(c for h, c in mints if first <= h <= last)
                windows = (last - first) // every + (1 if first == mints[0][0] else 2)
                assert total <= pool * windows


# --- wants_query -------------------------------------------------------------------------------

def test_wants_query_at_most_every_n_blocks():
    below = status(level=3)
    assert wants_query(None, None, 100, 20, 6)               # never asked: ask
    assert not any(wants_query(below, 100, h, 20, 6) for h in range(90, 106))
    assert wants_query(below, 100, 106, 20, 6)
    assert wants_query(None, 100, 106, 20, 6)                # asked, no answer yet: ask again
    assert not wants_query(None, 100, 105, 20, 6)


def test_wants_query_stops_when_full():
    assert not wants_query(status(level=20), 100, 10_000, 20, 6)
    assert not wants_query(status(level=50, max_invoices=50), 100, 10_000, 80, 6)  # Rod's max
    assert not wants_query(status(level=0), 100, 10_000, 0, 6)  # pool=0: nothing wanted
    assert wants_query(status(level=19), 100, 10_000, 20, 6)


def test_wants_query_asks_again_after_a_refusal():
    """A connection may come before the channel that makes B a depositor."""
    refused = status(level=0, max_invoices=0, refused=("this Rod keeps invoices only for its "
                                                       "channel peers",))
    assert wants_query(refused, 100, 106, 20, 6)
    assert not wants_query(refused, 100, 105, 20, 6)


NOT_A_PEER = status(level=0, max_invoices=0,
                    refused=("this Rod keeps invoices only for its channel peers",))


def test_only_a_refusal_without_room_refuses_the_depositor():
    assert refuses_depositor(NOT_A_PEER)
    assert not refuses_depositor(status(level=0, refused=("expires too soon",)))  # invoices
    assert not refuses_depositor(status(level=0)) and not refuses_depositor(None)


def test_a_refused_depositor_is_retried_once_a_block_once_its_channel_is_usable():
    """Issue 12, item 7: not a poll (asyncln-poll-blocks) later."""
    assert wants_retry(NOT_A_PEER, 100, 101, channel_usable=True)
    assert not wants_retry(NOT_A_PEER, 100, 100, channel_usable=True)   # once a block
    assert not wants_retry(NOT_A_PEER, 100, 101, channel_usable=False)  # no hints yet
    assert not wants_retry(status(level=0, refused=("expires too soon",)), 100, 200, True)
    assert not wants_retry(status(level=3), 100, 200, True)  # a poll's business


def test_a_usable_channel_asks_unless_full_or_our_invoices_were_refused():
    assert wants_query_on_channel(None, 20) and wants_query_on_channel(NOT_A_PEER, 20)
    assert wants_query_on_channel(status(level=3), 20)
    assert not wants_query_on_channel(status(level=20), 20)
    assert not wants_query_on_channel(status(level=3, max_invoices=3), 20)
    assert not wants_query_on_channel(status(level=0, refused=("expires too soon",)), 20)


@given(events=st.lists(st.sampled_from(["block", "channel", "usable", "unusable"]),
                       max_size=200),
       every=st.integers(1, 10))
def test_a_rod_that_keeps_refusing_gets_one_query_a_block_or_channel_event(events, every):
    """Driven as RodShell does: on_block (poll or retry) and the channel event; R always refuses."""
    height, usable, asked, last = 1000, False, [], None
    channel_events = blocks = 0
    for event in events:
        match event:
            case "block":
                height += 1
                blocks += 1
                at = asked[-1] if asked else None
                ask = (wants_query(last, at, height, 20, every)
                       or wants_retry(last, at, height, usable))
            case "channel":
                channel_events += 1
                ask = wants_query_on_channel(last, 20)
            case "usable" | "unusable":
                usable, ask = event == "usable", False
        if ask:
            asked.append(height)
            last = NOT_A_PEER
    assert len(asked) <= blocks + channel_events
    assert all(b >= a for a, b in zip(asked, asked[1:]))


@given(answers=st.lists(st.tuples(st.integers(0, 60), st.booleans()), min_size=1, max_size=40),
       every=st.integers(1, 10), target=st.integers(0, 60), start=st.integers(0, 10_000))
def test_asks_are_spaced_and_end_once_full(answers, every, target, start):
    """Drive wants_query block by block, as RodShell.on_block does; each ask gets an answer."""
    answers = iter(answers)
    last: PoolStatus = None
    asked = []
    full_at = None
    for height in range(start, start + 400):
        if wants_query(last, asked[-1] if asked else None, height, target, every):
            assert full_at is None, "asked a Rod whose pool was full"
            asked.append(height)
            level, refuse = next(answers, (target, False))
            last = status(level=level, max_invoices=50, refused=("no",) if refuse else ())
            if not refuse and level >= min(target, 50):
                full_at = height
    assert all(b - a >= every for a, b in zip(asked, asked[1:]))


# --- a simulated B <-> R top-up with the real Rod ------------------------------------------

class Recipient:
    """B's side of the loop, as RodShell.top_up and deposit run it, minting fake invoices."""

    def __init__(self, target, batch, expiry, size):
        self.target, self.batch, self.expiry, self.size = target, batch, expiry, size
        self.minted = 0
        self.budget, self.height = MintBudget(), 1000  # each connection in a window of its own
        self._names = itertools.count()

    def invoices(self, count, now):
        out = []
        for _ in range(count):
            h = hashlib.sha256(b"B%d" % next(self._names)).hexdigest()
            out.append(rod.Deposited(h, "lnbcrt" + "x" * (self.size - 6), None, now + self.expiry))
        self.minted += count
        self.budget = self.budget.minted(self.height, count, EVERY)
        return out


EVERY = 6  # asyncln-poll-blocks


def pool_status(result: rod.DepositResult, limits: rod.RodLimits) -> PoolStatus:
    """What RodShell.take_deposit answers for a deposit."""
    return PoolStatus(result.level, result.accepted, limits.max_invoices,
                      limits.min_expiry_seconds, result.refused)


def connection(recipient: Recipient, the_rod: rod.Rod, now: int, limit=1000):
    """B connects: an empty deposit asks the level, then B tops up until told to stop.

    Returns the statuses B saw; fails if the loop does not end within ``limit`` rounds.
    """
    limits = the_rod.limits
    recipient.height += EVERY
    seen = [pool_status(the_rod.deposit(B, True, [], now), limits)]
    for _ in range(limit):
        count = invoices_needed(recipient.target, seen[-1], recipient.batch,
                                recipient.budget.allowance(recipient.height, recipient.target,
                                                           EVERY))
        if count == 0:
            return seen
        items = recipient.invoices(count, now)
        seen.append(pool_status(the_rod.deposit(B, True, items, now), limits))
    raise AssertionError("the top-up never ended")


@settings(max_examples=300, deadline=None)
@given(target=st.integers(0, 120), batch=st.integers(1, MAX_DEPOSIT_BATCH),
       max_invoices=st.integers(1, 100), max_bytes=st.integers(rod.RECORD_BYTES, 20_000),
       size=st.integers(20, 400), drains=st.lists(st.integers(0, 40), max_size=6))
def test_the_top_up_loop_ends_and_stays_within_the_rods_limits(
        target, batch, max_invoices, max_bytes, size, drains):
    limits = rod.RodLimits(max_invoices=max_invoices, max_bytes=max_bytes,
                           fetches_per_hour=10_000)
    the_rod = rod.Rod(limits)
    recipient = Recipient(target, batch, 2 * DAY, size)
    goal = min(target, max_invoices, (max_bytes - rod.RECORD_BYTES) // (size + rod.ENTRY_BYTES))
    now = NOW
    for drain in [0] + drains:                      # payers take invoices between connections
        for _ in range(drain):
            try:
                the_rod.fetch(node_id(40), B, 1000, now)
            except Exception:
                break
        before = recipient.minted
        seen = connection(recipient, the_rod, now)
        level = the_rod.level(B)
        assert level <= max_invoices and the_rod.pool(B).size_bytes <= max_bytes
        assert all(s.level <= max_invoices for s in seen)
        refusals = [s for s in seen if s.refused]
        # Only max_bytes (which B cannot see) may refuse, and only once: the top-up stops.
        assert len(refusals) <= 1
        if refusals:
            assert all("max-bytes" in r for r in refusals[0].refused)
            assert recipient.minted - before - (level - seen[0].level) <= batch
        else:
            # Without a refusal B mints exactly what fills the pool to its target.
            assert level == max(seen[0].level, min(target, max_invoices))
            assert recipient.minted - before == level - seen[0].level
        assert level >= min(goal, seen[-1].level)
        now += 60


def test_a_rod_that_refuses_everything_gets_one_batch_per_connection():
    """B's invoices expire before the Rod's asyncln-rod-min-expiry: all of them are refused."""
    limits = rod.RodLimits(min_expiry_seconds=2 * DAY)
    the_rod = rod.Rod(limits)
    recipient = Recipient(target=20, batch=MAX_DEPOSIT_BATCH, expiry=DAY, size=100)
    seen = connection(recipient, the_rod, NOW)
    assert recipient.minted == 20 and the_rod.level(B) == 0
    assert len(seen[-1].refused) == 20
    assert invoices_needed(20, seen[-1], MAX_DEPOSIT_BATCH, 20) == 0
