"""A poll round in slices (Relay.block's limit, Relay.due_slice, the shell's wake_due).

At 100,000 held, the block that makes every payment due took seconds under
the shell's lock. The core now wakes due payments in slices; whatever the
slicing, each due payment is woken exactly once, fail-backs come before any
forward, and a restart between slices loses nothing.
"""

import threading
from collections import Counter

from factories import Request, direct_route, incoming, node_id, payload, record
from hypothesis import given, settings
from hypothesis import strategies as st
from test_node import RecordingRpc

from asyncln import hold, holder_shell
from asyncln.node import Node
from asyncln.policy import Policy
from asyncln.states import HoldState

POLICY = Policy(poll_blocks=5, max_hold_blocks=200, safety_blocks=6, max_held=10**6,
                max_held_msat=10**15, max_held_per_peer=10**6, max_held_msat_per_peer=10**15)
NODES = [node_id(20 + n) for n in range(3)]


def payment_hash(i):
    return f"{i + 1:064x}"


def settled(holds):
    """A relay at height 1000 holding one payment per entry of ``holds`` (its max_hold_blocks),
    every first route search failed (the recipients are offline)."""
    relay = hold.Relay(POLICY, 1000)
    for i, max_hold in enumerate(holds):
        rec = record(max_hold=max_hold, node=NODES[i % len(NODES)])
        verdict, actions = relay.htlc_accepted(
            payment_hash(i), incoming(htlc_id=i, secret=payment_hash(i)), payload(rec),
            110_000, 1500)
        assert verdict == hold.Hold()
        for action in actions:
            if isinstance(action, hold.FindRoute):
                relay.route_failed(action.payment_hash, "offline")
    assert not relay.searching
    return relay


def sliced(relay, height, sizes):
    """Every action of the round at ``height``, woken in slices of ``sizes`` (cycled)."""
    sizes = sizes or [1]
    actions = relay.block(height, sizes[0])
    turn = 1
    while relay.has_due():
        actions += relay.due_slice(sizes[turn % len(sizes)])
        turn += 1
    return actions


def names(actions):
    return Counter((type(a).__name__, a.payment_hash) for a in actions)


def fail_backs_first(actions):
    fails = [i for i, a in enumerate(actions) if isinstance(a, hold.FailIncoming)]
    forwards = [i for i, a in enumerate(actions) if isinstance(a, hold.FindRoute)]
    return not fails or not forwards or max(fails) < min(forwards)


holds = st.lists(st.integers(2, 40), min_size=1, max_size=40)
heights = st.integers(1001, 1045)
sizes = st.lists(st.integers(1, 7), min_size=1, max_size=5)


@settings(max_examples=150, deadline=None)
@given(holds=holds, height=heights, sizes=sizes)
def test_slices_wake_once(holds, height, sizes):
    """Any slicing: the same actions as one whole round, each fail-back exactly once."""
    whole = settled(holds).block(height)
    relay = settled(holds)
    parts = sliced(relay, height, sizes)
    assert names(parts) == names(whole)
    due = {payment_hash(i) for i, h in enumerate(holds) if height >= 1000 + h}
    fails = Counter(a.payment_hash for a in parts if isinstance(a, hold.FailIncoming))
    assert set(fails) == due and all(n == 1 for n in fails.values())
    assert {h for h, p in relay.held.items() if p.state == HoldState.FAILED} == due
    assert not relay.has_due()


@settings(max_examples=150, deadline=None)
@given(holds=holds, height=heights, sizes=sizes)
def test_fail_backs_first(holds, height, sizes):
    """Deadlines before polls, sliced or not (the old round went by wake height alone)."""
    assert fail_backs_first(settled(holds).block(height))
    assert fail_backs_first(sliced(settled(holds), height, sizes))


@settings(max_examples=100, deadline=None)
@given(holds=holds, height=heights, cut=st.integers(1, 10), size=st.integers(1, 7))
def test_new_block_mid_round(holds, height, cut, size):
    """A block arriving between slices: its fail-backs go first, nothing is woken twice
    at one height, and every payment whose give-up height came is failed once."""
    relay = settled(holds)
    actions = relay.block(height, size)
    for _ in range(cut):
        actions += relay.due_slice(size)
    later = relay.block(height + 1, size)
    assert fail_backs_first(later) or not any(isinstance(a, hold.FailIncoming) for a in later)
    while relay.has_due():
        later += relay.due_slice(size)
    assert fail_backs_first(later)
    due = {payment_hash(i) for i, h in enumerate(holds) if height + 1 >= 1000 + h}
    fails = Counter(a.payment_hash for a in actions + later if isinstance(a, hold.FailIncoming))
    assert set(fails) == due and all(n == 1 for n in fails.values())


