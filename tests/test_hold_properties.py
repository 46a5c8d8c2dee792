"""Money invariants of the holding state machine, over random event sequences.

Hypothesis drives arrivals, replays (with the channel's scid changed),
blocks, chain sync, route answers, outcomes with their partids, lightningd's
judged records, operator commands, failures of emitted actions, reconcile
and restarts in any order; every step checks the rules listed in
asyncln/hold.py's docstring.
"""

import hashlib
import pytest
from collections import Counter, defaultdict
from dataclasses import replace

from factories import OTHER, PAYER, RECIPIENT, direct_route, incoming, node_id, payload, record
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from asyncln import chain, failures, hold
from asyncln.errors import AsynclnError
from asyncln.lightningd import Failed, InFlight, Lost, Succeeded
from asyncln.policy import Policy
from asyncln.states import HoldState

PREIMAGES = [bytes([i + 1]) * 32 for i in range(4)]
HASHES = [hashlib.sha256(p).hexdigest() for p in PREIMAGES]
hash_index = st.integers(0, len(HASHES) - 1)
PEERS = [PAYER, OTHER]
SECRETS = ["33" * 32, "44" * 32, "55" * 32]
SCIDS = ["103x1x0", "800000x1x0", "1x2x3"]
NODES = [RECIPIENT, node_id(5)]
HOP = node_id(9)
TERMINAL = (HoldState.COMPLETE, HoldState.FAILED)


