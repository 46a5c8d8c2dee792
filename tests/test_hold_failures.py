"""Money safety while the shell's actions fail: the relay driven by a simulated shell.

The shell here does what asyncln/holder_shell.py's HolderShell.run does: it carries out
the relay's actions in order against a fake datastore and a fake
lightningd (hook requests waiting for an answer, sendpay parts, routes),
and an action that fails is reported through Relay.action_failed while
the rest of the queue goes on, the follow-ups first. Hypothesis
interleaves failures (some after the side effect happened anyway),
crashes part-way through a queue, restarts (the relay rebuilt from the
fake datastore, lightningd replaying every HTLC still waiting, maybe under
a new scid) with arrivals, blocks, chain sync, route answers and
outgoing outcomes (some whose notification is lost).

Checked at every step:

(i)   an incoming HTLC is never failed while an outgoing part for its hash
      may still succeed, or did, unless another HTLC with that hash is
      still waiting for an answer;
(iii) a failing action only changes its own payment (and, for a route
      search, the payments that followed that search), and every queued
      action is carried out or reported.

Checked once the shell stops failing and reconcile has run to quiescence:

(ii)  every HTLC still waiting belongs to an open record; a COMPLETE one
      was resolved with the right preimage, a FAILED one was failed; the
      datastore holds exactly the in-memory record for every hash; every
      FORWARDING record's attempt was checked with lightningd and is
      pending there.
"""

import hashlib
import random
from collections import deque
from dataclasses import dataclass, replace
from typing import Dict, Optional

import pytest
from factories import OTHER, PAYER, RECIPIENT, incoming, node_id, payload, record
from hypothesis import note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from asyncln import hold
from asyncln.errors import AsynclnError
from asyncln.lightningd import judge_attempt
from asyncln.policy import Policy
from asyncln.states import HOLD_OPEN, HoldState

PREIMAGES = [bytes([i + 1]) * 32 for i in range(3)]
HASHES = [hashlib.sha256(p).hexdigest() for p in PREIMAGES]
NODES = [RECIPIENT, node_id(5)]
POLICY = Policy(poll_blocks=3, max_hold_blocks=40, safety_blocks=6, fee_base_msat=1000,
                fee_ppm=1000, max_held=5, max_held_msat=10**9, min_held_msat=0,
                max_held_per_peer=5, max_held_msat_per_peer=10**9)
FAIL_RATES = [0.0, 0.2, 0.5]


class Crash(Exception):
    """The plugin (and lightningd with it: important-plugin) stops mid-queue."""


@dataclass
class Part:
    """A sendpay part in lightningd's records."""

    status: str = "pending"   # pending | failed | complete
    lost: bool = False        # pending with no HTLC behind it (CLN #3916): never settles


@dataclass(frozen=True)
class Waiting:
    """An htlc_accepted request lightningd waits on."""

    payment_hash: str
    incoming: hold.Incoming
    record: object


class ShellMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.height = 1000
        self.synced = True
        self.store: Dict[str, dict] = {}
        self.waiting: Dict[tuple, Waiting] = {}           # (hash, Incoming.key) -> request
        self.parts: Dict[str, Dict[int, Part]] = {h: {} for h in HASHES}
        self.online = {n: False for n in NODES}
        self.fail_rate = 0.0
        self.crash_after: Optional[int] = None
        self.checked = set()        # (hash, partid) a CheckAttempt asked lightningd about
        self.resolved: Dict[str, int] = {}  # hash -> incoming HTLCs settled with the preimage
        self.next_htlc = 0
        self.relay = hold.Relay(POLICY, self.height)

    # --- the simulated shell ------------------------------------------------

    def event(self, rnd, call):
        """Feed the relay one event and carry out what it returns; a crash restarts."""
        try:
            result = call()
            actions = result[1] if isinstance(result, tuple) else result
            note(f"event at {self.height}: {result[0] if isinstance(result, tuple) else ''} "
                 f"{[describe(a) for a in actions]}")
            self.run(actions, rnd)
            return result
        except Crash:
            note("CRASH")
            self.restart_now(rnd)
            return None

    def run(self, actions, rnd):
        """Node.run: in order; a failure is reported and the rest still run, follow-ups first."""
        queue = deque(actions)
        while queue:
            if self.crash_after is not None:
                if self.crash_after == 0:
                    self.crash_after = None
                    raise Crash()
                self.crash_after -= 1
            action = queue.popleft()
            self.check_names_its_htlc(action)
            if self.fail_rate and rnd.random() < self.fail_rate:
                follow = self.fail(action, rnd)
                note(f"  FAILED {describe(action)} -> {[describe(a) for a in follow]}")
            else:
                follow = self.execute(action, rnd)
                note(f"  did {describe(action)} -> {[describe(a) for a in follow]}")
            queue.extendleft(reversed(follow))

    def fail(self, action, rnd):
        """The action raised in the shell; maybe after its side effect happened."""
        relay = self.relay
        if isinstance(action, hold.SendPay):
            if not relay.may_send(action.payment_hash, action.partid):
                return []  # the shell skips it without error
            if rnd.random() < 0.5 and self.lightningd_takes(action):
                self.add_part(action)  # sendpay went through; the error came after
        elif isinstance(action, hold.Persist) and rnd.random() < 0.3:
            self.store[action.payment_hash] = action.held.to_json()  # written, then timed out
        elif isinstance(action, hold.Forget) and rnd.random() < 0.3:
            self.store.pop(action.payment_hash, None)
        others = {h: p for h, p in relay.held.items() if h != action.payment_hash}
        # (iii) one payment's failure leaves the others alone, but a probe's
        # failed search ends (or starts its own search for) each payment that followed it
        followers = set()
        if isinstance(action, hold.FindRoute):
            followers = set().union(*(waiting for key, waiting in relay.followers.items()
                                      if relay.probes.get(key) == action.payment_hash))
        follow = relay.action_failed(action, "injected failure")
        for payment_hash, before in others.items():
            if payment_hash not in followers:
                assert relay.held.get(payment_hash) == before, \
                    f"a failed {type(action).__name__} for another payment changed this one"
        assert all(a.payment_hash == action.payment_hash or a.payment_hash in followers for a in follow)
        return follow

    def execute(self, action, rnd):
        relay = self.relay
        match action:
            case hold.Persist(held=held):
                self.store[held.payment_hash] = held.to_json()
            case hold.Forget(payment_hash=payment_hash):
                assert payment_hash not in relay.held
                self.store.pop(payment_hash, None)
            case hold.FindRoute():
                if (self.online[action.destination] and action.final_cltv <= action.maxdelay
                        and rnd.random() < 0.85):
                    route = [{"id": action.destination, "channel": "9x9x9", "direction": 0,
                              "amount_msat": action.amount_msat, "delay": action.final_cltv}]
                    return relay.route_found(action.payment_hash, route)
                return relay.route_failed(action.payment_hash, "no route")
            case hold.SendPay():
                return self.send(action)
            case hold.CheckAttempt(payment_hash=payment_hash, partid=partid):
                self.checked.add((payment_hash, partid))
                outcome = judge_attempt(self.sendpays(payment_hash), partid,
                                        self.htlc_out(payment_hash))
                return relay.attempt_checked(payment_hash, partid, outcome)
            case hold.ResolveIncoming(payment_hash=payment_hash, preimage=preimage, htlc=key):
                assert hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == payment_hash
                if self.waiting.pop((payment_hash, key), None) is not None:
                    self.resolved[payment_hash] = self.resolved.get(payment_hash, 0) + 1
                relay.answered(payment_hash, key)  # Node.answer: delivered (or none waits)
            case hold.FailIncoming(payment_hash=payment_hash, htlc=key):
                if (payment_hash, key) in self.waiting:
                    self.check_may_fail(payment_hash, key)
                    del self.waiting[(payment_hash, key)]
                relay.answered(payment_hash, key)
            case hold.NotifyPayer():
                assert action.payer in (PAYER, OTHER)
            case _:
                raise AssertionError(f"unknown action {action!r}")
        return []

    def check_names_its_htlc(self, action):
        """An answer is for the HTLC whose record decided it, which waits for no other answer."""
        if isinstance(action, (hold.ResolveIncoming, hold.FailIncoming)):
            held = self.relay.held.get(action.payment_hash)
            if held is not None and held.attached and held.incoming.key == action.htlc:
                expected = (HoldState.COMPLETE if isinstance(action, hold.ResolveIncoming)
                            else HoldState.FAILED)
                assert held.state == expected, "an HTLC would get another decision's answer"

    def send(self, action):
        """node.send_attempt: may_send, lightningd's height and sync, a part lightningd
        completed or still has pending (unless judged lost), then sendonion."""
        relay = self.relay
        if not relay.may_send(action.payment_hash, action.partid):
            return []
        if not self.synced:
            return relay.send_refused(action.payment_hash, action.partid, "catching up")
        if self.height + 1 > action.max_height:
            return relay.send_refused(action.payment_hash, action.partid, "too high")
        parts = self.parts[action.payment_hash]
        done = [p for p in parts.values() if p.status == "complete"]
        if done:
            return relay.attempt_succeeded(action.payment_hash,
                                           PREIMAGES[HASHES.index(action.payment_hash)].hex())
        pending = [i for i, p in parts.items()
                   if p.status == "pending" and i not in action.lost_partids]
        if pending:
            return relay.adopt_attempt(action.payment_hash, action.partid, max(pending))
        if parts and action.partid <= max(parts):
            return relay.send_refused(action.payment_hash, action.partid, "part taken",
                                      used_partid=max(parts))
        if not self.lightningd_takes(action):
            return [hold.CheckAttempt(action.payment_hash, action.partid)]  # sendpay refused
        self.add_part(action)
        return []

    def lightningd_takes(self, action):
        """sendonion without total_amount_msat refuses a hash with a complete part or a
        used partid; beside a pending part (a lost one too) it takes a new one."""
        parts = self.parts[action.payment_hash]
        return not (action.partid in parts
                    or any(p.status == "complete" for p in parts.values()))

    def add_part(self, action):
        parts = self.parts[action.payment_hash]
        assert not any(p.status == "pending" and not p.lost for p in parts.values()), \
            "a second attempt while one may still succeed"
        assert not any(p.status == "complete" for p in parts.values())
        assert action.partid not in parts
        parts[action.partid] = Part()

    def sendpays(self, payment_hash):
        preimage = PREIMAGES[HASHES.index(payment_hash)].hex()
        return [{"partid": partid, "groupid": 1, "status": part.status,
                 **({"payment_preimage": preimage} if part.status == "complete" else {})}
                for partid, part in self.parts[payment_hash].items()]

    def htlc_out(self, payment_hash):
        return any(p.status == "pending" and not p.lost for p in self.parts[payment_hash].values())

    def may_succeed(self, payment_hash):
        return any((p.status == "pending" and not p.lost) or p.status == "complete"
                   for p in self.parts[payment_hash].values())

    def check_may_fail(self, payment_hash, key):
        """(i): failing the last HTLC for a hash whose outgoing part may succeed loses money."""
        if self.may_succeed(payment_hash) and not self.resolved.get(payment_hash):
            others = [k for h, k in self.waiting if h == payment_hash and k != key]
            assert others, "failed the incoming HTLC while its outgoing payment may succeed"

    def hook(self, waiting, rnd, tip=None):
        inc = waiting.incoming
        result = self.event(rnd, lambda: self.relay.htlc_accepted(
            waiting.payment_hash, inc, payload(waiting.record, inc.amount_msat, inc.cltv_expiry),
            inc.amount_msat, inc.cltv_expiry, tip))
        if result is None:
            return  # crashed: restart_now replayed it
        verdict, _ = result
        key = (waiting.payment_hash, inc.key)
        if isinstance(verdict, hold.Hold):
            # Answered already if the relay knew the answer (a replay of a settled record).
            return
        if key in self.waiting:
            self.check_may_fail(*key)
            del self.waiting[key]

    def restart_now(self, rnd):
        """Plugin and lightningd restart: memory from the datastore, every waiting HTLC replayed."""
        self.crash_after = None
        for parts in self.parts.values():
            for part in parts.values():
                if part.status == "pending" and rnd.random() < 0.1:
                    part.lost = True
        stored = [hold.HeldPayment.from_json(v) for v in self.store.values()]
        self.relay = hold.Relay(POLICY, self.height, stored, synced=self.synced)
        replays = sorted(self.waiting.values(), key=lambda w: (w.payment_hash, w.incoming.key))
        rnd.shuffle(replays)
        for waiting in replays:
            # A zero-conf channel confirmed: lightningd names it by its real scid now.
            scid = rnd.choice([waiting.incoming.channel, f"{800000 + self.next_htlc}x1x0"])
            replayed = replace(waiting, incoming=replace(waiting.incoming, channel=scid))
            if self.waiting.get((waiting.payment_hash, waiting.incoming.key)) is not waiting:
                continue  # answered meanwhile
            del self.waiting[(waiting.payment_hash, waiting.incoming.key)]
            self.waiting[(replayed.payment_hash, replayed.incoming.key)] = replayed
            self.hook(replayed, rnd)
        self.event(rnd, self.relay.reconcile)  # Node._startup

    # --- events -------------------------------------------------------------

    @initialize(online=st.lists(st.booleans(), min_size=len(NODES), max_size=len(NODES)))
    def start(self, online):
        self.online = dict(zip(NODES, online))

    @rule(rnd=st.randoms(use_true_random=False), i=st.integers(0, len(HASHES) - 1),
          node=st.sampled_from(NODES), poll=st.sampled_from([True, True, False]),
          expiry=st.integers(30, 120), report_to=st.sampled_from([PAYER, OTHER, None]),
          tip=st.booleans())
    def arrive(self, rnd, i, node, poll, expiry, report_to, tip):
        self.new_htlc(rnd, i, node, poll, expiry, report_to, tip)

    @rule(rnd=st.randoms(use_true_random=False), i=st.integers(0, len(HASHES) - 1))
    def arrive_for_the_recipient(self, rnd, i):
        self.new_htlc(rnd, i, RECIPIENT, True, 100, PAYER, False)

    def new_htlc(self, rnd, i, node, poll, expiry, report_to, tip):
        n = self.next_htlc = self.next_htlc + 1
        # A payer may reuse an onion (createonion's session key): the same shared secret.
        inc = incoming(cltv_expiry=self.height + expiry, htlc_id=n, channel=f"{n}x1x0",
                       peer=rnd.choice([PAYER, OTHER]), secret=rnd.choice(["ab" * 32, f"{n:064x}"]),
                       channel_id=f"{n:064x}")
        waiting = Waiting(HASHES[i], inc, record(node=node, please_poll=poll, report_to=report_to))
        self.waiting[(HASHES[i], inc.key)] = waiting
        self.hook(waiting, rnd, self.height if tip else None)

    @rule(rnd=st.randoms(use_true_random=False), advance=st.integers(0, 8) | st.integers(20, 150))
    def block(self, rnd, advance):
        """Node.block: check_chain, then reconcile."""
        self.height += advance
        if self.event(rnd, lambda: self.relay.chain(self.height, self.synced)) is not None:
            self.event(rnd, self.relay.reconcile)

    @rule(rnd=st.randoms(use_true_random=False), synced=st.booleans())
    def sync(self, rnd, synced):
        self.synced = synced
        self.event(rnd, lambda: self.relay.chain(self.height, synced))

    @rule(rnd=st.randoms(use_true_random=False), node=st.sampled_from(NODES),
          online=st.sampled_from([True, True, False]))
    def peer(self, rnd, node, online):
        self.online[node] = online
        if online:
            self.event(rnd, lambda: self.relay.peer_online(node))

    @precondition(lambda self: any(p.status == "pending" and not p.lost
                                   for parts in self.parts.values() for p in parts.values()))
    @rule(rnd=st.randoms(use_true_random=False), succeed=st.sampled_from([True, True, False]),
          told=st.sampled_from([True, True, True, False]), by_recipient=st.booleans())
    def outcome(self, rnd, succeed, told, by_recipient):
        """An outgoing part settles; the notification may be lost."""
        live = sorted((h, partid) for h, parts in self.parts.items()
                      for partid, p in parts.items() if p.status == "pending" and not p.lost)
        payment_hash, partid = rnd.choice(live)
        part = self.parts[payment_hash][partid]
        if succeed:
            part.status = "complete"
            preimage = PREIMAGES[HASHES.index(payment_hash)].hex()
            if told:
                self.event(rnd, lambda: self.relay.attempt_succeeded(payment_hash, preimage))
        else:
            part.status = "failed"
            refused_by = rnd.choice(NODES) if by_recipient else None
            if told:
                self.event(rnd, lambda: self.relay.attempt_failed(
                    payment_hash, partid, "WIRE_TEMPORARY_CHANNEL_FAILURE", refused_by))

    @rule(rnd=st.randoms(use_true_random=False), i=st.none() | st.integers(0, len(HASHES) - 1))
    def poll(self, rnd, i):
        try:
            self.event(rnd, lambda: self.relay.poll(None if i is None else HASHES[i]))
        except AsynclnError:
            pass

    @rule(rnd=st.randoms(use_true_random=False), i=st.integers(0, len(HASHES) - 1))
    def cancel(self, rnd, i):
        try:
            self.event(rnd, lambda: self.relay.cancel(HASHES[i]))
        except AsynclnError:
            pass

    @rule(rnd=st.randoms(use_true_random=False))
    def reconcile(self, rnd):
        self.event(rnd, self.relay.reconcile)

    @rule(rate=st.sampled_from(FAIL_RATES))
    def failing(self, rate):
        self.fail_rate = rate

    @rule(after=st.integers(0, 4))
    def crash_soon(self, after):
        self.crash_after = after

    @rule(rnd=st.randoms(use_true_random=False))
    def restart(self, rnd):
        self.restart_now(rnd)

    @rule(rnd=st.randoms(use_true_random=False))
    def heal(self, rnd):
        self.heal_and_check(rnd)

    def teardown(self):
        self.heal_and_check(random.Random(0))

    # --- (ii) ---------------------------------------------------------------

    def snapshot(self):
        return (dict(self.relay.held), dict(self.store), dict(self.waiting),
                {h: {k: (p.status, p.lost) for k, p in parts.items()} for h, parts in self.parts.items()})

    def heal_and_check(self, rnd):
        self.fail_rate = 0.0
        self.crash_after = None
        self.checked = set()
        for _ in range(20):
            before = self.snapshot()
            self.event(rnd, self.relay.reconcile)
            if self.snapshot() == before:
                break
        else:
            raise AssertionError("reconcile never settled")
        relay = self.relay
        assert not relay.unsaved
        for payment_hash, held in relay.held.items():
            if held.state not in HOLD_OPEN:
                assert not held.attached, "an answer decided was never delivered"
        for (payment_hash, key), waiting in self.waiting.items():
            held = relay.held.get(payment_hash)
            assert held is not None, "an HTLC waits for a record the relay no longer has"
            assert held.incoming.key == key, "an HTLC waits on a record for another HTLC"
            assert held.state in HOLD_OPEN, \
                f"a {held.state.value} record left its HTLC waiting after reconcile"
            assert held.attached
        for payment_hash, held in relay.held.items():
            assert durable(self.store.get(payment_hash)) == durable(held.to_json()), \
                "the datastore differs from memory after reconcile"
            if held.state == HoldState.FORWARDING:
                assert (payment_hash, held.partid) in self.checked
                part = self.parts[payment_hash].get(held.partid)
                assert part is not None and part.status == "pending", \
                    "FORWARDING, but lightningd has no pending part for the attempt"
            if held.state == HoldState.COMPLETE:
                assert held.preimage == PREIMAGES[HASHES.index(payment_hash)].hex()
        for payment_hash, stored in self.store.items():
            if payment_hash not in relay.held:
                # A failed Forget, maybe after failed Persists (forgetting drops what is
                # unsaved): lightningd can no longer replay the HTLC, so on reload the
                # record is never attached, gives up if held, and is forgotten again.
                assert stored["incoming"]["cltv_expiry"] < self.height

    # --- always -------------------------------------------------------------

    @invariant()
    def money_in_covers_money_out(self):
        """A payment the recipient got never lost its incoming HTLC to a fail-back."""
        for payment_hash, parts in self.parts.items():
            if any(p.status == "complete" for p in parts.values()):
                if self.resolved.get(payment_hash):
                    continue  # paid once and settled once: a later HTLC for it may fail
                held = self.relay.held.get(payment_hash)
                waiting = [k for h, k in self.waiting if h == payment_hash]
                assert held is None or held.state != HoldState.FAILED or not waiting

    @invariant()
    def one_live_part_per_hash(self):
        for parts in self.parts.values():
            assert sum(p.status == "pending" and not p.lost for p in parts.values()) <= 1


ShellMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=80, deadline=None)
TestShellMachine = ShellMachine.TestCase


# --- (iii), one batch at a time ------------------------------------------------

# A failed route search changes a HELD record's attempts, next poll and last
# error without a Persist, and a replay's new scid is not written either: only
# state changes are. A restart forgets these, which costs a payer notice or a
# stale channel in listheld at most (replays are matched on the channel id).
NOT_WRITTEN_ON_EVERY_TRY = ("attempts", "next_poll_height", "last_error")


def durable(stored):
    if stored is None:
        return None
    data = {k: v for k, v in stored.items() if k not in NOT_WRITTEN_ON_EVERY_TRY}
    data["incoming"] = {k: v for k, v in data["incoming"].items() if k != "channel"}
    return data


def describe(action):
    h = f"H{HASHES.index(action.payment_hash)}"
    match action:
        case hold.Persist(held=held):
            return f"Persist({h} {held.state.value} p{held.partid} #{held.incoming.key})"
        case hold.SendPay() | hold.CheckAttempt():
            return f"{type(action).__name__}({h} p{action.partid})"
        case hold.ResolveIncoming(htlc=key) | hold.FailIncoming(htlc=key):
            return f"{type(action).__name__}({h} #{key})"
        case _:
            return f"{type(action).__name__}({h})"