@settings(max_examples=100, deadline=None)
@given(holds=holds, height=heights, cut=st.integers(0, 10), size=st.integers(1, 7))
def test_restart_mid_round(holds, height, cut, size):
    """A crash between slices: what was saved reloads, the rest of the round is still due,
    and a replayed HTLC gets its failure once, whether it was failed before or after."""
    relay = settled(holds)
    saved = {h: p for h, p in relay.held.items()}
    actions = relay.block(height, size)
    for _ in range(cut):
        actions += relay.due_slice(size)
    saved.update({a.payment_hash: a.held for a in actions if isinstance(a, hold.Persist)})
    failed_before = {a.payment_hash for a in actions if isinstance(a, hold.FailIncoming)}
    records = [hold.HeldPayment.from_json(p.to_json()) for p in saved.values()]
    again = hold.Relay(POLICY, height, records)
    after = sliced(again, height, [size])
    assert not any(isinstance(a, hold.FailIncoming) for a in after)  # none is attached yet
    due = {payment_hash(i) for i, h in enumerate(holds) if height >= 1000 + h}
    assert {h for h, p in again.held.items() if p.state == HoldState.FAILED} == due
    for i, h in enumerate(holds):
        if payment_hash(i) in due:  # lightningd replays the HTLC: failed back, once
            verdict, answer = again.replay(payment_hash(i),
                                           incoming(htlc_id=i, secret=payment_hash(i)))
            assert [type(a) for a in answer] == [hold.FailIncoming]
    assert failed_before <= due


class CountingLock:
    """The shell's RLock, counting the payments woken during each outermost hold."""

    def __init__(self):
        self.lock, self.depth, self.woken, self.most = threading.RLock(), 0, 0, 0

    def __enter__(self):
        self.lock.acquire()
        self.depth += 1
        if self.depth == 1:
            self.woken = 0

    def __exit__(self, *exc):
        self.depth -= 1
        self.lock.release()


def counting_wakes(node, monkeypatch):
    """A lock that counts the payments woken during each hold of it."""
    lock = node.lock = CountingLock()
    wake = node.relay._wake

    def counted(held):
        lock.woken += 1
        lock.most = max(lock.most, lock.woken)
        return wake(held)
    monkeypatch.setattr(node.relay, "_wake", counted)
    return lock


def test_shell_wakes_in_slices(monkeypatch):
    """holder_shell.check_chain wakes at most DUE_SLICE payments per hold of the lock, the
    rest in later worker jobs, and each due HTLC gets its one failure."""
    monkeypatch.setattr(holder_shell, "DUE_SLICE", 7)
    node = Node(RecordingRpc(), lambda *a, **k: None, POLICY)
    count = 30
    node.relay = settled([10] * count)
    requests = {}
    for i in range(count):
        held = node.relay.held[payment_hash(i)]
        requests[held.incoming.key] = node.pending[held.incoming.key] = Request()
    lock = counting_wakes(node, monkeypatch)
    node.rpc.answers["waitblockheight"] = {"blockheight": 1010}
    node.rpc.answers["getchaininfo"] = {"headercount": 1010, "blockcount": 1010, "ibd": False}
    node.check_chain()
    assert node.relay.has_due() and node._jobs  # the rest waits for the worker
    while node._jobs:
        node._jobs.popleft()()
    assert lock.most == 7
    assert not node.relay.has_due()
    assert all(r.results == [{"result": "fail", "failure_message": r.result["failure_message"]}]
               for r in requests.values())
    assert all(p.state == HoldState.FAILED for p in node.relay.held.values())


def test_unsliced_block_is_whole():
    """Without a limit, block() still wakes the whole round (the pure core's callers)."""
    relay = settled([3, 3, 9])
    relay.block(1003)
    assert not relay.has_due()
    assert [p.state for p in relay.held.values()] == [HoldState.FAILED, HoldState.FAILED,
                                                      HoldState.HELD]


def test_a_late_send_wakes_the_round_in_slices_too(monkeypatch):
    """send_attempt finding the give-up height come (a block since the relay planned the
    attempt) moves the relay to that height: in slices, as check_chain does, not the whole
    round under one hold of the lock."""
    monkeypatch.setattr(holder_shell, "DUE_SLICE", 7)
    node = Node(RecordingRpc(), lambda *a, **k: None, POLICY)
    count = 30
    node.relay = settled([10] * count)
    node.relay.block(1005)
    late = next(iter(node.relay.probes.values()))  # its search ends first: it sends
    rec = node.relay.held[late].record
    [send] = [a for a in node.relay.route_found(late, direct_route(rec))
              if isinstance(a, hold.SendPay)]
    lock = counting_wakes(node, monkeypatch)
    node.rpc.answers["waitblockheight"] = {"blockheight": 1012}
    node.rpc.answers["getchaininfo"] = {"headercount": 1012, "blockcount": 1012, "ibd": False}
    node.run(node.send_attempt(send))
    while node._jobs:
        node._jobs.popleft()()
    assert lock.most <= 7
    assert not node.relay.has_due()
    assert all(p.state == HoldState.FAILED for p in node.relay.held.values())
