"""The payer's rules over random inputs: its state machine, its fee cap, its trampoline choice.

Hypothesis drives status messages, outcomes, stale failures, restarts and
crash reconciliation in any order, and random terms, routes and amounts.
"""

import hashlib

import coincurve
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from asyncln import failures, payer
from asyncln.errors import AsynclnError, Code
from asyncln.lightningd import InFlight, Lost, judge_attempt
from asyncln.messages import PaymentStatus
from asyncln.policy import Policy
from asyncln.record import TrampolineRecord, find_record
from asyncln.states import PAY_MOVES, PAY_OPEN, PayState

NODES = [coincurve.PrivateKey(bytes([n]) * 32).public_key.format().hex() for n in range(1, 7)]
ME, RECIPIENT, TRAMPOLINE, OTHER = NODES[:4]
PREIMAGES = ["%02x" % n * 32 for n in range(1, 4)]
PAYMENT_HASH = hashlib.sha256(bytes.fromhex(PREIMAGES[0])).hexdigest()

ids = st.integers(0, 3)
heights = st.integers(100, 103)


@st.composite
def sendpay_parts(draw):
    """listsendpays parts as lightningd prints them: partid 0 is omitted."""
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        status = draw(st.sampled_from(["pending", "failed", "complete"]))
        part = {"status": status, "groupid": draw(ids), "payment_hash": PAYMENT_HASH}
        partid = draw(ids)
        if partid:
            part["partid"] = partid
        if status == "complete":
            part["payment_preimage"] = draw(st.sampled_from(PREIMAGES))
        parts.append(part)
    return parts


class PayMachine(RuleBasedStateMachine):
    @initialize(legacy=st.booleans(), partid=ids, groupid=ids, held=st.booleans())
    def start(self, legacy, partid, groupid, held):
        self.pay = payer.Pay(
            payment_hash=PAYMENT_HASH, bolt11="lnbcrt1", destination=RECIPIENT,
            trampoline=TRAMPOLINE, amount_msat=100_000, amount_sent_msat=102_600,
            cltv_expiry=837, max_hold_blocks=30, created_at=1, trampoline_index=1,
            status=PayState.HELD if held else PayState.PENDING,
            partid=None if legacy else partid, groupid=None if legacy else groupid)

    def step(self, event):
        """Run ``event`` on the pay and check the move it made."""
        before = self.pay
        after = event(before)
        if after is None:
            return before, None
        assert after.status in PAY_MOVES[before.status], \
            f"illegal {before.status.value} -> {after.status.value}"
        assert before.status is not PayState.COMPLETE, "left COMPLETE"
        self.pay = payer.Pay.from_json(after.to_json())
        assert self.pay == after
        return before, after

    @rule(from_trampoline=st.booleans(), held=st.booleans(), give_up=heights,
          reason=st.sampled_from(["", "offline", "gave up"]))
    def status(self, from_trampoline, held, give_up, reason):
        msg = PaymentStatus(PAYMENT_HASH, "held" if held else "failed", give_up, give_up - 6, 1,
                            reason)
        sender = TRAMPOLINE if from_trampoline else OTHER
        before, after = self.step(lambda p: payer.on_status(p, msg, sender))
        if not from_trampoline or before.status not in PAY_OPEN:
            assert after is None
        elif not held:
            assert after.status is before.status and after.reason == reason

    @rule(preimage=st.sampled_from(PREIMAGES))
    def success(self, preimage):
        before, after = self.step(lambda p: payer.on_success(p, preimage))
        assert (after is None) == (before.status is PayState.COMPLETE)

    @rule(current=st.booleans(), partid=ids, groupid=ids, omit_zero=st.booleans(),
          failcode=st.sampled_from([None, failures.TEMPORARY_NODE_FAILURE, failures.PERM | 15]),
          erring_index=st.sampled_from([None, 0, 1, 2]))
    def failure(self, current, partid, groupid, omit_zero, failcode, erring_index):
        if current and self.pay.partid is not None:
            partid, groupid = self.pay.partid, self.pay.groupid
        stale = self.pay.partid is not None and (partid, groupid) != (self.pay.partid,
                                                                      self.pay.groupid)
        sent_partid = None if omit_zero and partid == 0 else partid
        before, after = self.step(lambda p: payer.on_failure(p, sent_partid, groupid, failcode,
                                                             erring_index, "failed"))
        if stale:
            assert after is None, "a stale attempt's failure changed the pay"
        elif before.status in PAY_OPEN:
            assert after.status is PayState.FAILED

    @rule(parts=sendpay_parts(), htlc_out=st.booleans(), height=heights)
    def reconcile(self, parts, htlc_out, height):
        self.settle(parts, htlc_out, height)

    @rule(others=sendpay_parts(), htlc_out=st.booleans(), height=heights,
          same_block=st.booleans())
    def pending(self, others, htlc_out, height, same_block):
        """Our attempt pending, with or without its HTLC (random parts rarely say so)."""
        if same_block and self.pay.lost_since is not None:
            height = self.pay.lost_since
        ours = {"status": "pending", "partid": self.pay.partid or 0,
                "groupid": self.pay.groupid or 0, "payment_hash": PAYMENT_HASH}
        self.settle([ours] + others, htlc_out, height)

    def settle(self, parts, htlc_out, height):
        outcome = judge_attempt(parts, self.pay.partid, htlc_out)
        before, after = self.step(lambda p: payer.reconcile(p, parts, htlc_out, height))
        if before.status not in PAY_OPEN:
            assert after is None
            return
        now = after or before
        if isinstance(outcome, InFlight):
            assert now.lost_since is None and now.status is before.status
        if not isinstance(outcome, Lost):
            return
        if before.lost_since is None:
            assert after.lost_since == height and after.status is before.status
        elif height > before.lost_since:
            assert after.status is PayState.FAILED and after.reason == payer.LOST_REASON
        else:
            assert after is None, "a lost attempt failed without a later block"

    @rule(partid=ids, groupid=ids)
    def restart(self, partid, groupid):
        if self.pay.status is not PayState.FAILED:
            try:
                payer.restart(self.pay, partid=partid, groupid=groupid)
            except AsynclnError as e:
                assert e.code == Code.PAYMENT_EXISTS
                return
            raise AssertionError(f"restarted a {self.pay.status.value} payment")
        _, after = self.step(lambda p: payer.restart(p, partid=partid, groupid=groupid))
        assert after.status is PayState.PENDING
        assert (after.partid, after.groupid) == (partid, groupid)
        assert (after.reason, after.lost_since, after.give_up_height) == (None, None, None)

    @invariant()
    def consistent(self):
        if not hasattr(self, "pay"):
            return
        pay = self.pay
        assert (pay.payment_preimage is not None) == (pay.status is PayState.COMPLETE)
        if pay.status is PayState.FAILED:
            assert pay.reason
        if pay.status is not PayState.PENDING and pay.status is not PayState.HELD:
            return
        try:
            payer.may_pay_again(pay)
        except AsynclnError as e:
            assert e.code == Code.PAYMENT_EXISTS
        else:
            raise AssertionError("an open payment may be paid again")