class RelayMachine(RuleBasedStateMachine):
    dear = None  # the hash whose found route is being judged (route_found)

    @initialize(poll=st.integers(1, 10), max_hold=st.integers(1, 200), safety=st.integers(1, 60),
                base=st.integers(0, 2000), ppm=st.integers(0, 5000), max_held=st.integers(1, 4),
                min_held=st.sampled_from([0, 10_000, 50_000]), per_peer=st.integers(1, 4),
                per_peer_msat=st.integers(100_000, 10**9), spare=st.integers(0, 400))
    def start(self, poll, max_hold, safety, base, ppm, max_held, min_held, per_peer, per_peer_msat,
              spare):
        self.policy = Policy(poll_blocks=poll, max_hold_blocks=max_hold, safety_blocks=safety,
                             fee_base_msat=base, fee_ppm=ppm, max_held=max_held,
                             max_held_msat=10**9, min_held_msat=min_held,
                             max_held_per_peer=per_peer, max_held_msat_per_peer=per_peer_msat,
                             spare_blocks=spare)
        self.offered = None        # the route last handed to route_found
        self.relay = hold.Relay(self.policy, 1000)
        self.block_height = 1000   # the highest height a block or chain event brought
        self.queue = []            # emitted actions the "shell" has not carried out yet
        self.paid = set()          # (hash, shared secret): the relay learned the preimage

    # --- the checks every step goes through ---------------------------------

    def step(self, event, ends=None, stale=None):
        """Run ``event`` (a call into the relay) and check the actions it returns.

        ``ends`` = (hash, partid): the event reports that attempt's end, so
        its record may fail back in this step *if* ``partid`` is the
        record's current attempt. ``stale`` = (hash, partid): an outcome
        that must change nothing unless ``partid`` is the current attempt.
        """
        relay = self.relay
        before = dict(relay.held)
        height_before = relay.height
        result = event()
        verdict, actions = result if isinstance(result, tuple) else (None, result)
        persisted = {}
        for action in actions:
            payment_hash = action.payment_hash
            old = before.get(payment_hash)
            now = relay.held.get(payment_hash)
            if isinstance(action, hold.Persist):
                persisted[payment_hash] = action.held.state
            elif isinstance(action, hold.Forget):
                assert old is not None and old.state in TERMINAL and now is None
                self.paid = {p for p in self.paid if p[0] != payment_hash}
            elif isinstance(action, hold.FailIncoming):
                if old is not None and old.state == HoldState.FORWARDING:
                    assert ends == (payment_hash, old.partid), \
                        "failed an HTLC while its outgoing attempt may still succeed"
                assert persisted.get(payment_hash) == HoldState.FAILED or \
                    (old is not None and old.state == HoldState.FAILED)
                assert now is not None and now.state == HoldState.FAILED
                assert (payment_hash, now.incoming.shared_secret) not in self.paid
                if action.failure_message != failures.temporary_trampoline_failure() and \
                        self.dear != payment_hash:  # an answer owed since, given again
                    assert old.state == HoldState.FAILED
                    assert action.failure_message == old.failure_message
                elif action.failure_message != failures.temporary_trampoline_failure():
                    # A found route costs more than the HTLC leaves after our fee: quoted, not used.
                    route_fee = self.offered[0]["amount_msat"] - now.record.amount_msat
                    terms = chain.refusal_terms(self.policy, now.record.max_hold_blocks, route_fee)
                    assert old.incoming.amount_msat - self.offered[0]["amount_msat"] \
                        < self.policy.fee(now.record.amount_msat)
                    assert action.failure_message == failures.trampoline_fee_or_expiry_insufficient(
                        *terms.values())
            elif isinstance(action, hold.ResolveIncoming):
                assert hashlib.sha256(bytes.fromhex(action.preimage)).hexdigest() == payment_hash
                assert HoldState.COMPLETE in (persisted.get(payment_hash), old and old.state)
            elif isinstance(action, hold.SendPay):
                self.check_sendpay(action, old, now, persisted)
            elif isinstance(action, hold.FindRoute):
                assert relay.synced, "route search while lightningd is not synced"
                assert now is not None and now.attached and now.state == HoldState.HELD
                assert action.maxdelay == (now.incoming.cltv_expiry - self.policy.safety_blocks
                                           - relay.height - hold.HEIGHT_SLACK)
            elif isinstance(action, hold.CheckAttempt):
                record = now or old
                assert record is not None and action.partid <= record.partid
            elif isinstance(action, hold.NotifyPayer):
                record = now or old
                assert record.record.report_to is not None
                assert action.payer == record.record.report_to
        for payment_hash, old in before.items():
            now = relay.held.get(payment_hash)
            same = now is not None and now.incoming.same_htlc(old.incoming)
            if old.state in TERMINAL and same:
                assert now.state == old.state, "a settled HTLC changed its outcome"
            if old.state == HoldState.COMPLETE:
                assert now is None or same, "a completed record was replaced"
            if old.state == HoldState.FORWARDING:
                assert now is not None and same, "a forwarding record was replaced or forgotten"
                if stale and stale[0] == payment_hash and stale[1] != old.partid:
                    assert now == old, "a stale outcome changed a forwarding record"
            if old.state == HoldState.FORWARDING and now.state == HoldState.FORWARDING:
                assert now.partid == old.partid
        if isinstance(verdict, hold.Reject):
            assert actions == []
        if relay.height > height_before and relay.synced and verdict is None:
            self.check_nothing_overdue()
        self.queue += actions
        return verdict, actions

    def check_sendpay(self, action, old, now, persisted):
        relay, policy = self.relay, self.policy
        assert relay.synced, "SendPay while lightningd is not synced"
        assert persisted.get(action.payment_hash) == HoldState.FORWARDING
        assert now.state == HoldState.FORWARDING and now.attached and action.partid == now.partid
        assert old is None or action.partid > old.partid, "an attempt reused a partid"
        assert (action.payment_hash, action.partid) in relay.unsent  # may_send will say yes
        first, last = action.route[0], action.route[-1]
        cltv_expiry = now.incoming.cltv_expiry
        assert first["delay"] + policy.safety_blocks + hold.HEIGHT_SLACK + relay.height <= cltv_expiry
        assert action.max_height == cltv_expiry - policy.safety_blocks - first["delay"] - 1
        assert action.max_height >= relay.height + 1
        assert now.incoming.amount_msat - first["amount_msat"] >= policy.fee(now.record.amount_msat)
        assert last["id"] == now.record.next_node
        assert last["amount_msat"] == now.record.amount_msat
        assert last["delay"] >= now.record.final_cltv_delta
        # Spare blocks: the same few more at every hop (each keeps its delta), at most the
        # option, and fewer only when the incoming HTLC's budget has no more room.
        spare = first["delay"] - self.offered[0]["delay"]
        assert [h["delay"] - spare for h in action.route] == [h["delay"] for h in self.offered]
        assert 0 <= spare <= policy.spare_blocks
        assert spare == policy.spare_blocks or (
            first["delay"] + policy.safety_blocks + hold.HEIGHT_SLACK + relay.height == cltv_expiry)
        assert action.payment_secret == now.record.payment_secret
        assert action.total_msat == now.record.total_msat == now.record.amount_msat

    def check_nothing_overdue(self):
        """A block while synced tries every due payment that is not searching already."""
        for payment_hash, held in self.relay.held.items():
            if (held.state == HoldState.HELD and held.attached
                    and payment_hash not in self.relay.searching):
                assert held.next_poll_height > self.relay.height, "a due payment was not tried"

    # --- events -------------------------------------------------------------

    @rule(i=hash_index, amount=st.integers(1, 300_000) | st.integers(50_000, 300_000),
          extra=st.integers(0, 5000),
          expiry=st.integers(0, 400), final=st.integers(0, 40), poll=st.booleans(),
          max_hold=st.none() | st.integers(0, 300), htlc_id=st.integers(0, 2),
          peer=st.sampled_from(PEERS), secret=st.sampled_from(SECRETS),
          node=st.sampled_from(NODES), report_to=st.sampled_from([PAYER, OTHER, None]),
          tip=st.none() | st.integers(0, 3), mpp=st.integers(0, 20))
    def arrive(self, i, amount, extra, expiry, final, poll, max_hold, htlc_id, peer, secret,
               node, report_to, tip, mpp):
        rec = record(amount=amount, final_cltv=final, please_poll=poll, max_hold=max_hold,
                     node=node, report_to=report_to)
        if mpp == 0:
            rec = replace(rec, total_msat=amount + 1)
        fee = self.policy.fee(amount)
        inc = incoming(amount=max(1, amount + fee + extra - 100),
                       cltv_expiry=self.relay.height + expiry, htlc_id=htlc_id, peer=peer,
                       secret=secret)
        self.hook(HASHES[i], inc, rec, None if tip is None else self.relay.height + tip)

    @rule(i=hash_index, amount=st.integers(50_000, 300_000), expiry=st.integers(80, 400),
          final=st.integers(0, 40), poll=st.booleans(), htlc_id=st.integers(0, 2),
          peer=st.sampled_from(PEERS), secret=st.sampled_from(SECRETS),
          node=st.sampled_from(NODES))
    def arrive_admissible(self, i, amount, expiry, final, poll, htlc_id, peer, secret, node):
        """Mostly admitted: enough fee, CLTV and size, so that payments get far."""
        rec = record(amount=amount, final_cltv=final, please_poll=poll, node=node)
        inc = incoming(amount=amount + self.policy.fee(amount) + 100,
                       cltv_expiry=self.relay.height + expiry, htlc_id=htlc_id, peer=peer,
                       secret=secret)
        self.hook(HASHES[i], inc, rec, None)

    @precondition(lambda self: self.relay.searching)
    @rule(data=st.data())
    def usable_route_found(self, data):
        payment_hash = data.draw(st.sampled_from(sorted(self.relay.searching)))
        held = self.relay.held.get(payment_hash)
        if held is not None:
            route = direct_route(held.record)
            self.offered = route
            self.step(lambda: self.relay.route_found(payment_hash, route))

    def hook(self, payment_hash, inc, rec, tip):
        relay = self.relay
        existing = relay.held.get(payment_hash)
        counts = (relay.active_count, relay.active_msat)
        verdict, actions = self.step(lambda: relay.htlc_accepted(
            payment_hash, inc, payload(rec, inc.amount_msat, inc.cltv_expiry),
            inc.amount_msat, inc.cltv_expiry, tip))
        replay = (existing is not None and existing.incoming.same_htlc(inc)
                  and (not existing.attached or existing.incoming.key == inc.key))
        if replay:
            assert isinstance(verdict, hold.Hold), "a replay after a restart was not recognised"
            now = relay.held[payment_hash]
            assert now.attached  # lightningd waits on it until the answer is delivered
            assert relay.held[payment_hash].incoming.channel == inc.channel
        elif existing is not None and (existing.state != HoldState.FAILED or existing.attached):
            assert isinstance(verdict, (hold.Reject, hold.Continue))
            if isinstance(verdict, hold.Reject):
                assert verdict.failure_message == failures.temporary_node_failure()
            assert relay.held[payment_hash] == existing
        fresh = existing is None or (existing.state == HoldState.FAILED and not existing.attached)
        if rec.total_msat != rec.amount_msat and fresh and relay.policy.relay:
            assert int(verdict.failure_message[:4], 16) == failures.INVALID_ONION_PAYLOAD
        if isinstance(verdict, hold.Hold) and not replay:
            assert rec.total_msat == rec.amount_msat
            assert rec.amount_msat >= self.policy.min_held_msat
            assert relay.synced and relay.policy.relay
            assert relay.active_count <= self.policy.max_held
            assert relay.peer_count[inc.peer] <= self.policy.max_held_per_peer
            assert relay.peer_msat[inc.peer] <= self.policy.max_held_msat_per_peer
        if not isinstance(verdict, hold.Hold):
            assert (relay.active_count, relay.active_msat) == counts
        return verdict, actions

    @precondition(lambda self: self.relay.held)
    @rule(data=st.data(), scid=st.sampled_from(SCIDS), tip=st.none() | st.integers(0, 3))
    def replay(self, data, scid, tip):
        """lightningd replays an HTLC it still has, its channel maybe under another scid."""
        held = data.draw(st.sampled_from(sorted(self.relay.held.values(), key=lambda h: h.payment_hash)))
        inc = replace(held.incoming, channel=scid)
        attached = held.attached
        verdict, actions = self.hook(held.payment_hash, inc, held.record,
                                     None if tip is None else self.relay.height + tip)
        if attached and scid == held.incoming.channel:  # the shell decides it again
            assert isinstance(verdict, hold.Hold)
            assert self.relay.held[held.payment_hash].incoming == held.incoming
            return
        if attached:  # one channel, one HTLC id: never two live HTLCs
            if self.relay.policy.relay:
                assert verdict == hold.Reject(failures.temporary_node_failure(),
                                              f"another HTLC with this payment hash is already {held.state.value}")
            else:
                assert verdict == hold.Continue()
            assert self.relay.held[held.payment_hash] == held
            return
        assert isinstance(verdict, hold.Hold)
        state = held.state
        if state == HoldState.COMPLETE:
            assert actions == [hold.ResolveIncoming(held.payment_hash, held.preimage, inc.key)]
        elif state == HoldState.FAILED:
            assert actions == [hold.FailIncoming(held.payment_hash, held.failure_message,
                                                 held.last_error, inc.key)]
        elif state == HoldState.FORWARDING:
            assert actions == [hold.CheckAttempt(held.payment_hash, held.partid)]

    def _advance(self, event):
        verdict_actions = self.step(event)
        self.block_height = max(self.block_height, self.relay.height)
        for held in self.relay.held.values():
            if held.state == HoldState.HELD:
                assert self.relay.height < held.give_up_height, \
                    "a block left a held HTLC past its give-up height"
        return verdict_actions

    @rule(advance=st.integers(0, 40))
    def block(self, advance):
        self._advance(lambda: self.relay.block(self.block_height + advance))

    @rule(advance=st.integers(0, 40), synced=st.sampled_from([True, True, False]))
    def chain(self, advance, synced):
        self._advance(lambda: self.relay.chain(self.block_height + advance, synced))
        assert self.relay.synced == synced

    @rule(data=st.data(), extra_delay=st.integers(-2, 10) | st.integers(-5, 300),
          fee=st.integers(0, 3000), via=st.booleans(), wrong_node=st.integers(0, 9))
    def route_found(self, data, extra_delay, fee, via, wrong_node):
        i = data.draw(self.searched_hash())
        held = self.relay.held.get(HASHES[i])
        if held is None:
            return
        wrong_node = wrong_node == 0
        route = direct_route(held.record, max(0, held.record.final_cltv_delta + extra_delay))
        if wrong_node:
            route = [dict(route[0], id=HOP)]
        if via:
            route = [{"id": HOP, "channel": "1x1x1",
                      "amount_msat": held.record.amount_msat + fee,
                      "delay": route[0]["delay"] + 6}] + route
        self.offered = route
        self.dear = HASHES[i]
        try:
            self.step(lambda: self.relay.route_found(HASHES[i], route))
        finally:
            self.dear = None

    def searched_hash(self):
        searching = sorted(HASHES.index(h) for h in self.relay.searching if h in HASHES)
        return st.sampled_from(searching) | hash_index if searching else hash_index

    @rule(data=st.data())
    def route_failed(self, data):
        i = data.draw(self.searched_hash())
        self.step(lambda: self.relay.route_failed(HASHES[i], "no route"))

    def partid(self, i, delta):
        held = self.relay.held.get(HASHES[i])
        return (held.partid if held else 0) + delta

    @rule(i=hash_index, delta=st.sampled_from([-1, 0, 1]),
          refused=st.sampled_from([None, RECIPIENT, PAYER]))
    def attempt_failed(self, i, delta, refused):
        partid = self.partid(i, delta)
        self.step(lambda: self.relay.attempt_failed(HASHES[i], partid, "offline", refused),
                  ends=(HASHES[i], partid), stale=(HASHES[i], partid))

    @rule(i=hash_index, right=st.booleans())
    def attempt_succeeded(self, i, right):
        self.succeed(i, right, lambda preimage: self.relay.attempt_succeeded(HASHES[i], preimage))

    def succeed(self, i, right, event):
        held = self.relay.held.get(HASHES[i])
        open_ = held is not None and held.state in (HoldState.FORWARDING, HoldState.HELD)
        preimage = (PREIMAGES[i] if right else bytes(32)).hex()
        _, actions = self.step(lambda: event(preimage))
        if right and open_:
            self.paid.add((HASHES[i], held.incoming.shared_secret))
            assert self.relay.held[HASHES[i]].state == HoldState.COMPLETE
            if held.attached:
                assert hold.ResolveIncoming(HASHES[i], preimage, held.incoming.key) in actions, \
                    "a known preimage must resolve the incoming HTLC at once"
        if not right:
            assert actions == []

    @rule(i=hash_index, delta=st.sampled_from([-1, 0, 1]),
          outcome=st.sampled_from(["succeeded", "wrong", "failed", "in_flight", "lost"]))
    def attempt_checked(self, i, delta, outcome):
        partid = self.partid(i, delta)
        if outcome in ("succeeded", "wrong"):
            self.succeed(i, outcome == "succeeded",
                         lambda preimage: self.relay.attempt_checked(HASHES[i], partid, Succeeded(preimage)))
            return
        judged = {"failed": Failed("the attempt failed"), "in_flight": InFlight(), "lost": Lost()}[outcome]
        ends = (HASHES[i], partid) if outcome in ("failed", "lost") else None
        before = self.relay.held.get(HASHES[i])
        _, actions = self.step(lambda: self.relay.attempt_checked(HASHES[i], partid, judged),
                               ends=ends, stale=(HASHES[i], partid))
        if outcome == "in_flight":
            assert actions == [] and self.relay.held.get(HASHES[i]) == before

    @rule(i=hash_index, delta=st.sampled_from([-1, 0, 1]))
    def send_refused(self, i, delta):
        partid = self.partid(i, delta)
        before = self.relay.held.get(HASHES[i])
        # The shell never handed this attempt to sendpay: it ended, unsent.
        _, actions = self.step(lambda: self.relay.send_refused(HASHES[i], partid, "too high"),
                               ends=(HASHES[i], partid), stale=(HASHES[i], partid))
        if before is not None and before.state == HoldState.FORWARDING and before.partid == partid:
            now = self.relay.held[HASHES[i]]
            assert not self.relay.may_send(HASHES[i], partid)
            if self.relay.height >= before.give_up_height:  # past the deadline: fail back at once
                assert now.state == HoldState.FAILED
                assert any(isinstance(a, hold.FailIncoming) for a in actions) or not now.attached
            else:
                assert now.state == HoldState.HELD
                assert actions == [hold.Persist(now)]

    @rule(node=st.sampled_from(NODES))
    def peer_online(self, node):
        self.step(lambda: self.relay.peer_online(node))

    @rule(i=st.none() | hash_index)
    def poll(self, i):
        try:
            self.step(lambda: self.relay.poll(None if i is None else HASHES[i]))
        except AsynclnError:
            assert HASHES[i] not in self.relay.held

    @rule(i=hash_index)
    def cancel(self, i):
        before = self.relay.held.get(HASHES[i])
        try:
            self.step(lambda: self.relay.cancel(HASHES[i]))
        except AsynclnError:
            assert before is None or before.state != HoldState.HELD
            assert self.relay.held.get(HASHES[i]) == before

    @precondition(lambda self: self.queue)
    @rule(data=st.data(), fail=st.booleans())
    def execute(self, data, fail):
        """The shell carries out one emitted action; it may fail."""
        index = data.draw(st.integers(0, len(self.queue) - 1))
        action = self.queue.pop(index)
        if isinstance(action, hold.SendPay) and not self.relay.may_send(action.payment_hash,
                                                                        action.partid):
            return  # the shell skips an attempt that is no longer the one to send
        if not fail:
            if isinstance(action, (hold.ResolveIncoming, hold.FailIncoming)):
                self.relay.answered(action.payment_hash, action.htlc)  # delivered
            return
        before = self.relay.held.get(action.payment_hash)
        unsent = isinstance(action, hold.Persist) and \
            (action.payment_hash, action.held.partid) in self.relay.unsent
        queued = self.queue
        self.queue = []
        # An attempt it could not save, not yet handed to sendpay, is taken back: it ended.
        ends = (action.payment_hash, action.held.partid) if unsent else None
        _, follow = self.step(lambda: self.relay.action_failed(action, "the shell failed"), ends=ends)
        self.queue = follow + queued
        held = self.relay.held.get(action.payment_hash)
        if isinstance(action, hold.Persist) and before is not None \
                and before.state == HoldState.FORWARDING and action.held.state == HoldState.FORWARDING \
                and action.held.partid == before.partid:
            if unsent:
                expected = (HoldState.FAILED if self.relay.height >= before.give_up_height
                            else HoldState.HELD)  # past the deadline: fail back at once
                assert held.state == expected, "an attempt it could not save may still be sent"
                assert not self.relay.may_send(action.payment_hash, before.partid)
            else:
                assert held == before, "an attempt handed to sendpay was taken back"
        if isinstance(action, hold.SendPay):
            assert follow == [hold.CheckAttempt(action.payment_hash, action.partid)]

    @rule()
    def reconcile(self):
        _, actions = self.step(self.relay.reconcile)
        checks = {a.payment_hash for a in actions if isinstance(a, hold.CheckAttempt)}
        forwarding = {h for h, p in self.relay.held.items() if p.state == HoldState.FORWARDING}
        assert checks == forwarding

    @rule(synced=st.sampled_from([True, True, False]),
          relay_on=st.sampled_from([True, True, True, False]))
    def restart(self, synced, relay_on):
        stored = [hold.HeldPayment.from_json(h.to_json()) for h in self.relay.held.values()]
        self.relay = hold.Relay(replace(self.policy, relay=relay_on), self.relay.height, stored,
                                synced=synced)
        self.queue = []  # what the old process had not carried out is gone with it

    # --- invariants ---------------------------------------------------------

    @invariant()
    def deadlines_hold(self):
        for held in self.relay.held.values():
            assert held.give_up_height <= held.incoming.cltv_expiry - self.policy.safety_blocks
            assert held.give_up_height >= held.hold_start
            # That a block fails back every held HTLC whose give-up height it reached
            # is checked in _advance; between blocks a record may be HELD past it.

    @invariant()
    def running_totals_match_the_records(self):
        relay = self.relay
        open_ = [h for h in relay.held.values() if h.state in (HoldState.HELD, HoldState.FORWARDING)]
        assert relay.active_count == len(open_)
        assert relay.active_msat == sum(h.incoming.amount_msat for h in open_)
        count, msat, nodes = Counter(), Counter(), defaultdict(set)
        for h in open_:
            count[h.incoming.peer] += 1
            msat[h.incoming.peer] += h.incoming.amount_msat
            nodes[h.record.next_node].add(h.payment_hash)
        assert {p: n for p, n in relay.peer_count.items() if n} == dict(count)
        assert {p: n for p, n in relay.peer_msat.items() if n} == dict(msat)
        assert all(n >= 0 for n in relay.peer_count.values())
        assert dict(relay.by_node) == dict(nodes)
        assert relay.forwarding == {h.payment_hash for h in open_ if h.state == HoldState.FORWARDING}
        assert relay.owed == {h for h, p in relay.held.items() if p.state in TERMINAL and p.attached}

    @invariant()
    def settled_records_hold_what_they_need(self):
        for held in self.relay.held.values():
            if held.state == HoldState.COMPLETE:
                assert hashlib.sha256(bytes.fromhex(held.preimage)).hexdigest() == held.payment_hash
            if held.state == HoldState.FAILED:  # gave up, or quoted a route too dear (#836)
                assert held.failure_message == failures.temporary_trampoline_failure() or \
                    int(held.failure_message[:4], 16) == failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT


RelayMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=50, deadline=None)
TestRelayMachine = RelayMachine.TestCase
