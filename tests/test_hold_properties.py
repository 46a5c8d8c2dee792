"""Money invariants of the holding state machine, over random event sequences.

Hypothesis drives arrivals, blocks, route answers, outcomes, operator
commands and restarts in any order; every step checks the rules listed in
asyncln/hold.py's docstring.
"""

import hashlib

from factories import PAYER, RECIPIENT, direct_route, incoming, payload, record
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from asyncln import hold
from asyncln.policy import Policy

PREIMAGES = [bytes([i + 1]) * 32 for i in range(4)]
HASHES = [hashlib.sha256(p).hexdigest() for p in PREIMAGES]
hash_index = st.integers(0, len(HASHES) - 1)


class RelayMachine(RuleBasedStateMachine):
    @initialize(poll=st.integers(1, 10), max_hold=st.integers(1, 200), safety=st.integers(1, 60),
                base=st.integers(0, 2000), ppm=st.integers(0, 5000), max_held=st.integers(1, 4))
    def start(self, poll, max_hold, safety, base, ppm, max_held):
        self.policy = Policy(poll_blocks=poll, max_hold_blocks=max_hold, safety_blocks=safety,
                                  fee_base_msat=base, fee_ppm=ppm, max_held=max_held,
                                  max_held_msat=10**9)
        self.relay = hold.Relay(self.policy, 1000)
        self.outgoing_preimage_known = set()

    def step(self, event, attempt_ended=None):
        """Run ``event`` (a call into the relay) and check the actions it returns."""
        before = {h: p.state for h, p in self.relay.held.items()}
        htlcs = {h: p.incoming for h, p in self.relay.held.items()}
        actions = event()
        if isinstance(actions, tuple):  # htlc_accepted: (verdict, actions)
            actions = actions[1]
        persisted = {}
        for action in actions:
            if isinstance(action, hold.Persist):
                persisted[action.held.payment_hash] = action.held.state
            elif isinstance(action, hold.FailIncoming):
                if action.payment_hash != attempt_ended:
                    assert before.get(action.payment_hash) != hold.FORWARDING, \
                        "failed an HTLC while its outgoing attempt was in flight"
                assert action.payment_hash not in self.outgoing_preimage_known
                assert persisted.get(action.payment_hash) == hold.FAILED or \
                    before.get(action.payment_hash) == hold.FAILED
            elif isinstance(action, hold.ResolveIncoming):
                assert hashlib.sha256(bytes.fromhex(action.preimage)).hexdigest() == action.payment_hash
                assert hold.COMPLETE in (persisted.get(action.payment_hash), before.get(action.payment_hash))
            elif isinstance(action, hold.SendPay):
                held = self.relay.held[action.payment_hash]
                assert persisted.get(action.payment_hash) == hold.FORWARDING
                assert held.attached
                first, last = action.route[0], action.route[-1]
                assert (self.relay.height + hold.HEIGHT_SLACK + first["delay"]
                        + self.policy.safety_blocks) <= held.incoming.cltv_expiry
                assert held.incoming.amount_msat - first["amount_msat"] >= \
                    self.policy.fee(held.record.amount_msat)
                assert last["amount_msat"] == held.record.amount_msat
                assert last["delay"] >= held.record.final_cltv_delta
        for h, state in before.items():
            now = self.relay.held.get(h)
            if state in hold.TERMINAL and now is not None and now.incoming == htlcs[h]:
                assert now.state == state, "a settled HTLC changed its outcome"
            if state == hold.COMPLETE:
                assert now is None or now.incoming == htlcs[h], "a completed record was replaced"
        return actions

    @rule(i=hash_index, amount=st.integers(1, 300_000), extra=st.integers(0, 5000),
          expiry=st.integers(0, 400), final=st.integers(0, 40), poll=st.booleans(),
          max_hold=st.none() | st.integers(0, 300), htlc_id=st.integers(0, 2))
    def arrive(self, i, amount, extra, expiry, final, poll, max_hold, htlc_id):
        rec = record(amount=amount, final_cltv=final, please_poll=poll, max_hold=max_hold)
        fee = self.policy.fee(amount)
        inc = incoming(amount=max(1, amount + fee + extra - 100), cltv_expiry=self.relay.height + expiry,
                       htlc_id=htlc_id)
        answers = []
        self.step(lambda: answers.append(self.relay.htlc_accepted(
            HASHES[i], inc, payload(rec, inc.amount_msat, inc.cltv_expiry),
            inc.amount_msat, inc.cltv_expiry, PAYER)) or answers[0])
        verdict, actions = answers[0]
        if isinstance(verdict, hold.Reject):
            assert not actions

    @rule(advance=st.integers(0, 40))
    def block(self, advance):
        self.step(lambda: self.relay.block(self.relay.height + advance))

    @rule(i=hash_index, extra_delay=st.integers(-5, 200), fee=st.integers(0, 3000),
          via=st.booleans())
    def route_found(self, i, extra_delay, fee, via):
        held = self.relay.held.get(HASHES[i])
        if held is None:
            return
        route = direct_route(held.record, max(0, held.record.final_cltv_delta + extra_delay))
        if via:
            route = [{"id": "02" + "cc" * 32, "channel": "1x1x1",
                      "amount_msat": held.record.amount_msat + fee,
                      "delay": route[0]["delay"] + 6}] + route
        self.step(lambda: self.relay.route_found(HASHES[i], route))

    @rule(i=hash_index)
    def route_failed(self, i):
        self.step(lambda: self.relay.route_failed(HASHES[i], "no route"))

    @rule(i=hash_index, refused=st.sampled_from([None, RECIPIENT, PAYER]))
    def attempt_failed(self, i, refused):
        self.step(lambda: self.relay.attempt_failed(HASHES[i], "offline", refused), attempt_ended=HASHES[i])

    @rule(i=hash_index, right=st.booleans())
    def attempt_succeeded(self, i, right):
        held = self.relay.held.get(HASHES[i])
        in_flight = held is not None and held.state in (hold.FORWARDING, hold.HELD)
        preimage = PREIMAGES[i] if right else bytes(32)
        actions = self.step(lambda: self.relay.attempt_succeeded(HASHES[i], preimage.hex()),
                            attempt_ended=HASHES[i])
        if right and in_flight:
            assert hold.ResolveIncoming(HASHES[i], preimage.hex()) in actions, \
                "a known preimage must resolve the incoming HTLC at once"

    @rule()
    def peer_online(self):
        self.step(lambda: self.relay.peer_online(RECIPIENT))

    @rule(i=hash_index)
    def cancel(self, i):
        try:
            self.step(lambda: self.relay.cancel(HASHES[i]))
        except hold.RelayError:
            pass

    @rule()
    def restart(self):
        stored = [hold.HeldPayment.from_json(h.to_json()) for h in self.relay.held.values()]
        self.relay = hold.Relay(self.policy, self.relay.height, stored)

    @precondition(lambda self: self.relay.held)
    @rule(data=st.data())
    def replay(self, data):
        held = data.draw(st.sampled_from(sorted(self.relay.held.values(), key=lambda h: h.payment_hash)))
        answers = []
        self.step(lambda: answers.append(self.relay.htlc_accepted(
            held.payment_hash, held.incoming,
            payload(held.record, held.incoming.amount_msat, held.incoming.cltv_expiry),
            held.incoming.amount_msat, held.incoming.cltv_expiry, held.payer)) or answers[0])
        assert isinstance(answers[0][0], hold.Hold)

    @invariant()
    def deadlines_hold(self):
        for held in self.relay.held.values():
            assert held.give_up_height <= held.incoming.cltv_expiry - self.policy.safety_blocks
            if held.state == hold.HELD and held.attached:
                assert self.relay.height < held.give_up_height, \
                    "a held HTLC outlived its give-up height"


RelayMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
TestRelayMachine = RelayMachine.TestCase