TestPayMachine = PayMachine.TestCase
TestPayMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)


# --- the fee cap ---------------------------------------------------------------------

policies = st.builds(Policy, fee_base_msat=st.integers(0, 5000), fee_ppm=st.integers(0, 20_000),
                     relay=st.booleans(), min_held_msat=st.integers(0, 200_000))


@given(amount=st.integers(1, 10**9), info=policies,
       maxfee=st.one_of(st.none(), st.integers(0, 10**7)),
       first_fees=st.lists(st.integers(0, 5000), min_size=0, max_size=3),
       second_fees=st.lists(st.integers(0, 5000), min_size=0, max_size=3),
       same_route=st.booleans(), height=st.integers(0, 10**6), budget=st.integers(0, 10**7))
@settings(max_examples=300, deadline=None)
def test_the_payer_never_sends_more_than_amount_plus_maxfee(amount, info, maxfee, first_fees,
                                                            second_fees, same_route, height,
                                                            budget):
    """As the shell does: price a first route, fix the amount, re-route, plan."""
    maxfee = payer.default_maxfee(amount) if maxfee is None else maxfee
    invoice = payer.Invoice("lnbcrt1", PAYMENT_HASH, "22" * 32, RECIPIENT, amount, 18)
    try:
        to_trampoline = payer.trampoline_amount(invoice, maxfee, sum(first_fees), info, budget)
    except AsynclnError as e:
        assert e.code == Code.MAXFEE_TOO_LOW
        assert info.fee(amount) + sum(first_fees) > maxfee
        return
    fees = first_fees if same_route else second_fees
    out = to_trampoline
    path = [{"short_channel_id_dir": "100x1x0/0", "node_id_out": TRAMPOLINE,
             "amount_out_msat": out, "cltv_out": 300}]
    for i, fee in enumerate(fees, 1):  # built backwards: each hop's node takes its fee
        out += fee
        path.insert(0, {"short_channel_id_dir": f"{100 + i}x1x0/0", "node_id_out": NODES[4 + i % 2],
                        "amount_out_msat": out, "cltv_out": 300 + 10 * i})
    try:
        hops, first_hop, _ = payer.plan(invoice, path, height, 30, maxfee_msat=maxfee)
    except AsynclnError as e:
        assert e.code == Code.MAXFEE_TOO_LOW and not same_route
        assert sum(fees) > sum(first_fees)
        return
    assert first_hop["amount_msat"] <= amount + maxfee
    record = TrampolineRecord.decode(find_record(bytes.fromhex(hops[-1]["payload"]))[1])
    assert record.amount_msat == amount
    assert to_trampoline - amount >= info.fee(amount)  # the trampoline's fee is covered


# --- choosing the trampoline ----------------------------------------------------------

@given(terms=st.dictionaries(st.sampled_from(NODES), policies, max_size=6),
       connected=st.sets(st.sampled_from(NODES)), destination=st.sampled_from(NODES),
       requested=st.one_of(st.none(), st.sampled_from(NODES)),
       amount=st.integers(1, 10**8), maxfee=st.integers(0, 20_000))
@settings(max_examples=500, deadline=None)
def test_choose_trampoline_returns_only_usable_peers(terms, connected, destination, requested,
                                                     amount, maxfee):
    suitable = {peer: info for peer, info in terms.items()
                if peer in connected and peer != destination and info.relay
                and info.min_held_msat <= amount}
    try:
        peer, info = payer.choose_trampoline(requested, destination, terms, connected,
                                             amount, maxfee)
    except AsynclnError as e:
        assert e.code in (Code.NO_TRAMPOLINE, Code.MAXFEE_TOO_LOW, Code.TRAMPOLINE_TERMS_UNKNOWN)
        if requested is None:
            assert all(i.fee(amount) > maxfee for i in suitable.values())
            assert (e.code == Code.MAXFEE_TOO_LOW) == bool(suitable)
        elif e.code == Code.TRAMPOLINE_TERMS_UNKNOWN:
            assert requested in connected and requested not in terms
        return
    assert info == terms[peer]
    assert peer != destination and info.relay and info.fee(amount) <= maxfee
    if requested is None:
        assert peer in suitable
        assert info.fee(amount) == min(i.fee(amount) for i in suitable.values())
    else:
        # A named trampoline we know the terms of may be reached through other peers.
        assert peer == requested