class OneBatch:
    """The shell's loop over one batch, failing the actions ``fails`` picks."""

    def __init__(self, relay, fails):
        self.relay, self.fails, self.done = relay, fails, []

    def run(self, actions):
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            if self.fails(action):
                follow = self.relay.action_failed(action, "injected failure")
            else:
                self.done.append(action)
                follow = []
                if isinstance(action, (hold.ResolveIncoming, hold.FailIncoming)):
                    self.relay.answered(action.payment_hash, action.htlc)  # delivered
            queue.extendleft(reversed(follow))


def test_a_failing_persist_for_one_payment_still_resolves_another():
    relay = hold.Relay(POLICY, 1000)
    x, y = HASHES[0], HASHES[1]
    for n, payment_hash in enumerate((x, y)):
        inc = incoming(htlc_id=n, secret=f"{n + 1:064x}")
        relay.htlc_accepted(payment_hash, inc, payload(record()), inc.amount_msat, inc.cltv_expiry)
    route = [{"id": RECIPIENT, "channel": "9x9x9", "direction": 0, "amount_msat": 100_000, "delay": 18}]
    relay.route_failed(x, "offline")  # x was the probe: y followed it and failed with it
    relay.poll(y)
    assert relay.may_send(y, relay.route_found(y, route)[-1].partid)
    batch = relay.cancel(x) + relay.attempt_succeeded(y, PREIMAGES[1].hex())
    shell = OneBatch(relay, lambda a: isinstance(a, hold.Persist) and a.payment_hash == x)
    shell.run(batch)
    assert hold.ResolveIncoming(y, PREIMAGES[1].hex(), incoming(htlc_id=1).key) in shell.done
    assert hold.FailIncoming(x, "2019", "cancelled by the holding node's operator", incoming(htlc_id=0).key) in shell.done
    assert relay.reconcile()[0] == hold.Persist(relay.held[x])  # and x's record is saved again


def x_and_y():
    """X (to NODES[1]) held after a failed search; Y (to RECIPIENT) with an attempt in flight."""
    relay = hold.Relay(POLICY, 1000)
    x, y = HASHES[:2]
    for n, (payment_hash, node) in enumerate(((x, NODES[1]), (y, RECIPIENT))):
        inc = incoming(htlc_id=n, secret=f"{n + 1:064x}")
        relay.htlc_accepted(payment_hash, inc, payload(record(node=node)), inc.amount_msat,
                            inc.cltv_expiry)
    relay.route_failed(x, "offline")
    sent = relay.route_found(y, direct(RECIPIENT))
    assert relay.may_send(y, sent[-1].partid)
    return relay, x, y


def direct(node):
    return [{"id": node, "channel": "9x9x9", "direction": 0, "amount_msat": 100_000, "delay": 18}]


X_BATCHES = {
    "cancel": lambda relay, x: relay.cancel(x),                    # Persist, NotifyPayer, FailIncoming
    "search": lambda relay, x: relay.poll(x),                      # FindRoute
    "attempt": lambda relay, x: relay.poll(x) and relay.route_found(x, direct(NODES[1])),  # Persist, SendPay
    "check": lambda relay, x: [hold.CheckAttempt(x, 1)],
    "complete": lambda relay, x: relay.attempt_succeeded(x, PREIMAGES[0].hex()),  # Persist, Resolve
    "forget": lambda relay, x: [hold.Forget(x)],
}


@pytest.mark.parametrize("x_first", [True, False])
@pytest.mark.parametrize("kind", sorted(X_BATCHES))
def test_one_payments_failing_actions_never_drop_anothers(kind, x_first):
    relay, x, y = x_and_y()
    x_actions = X_BATCHES[kind](relay, x)
    assert x_actions and all(a.payment_hash == x for a in x_actions)
    y_actions = relay.attempt_succeeded(y, PREIMAGES[1].hex())
    y_after = relay.held[y]
    assert [type(a) for a in y_actions] == [hold.Persist, hold.ResolveIncoming]
    shell = OneBatch(relay, lambda a: a.payment_hash == x)
    shell.run(x_actions + y_actions if x_first else y_actions + x_actions)
    assert [a for a in shell.done if a.payment_hash == y] == y_actions
    assert relay.held[y] == y_after
    owed = relay.reconcile()
    assert all(a.payment_hash == x for a in owed if not isinstance(a, hold.CheckAttempt)), \
        "Y's actions were carried out: nothing is owed for Y"
    # and what failed for X is owed again
    assert ({type(a) for a in owed if a.payment_hash == x}
            >= {type(a) for a in x_actions} & {hold.Persist, hold.ResolveIncoming, hold.FailIncoming})
