"""The holding node's state machine: events in, actions out, no I/O.

One :class:`HeldPayment` per payment hash. The shell feeds it hook calls,
blocks, chain sync, peer arrivals, route answers, payment outcomes and the
failures of its own actions, then carries out the returned actions in
order. Money rules live here and are property-tested in
tests/test_hold_properties.py:

* an incoming HTLC is never failed while an outgoing attempt may succeed
  (FORWARDING -> FAILED is not in the transition table);
* a known preimage resolves the incoming HTLC in the same step;
* a held HTLC is failed back once the height reaches ``give_up_height``,
  which is never later than ``cltv_expiry - safety_blocks``;
* an outgoing attempt only starts with enough CLTV and fee margin, while
  lightningd is synced, and ``SendPay.max_height`` lets the shell re-check
  the height lightningd will use just before sending;
* an HTLC is named by what lightningd names it by: its channel and HTLC
  id (:attr:`Incoming.key`); every answer carries that name. A replay is
  recognised by the channel's id (which the shell resolves from
  lightningd's scid/alias mapping: a zero-conf channel's scid changes when
  it confirms or is spliced) and the HTLC id; amount, expiry and the onion's
  shared secret, which the payer chooses, only confirm it;
* a payment hash takes no new HTLC until the previous one's answer was
  delivered to lightningd (:meth:`Relay.answered`), not merely decided.

Each state change is emitted as :class:`Persist` *before* the action that
depends on it. An action the shell could not carry out comes back through
:meth:`Relay.action_failed`, and :meth:`Relay.reconcile` re-issues whatever
is still owed, so one failed RPC never strands a payment.
"""

import hashlib
import heapq
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple, Union, assert_never

from . import chain, failures
from .chain import HEIGHT_SLACK
from .errors import AsynclnError, Code
from .lightningd import Failed, InFlight, Lost, Outcome, Succeeded
from .policy import Policy
from .record import (RECORD_TYPE, FinalTlvs, HintHop, TrampolineRecord, find_record, restore,
                     without_defaults)
from .states import HOLD_MOVES, HOLD_OPEN, HoldState, move
from .wire import DecodeError

CANCELLED_BY_PAYER = "cancelled by payer"


def leg_refusal(policy: Policy, incoming: "Incoming", height: int, amt_to_forward: int,
                outgoing_cltv_delta: int, max_hold_blocks: Optional[int]) -> Optional["Reject"]:
    """#836's fee-or-expiry refusal when chain.check_leg says the HTLC is short, else None.

    One rule for every record version: admitted exactly when the give-up
    height (chain.give_up_height) is above ``height``, so at least one attempt
    keeps the route budget and the safety margin.
    """
    short = chain.check_leg(policy, incoming.amount_msat, incoming.cltv_expiry, height,
                            amt_to_forward, outgoing_cltv_delta, max_hold_blocks)
    if short is None:
        return None
    _, terms = short
    return Reject(failures.trampoline_fee_or_expiry_insufficient(
        terms["fee_base_msat"], terms["fee_proportional_millionths"], terms["cltv_expiry_delta"]),
        "the HTLC leaves too little fee or CLTV to hold and forward")


@dataclass(frozen=True)
class Incoming:
    """The HTLC offered to us, as the htlc_accepted hook reports it."""

    channel: str                         # scid or local alias, as lightningd named it last
    htlc_id: int
    amount_msat: int
    cltv_expiry: int
    peer: Optional[str] = None           # the channel's peer
    shared_secret: Optional[str] = None  # the onion's shared secret: chosen by the payer
    channel_id: Optional[str] = None     # lightningd's channel id: survives scid changes

    @property
    def key(self) -> str:
        """lightningd's name for this live HTLC: the answer to its hook call names it.

        No two live HTLCs share a channel and an HTLC id; the payer chooses
        nothing in it (a reused onion repeats the shared secret).
        """
        return f"{self.channel}/{self.htlc_id}"

    def same_htlc(self, other: "Incoming") -> bool:
        """True for a replay of this (stored) HTLC, even if its channel's scid changed.

        Identified by the channel (same name, or the same channel id that
        the shell resolved from lightningd's scid/alias mapping) and the HTLC
        id; what the payer chooses only confirms. A channel whose id is
        unknown (a record from before channel ids were stored, whose old
        scid lightningd no longer lists) falls back to its peer.
        """
        if self.htlc_id != other.htlc_id:
            return False
        if self.channel != other.channel:
            if self.channel_id is not None and other.channel_id is not None:
                if self.channel_id != other.channel_id:
                    return False
            elif self.peer is not None and self.peer != other.peer:
                return False  # a version 0.1 record knows no peer: as weak as it was
        confirmed = (self.amount_msat, self.cltv_expiry) == (other.amount_msat, other.cltv_expiry)
        if self.peer is not None and other.peer is not None:
            confirmed = confirmed and self.peer == other.peer
        if self.shared_secret is not None and other.shared_secret is not None:
            confirmed = confirmed and self.shared_secret == other.shared_secret
        return confirmed


@dataclass(frozen=True)
class HeldPayment:
    payment_hash: str
    incoming: Incoming
    record: TrampolineRecord
    hold_start: int
    give_up_height: int
    next_poll_height: int
    attempts: int = 0          # delivery tries, route searches included
    partid: int = 0            # sendpay partid of the latest outgoing attempt
    hops: int = 0              # its route's length: the erring_index of the node it ends at
    state: HoldState = HoldState.HELD
    last_error: Optional[str] = None
    preimage: Optional[str] = None
    failure_message: Optional[str] = None
    # Parts lightningd lists as pending with no HTLC behind them, judged lost
    # (CLN #3916): they never block a new attempt, which sendonion allows.
    lost_partids: Tuple[int, ...] = ()
    # The first hop's amount of the attempt last sent: what delivery cost us
    # (counters.fee_earned). None in records from before it was stored.
    sent_msat: Optional[int] = None
    # Unix times, for counters' wake-to-paid latency: when that attempt was sent
    # (the next node just seen reachable: it came online, or a poll found a
    # route), and when its preimage arrived. None in older records.
    woken_at: Optional[float] = None
    paid_at: Optional[float] = None
    # Whether lightningd waits on our hook answer for this HTLC: true until
    # the shell reports the answer delivered (Relay.answered), not merely
    # decided. Not persisted: after a restart only a replayed hook re-attaches it.
    attached: bool = field(default=True, compare=False)

    @property
    def payer(self) -> Optional[str]:
        return self.record.report_to

    def to_json(self) -> dict:
        """What the datastore keeps. Fields left at their default (None, empty) are left
        out: from_json puts the defaults back, and a restart of 100,000 parses less."""
        data = without_defaults(asdict(self))
        del data["attached"]
        data["incoming"] = without_defaults(data["incoming"])
        data["state"] = self.state.value
        data["record"] = self.record.to_json()  # its final_tlvs' bytes as hex
        return data

    @classmethod
    def from_json(cls, data: dict) -> "HeldPayment":
        data = dict(data)
        data.pop("payer", None)  # version 0.1 reported to the previous hop; no longer
        if "attached" in data:
            raise TypeError("attached is never stored")
        data["incoming"] = restore(Incoming, data["incoming"])
        data["record"] = TrampolineRecord.from_json(data["record"])
        data["state"] = HoldState(data["state"])
        if "lost_partids" in data:
            data["lost_partids"] = tuple(data["lost_partids"])
        data["attached"] = False
        return restore(cls, data)


# --- what the hook is told right away ------------------------------------

@dataclass(frozen=True)
class Continue:
    """Not ours: let lightningd (or the next plugin) handle the HTLC."""


@dataclass(frozen=True)
class Hold:
    """Keep the hook pending; a later ResolveIncoming/FailIncoming answers it."""


@dataclass(frozen=True)
class Reject:
    failure_message: str
    reason: str


Verdict = Union[Continue, Hold, Reject]


# --- actions for the shell ------------------------------------------------

@dataclass(frozen=True)
class Persist:
    held: HeldPayment

    @property
    def payment_hash(self) -> str:
        return self.held.payment_hash


@dataclass(frozen=True)
class Forget:
    payment_hash: str


@dataclass(frozen=True)
class FindRoute:
    payment_hash: str
    destination: str
    amount_msat: int
    final_cltv: int
    maxfee_msat: int
    maxdelay: int
    hints: Tuple[Tuple[HintHop, ...], ...] = ()  # the invoice's route hints, for a private recipient


@dataclass(frozen=True)
class SendPay:
    """Send attempt ``partid`` (``createonion`` + ``sendonion``, our own onion).

    ``max_height`` is the highest network height at which the outgoing expiry
    stays <= ``cltv_expiry - safety``; the shell sends only while lightningd
    is at bitcoind's tip and its height + 1 is at most that.
    ``lost_partids``: pending parts judged lost, which must not be adopted.
    ``give_up_height``: no attempt starts at or after it, whatever height the
    relay saw when it planned this one (a block may arrive meanwhile).
    """

    payment_hash: str
    partid: int
    route: Tuple[dict, ...]
    payment_secret: str
    total_msat: int
    max_height: int
    onion: Optional[str] = None  # version 2: the next holder's asyncln onion (hex), not a recipient
    final_tlvs: FinalTlvs = ()   # odd TLVs for the recipient's payload (not for a next holder)
    lost_partids: Tuple[int, ...] = ()
    give_up_height: Optional[int] = None


@dataclass(frozen=True)
class CheckAttempt:
    """Ask lightningd what became of attempt ``partid`` (restart, reconcile, sendpay error)."""

    payment_hash: str
    partid: int


@dataclass(frozen=True)
class ResolveIncoming:
    payment_hash: str
    preimage: str
    htlc: Optional[str] = None  # Incoming.key: which waiting hook request this answers


@dataclass(frozen=True)
class FailIncoming:
    payment_hash: str
    failure_message: str
    reason: str
    htlc: Optional[str] = None


@dataclass(frozen=True)
class NotifyPayer:
    payer: str
    payment_hash: str
    state: HoldState
    give_up_height: int
    next_poll_height: int
    attempts: int
    reason: str


Action = Union[Persist, Forget, FindRoute, SendPay, CheckAttempt,
               ResolveIncoming, FailIncoming, NotifyPayer]

TERMINAL = (HoldState.COMPLETE, HoldState.FAILED)
GAVE_UP = "recipient stayed offline until the hold deadline"
LOST = "lightningd kept the attempt pending with no HTLC behind it"
ROUTE_TOO_DEAR = "route fees exceed what the incoming HTLC leaves after our fee"


class Relay:
    """All payments this node holds for others."""

    def __init__(self, policy: Policy, height: int, held: Iterable[HeldPayment] = (),
                 synced: bool = True, accept_new: bool = True,
                 clock: Callable[[], float] = time.time):
        self.policy = policy
        self.clock = clock            # only stamps records for counters; decides nothing
        self.height = height
        self.synced = synced          # lightningd reports it is caught up with bitcoind
        self.accept_new = accept_new  # False when the operator's options were refused
        self.held: Dict[str, HeldPayment] = {}
        self.unsaved: Set[str] = set()      # a Persist failed: write again on reconcile
        self.forwarding: Set[str] = set()
        self.owed: Set[str] = set()         # settled, answer not yet delivered to lightningd
        self.searching: Set[str] = set()    # a FindRoute is out
        # (next node, route hints) -> the one payment searching for it, and the ones waiting
        self.probes: Dict[tuple, str] = {}
        self.followers: Dict[tuple, Set[str]] = defaultdict(set)
        self.lost_since: Dict[Tuple[str, int], int] = {}  # (hash, partid) first judged Lost
        self.unsent: Set[Tuple[str, int]] = set()  # attempts planned, not yet handed to sendpay
        self.by_node: Dict[str, Set[str]] = defaultdict(set)
        self.active_count = 0
        self.active_msat = 0
        self.peer_count: Dict[Optional[str], int] = defaultdict(int)
        self.peer_msat: Dict[Optional[str], int] = defaultdict(int)
        self._due: List[Tuple[int, str]] = []
        # (give-up height, hash) of HELD payments: a slice fails these back before it
        # wakes anything else. Both heaps keep stale entries, skipped when popped.
        self._deadlines: List[Tuple[int, str]] = []
        self._woken: Set[str] = set()       # woken at self._woken_at: not again at that height
        self._woken_at = height
        for h in held:
            self._put(h)

    # --- events -----------------------------------------------------------

    def htlc_accepted(self, payment_hash: str, incoming: Incoming, payload: bytes,
                      forward_msat: int, outgoing_cltv: int, tip_height: Optional[int] = None,
                      refusal: Optional[Reject] = None) -> Tuple[Verdict, List[Action]]:
        """A (possibly replayed) htlc_accepted hook call.

        ``tip_height`` is lightningd's height when it called the hook
        (``cltv_expiry - cltv_expiry_relative``).
        """
        try:
            found = find_record(payload)
        except DecodeError as e:
            return Reject(failures.invalid_onion_payload(e.tlv_type, e.offset),
                          f"malformed onion payload: {e}"), []
        if found is None:
            return Continue(), []
        offset, raw = found
        try:
            record = TrampolineRecord.decode(raw)
        except DecodeError as e:
            return Reject(failures.invalid_onion_payload(RECORD_TYPE, offset),
                          f"malformed asyncln record: {e}"), []
        return self.admit(payment_hash, incoming, record, offset, forward_msat, outgoing_cltv,
                          tip_height, refusal)

    def admit(self, payment_hash: str, incoming: Incoming, record: TrampolineRecord, offset: int,
              forward_msat: int, outgoing_cltv: int, tip_height: Optional[int] = None,
              refusal: Optional[Reject] = None) -> Tuple[Verdict, List[Action]]:
        """An HTLC whose record is read: the clear one (version 1), or one the shell peeled
        from the asyncln onion (version 2). ``offset`` names it in a refusal.

        ``refusal`` is the shell's verdict on a new HTLC (too little fee or
        CLTV for the layer, clear records refused). A replay is answered as
        before whatever it says: the height has moved on since, and an
        attempt may be in flight or the preimage known.
        """
        replay = self.replay(payment_hash, incoming, tip_height)
        if replay is not None:
            return replay
        existing = self.held.get(payment_hash)
        if refusal is not None:
            return refusal, []
        if not self.policy.relay:
            return Continue(), []
        if existing is not None and (existing.state != HoldState.FAILED or existing.attached):
            # A completed record must outlive its HTLC: lightningd may replay
            # that HTLC after a restart and must get the preimage again. A
            # failed one is replaced only once its answer was delivered.
            return Reject(failures.temporary_node_failure(),
                          f"another HTLC with this payment hash is already {existing.state.value}"), []
        rejection = self._admission_error(incoming, record, offset, forward_msat, outgoing_cltv)
        if rejection is not None:
            return rejection, []

        held = HeldPayment(
            payment_hash=payment_hash, incoming=incoming, record=record,
            hold_start=self.height,
            give_up_height=chain.give_up_height(self.policy, incoming.cltv_expiry, self.height,
                                                record.final_cltv_delta, record.max_hold_blocks),
            next_poll_height=self.height)
        self._put(held)
        return Hold(), [Persist(held)] + self._try(held)

    def replay(self, payment_hash: str, incoming: Incoming, tip_height: Optional[int] = None
               ) -> Optional[Tuple[Verdict, List[Action]]]:
        """A replayed HTLC answered as before, from what lightningd says of it alone: the
        shell asks this before it parses or peels anything. None: not a replay."""
        if tip_height is not None:
            self.height = max(self.height, tip_height)
        existing = self.replayed(payment_hash, incoming)
        if existing is None:
            return None
        return self._reattach(existing, incoming)

    def replayed(self, payment_hash: str, incoming: Incoming) -> Optional[HeldPayment]:
        """Our record for this very HTLC: lightningd replays it after a restart (the
        record is not attached), or the shell retries a hook call it could not finish
        (attached under the same key: no two live HTLCs share one)."""
        existing = self.held.get(payment_hash)
        if existing is None or not existing.incoming.same_htlc(incoming):
            return None
        if existing.attached and existing.incoming.key != incoming.key:
            return None
        return existing

    def chain(self, height: int, synced: bool, limit: Optional[int] = None) -> List[Action]:
        """lightningd's height and whether it has reached bitcoind's tip (node.synced)."""
        if synced and not self.synced:
            # What waited for the sync is due now, not a block later.
            self._woken.clear()
            for names in list(self.by_node.values()):
                for payment_hash in names:
                    wake = self._wake_height(self.held[payment_hash])
                    if wake is not None:
                        heapq.heappush(self._due, (wake, payment_hash))
        self.synced = synced
        return self.block(height, limit)

    def block(self, height: int, limit: Optional[int] = None) -> List[Action]:
        """A new height: wake what is due by now, at most ``limit`` payments (all if None).

        The cost is in what is due, not in what is held. What a limit leaves
        is still due (:meth:`has_due`) and :meth:`due_slice` wakes it later:
        the shell releases its lock between slices, so a poll round that
        makes every held payment due never holds it for long.
        """
        self.height = max(self.height, height)
        return self.due_slice(limit)

    def has_due(self) -> bool:
        """Some payment is due at the current height and not woken yet (or a stale entry
        waits to be skipped)."""
        return any(heap and heap[0][0] <= self.height for heap in (self._deadlines, self._due))

    def due_slice(self, limit: Optional[int] = None) -> List[Action]:
        """Wake up to ``limit`` due payments (all if None): every fail-back due first,
        then the rest by wake height. Each due payment is woken once per height,
        whatever the slicing."""
        if self._woken_at != self.height:
            # Not in block(): a hook's tip_height (replay) may have raised the height first.
            self._woken.clear()
            self._woken_at = self.height
        actions: List[Action] = []
        woken: List[str] = []
        budget = limit if limit is not None else -1
        while budget != 0 and self._deadlines and self._deadlines[0][0] <= self.height:
            budget -= 1
            _, payment_hash = heapq.heappop(self._deadlines)
            held = self.held.get(payment_hash)
            if (held is not None and held.state == HoldState.HELD
                    and self.height >= held.give_up_height):
                self._woken.add(payment_hash)
                woken.append(payment_hash)
                actions += self._wake(held)  # fails it back: its give-up height has come
        while budget != 0 and self._due and self._due[0][0] <= self.height:
            budget -= 1
            _, payment_hash = heapq.heappop(self._due)
            held = self.held.get(payment_hash)
            if payment_hash in self._woken or held is None:
                continue
            wake = self._wake_height(held)
            if wake is None or wake > self.height:
                continue  # a stale entry: the record's current one is queued too
            self._woken.add(payment_hash)
            woken.append(payment_hash)
            actions += self._wake(held)
        for payment_hash in woken:
            held = self.held.get(payment_hash)
            wake = held and self._wake_height(held)
            if wake is not None:
                heapq.heappush(self._due, (max(wake, self.height + 1), payment_hash))
        return actions

    def peer_online(self, node_id: str) -> List[Action]:
        actions: List[Action] = []
        for payment_hash in sorted(self.by_node.get(node_id, ())):
            held = self.held[payment_hash]
            if held.state == HoldState.HELD:
                actions += self._try(held)
        return actions

    def poll(self, payment_hash: Optional[str] = None) -> List[Action]:
        """Operator asks for an immediate re-try of one or all held payments."""
        targets = [self._get(payment_hash)] if payment_hash else list(self.held.values())
        actions: List[Action] = []
        for held in targets:
            if held.state == HoldState.HELD:
                actions += self._try(held)
        return actions

    def cancel(self, payment_hash: str, reason: str = "cancelled by the holding node's operator"
               ) -> List[Action]:
        held = self._get(payment_hash)
        if held.state == HoldState.FORWARDING:
            raise AsynclnError("an outgoing attempt is in flight; it must end first",
                               Code.ATTEMPT_IN_FLIGHT)
        if held.state in TERMINAL:
            raise AsynclnError(f"payment is already {held.state.value}", Code.ALREADY_RESOLVED)
        return self._fail(held, reason)

    def payer_cancel(self, payment_hash: str, peer: str) -> List[Action]:
        """The payer asks to fail its HTLC back; only the payer that opted in for reports may.

        The same rules as the operator's cancel: never while an attempt may still succeed.
        """
        held = self.held.get(payment_hash)
        if held is None or held.payer != peer:
            raise AsynclnError("no payment held here for this payer with that hash",
                               Code.UNKNOWN_PAYMENT)
        return self.cancel(payment_hash, CANCELLED_BY_PAYER)

    def route_found(self, payment_hash: str, route: List[dict]) -> List[Action]:
        if payment_hash not in self.searching:
            return []  # an answer nobody waits for (a restart came between)
        actions = self._end_search(payment_hash, None)
        held = self.held.get(payment_hash)
        if held is None or not self._may_start(held):
            return actions
        problem = self._route_problem(held, route)
        if problem == ROUTE_TOO_DEAR:
            # The next node is reachable, only dearer than the payer planned: holding on
            # cannot help, the payer can (it retries with these terms, within its cap).
            route_fee = route[0]["amount_msat"] - held.record.amount_msat
            terms = chain.refusal_terms(self.policy, held.record.max_hold_blocks, route_fee)
            return actions + self._fail(held, f"{problem}: the route costs {route_fee}msat",
                                        failures.trampoline_fee_or_expiry_insufficient(
                                            terms["fee_base_msat"],
                                            terms["fee_proportional_millionths"],
                                            terms["cltv_expiry_delta"]))
        if problem is not None:
            return actions + self._attempt_failed(held, problem)
        route = self._with_spare_blocks(held, route)
        held = self._put(held, state=HoldState.FORWARDING, last_error=None, partid=held.partid + 1,
                         hops=len(route), sent_msat=route[0]["amount_msat"],
                         woken_at=self.clock())
        self.unsent.add((payment_hash, held.partid))
        max_height = (held.incoming.cltv_expiry - self.policy.safety_blocks
                      - route[0]["delay"] - 1)
        return actions + [Persist(held),
                          SendPay(payment_hash, held.partid, tuple(route),
                                  held.record.payment_secret, held.record.total_msat,
                                  max_height, held.record.next_onion, held.record.final_tlvs,
                                  held.lost_partids, held.give_up_height)]

    def route_failed(self, payment_hash: str, error: str,
                     unknown_node: Optional[str] = None) -> List[Action]:
        """No route this time. ``unknown_node``: the node searched for, found in neither
        gossip nor our peers. A next *holder* (version 2) still unknown at a later poll
        is #836's unknown_next_trampoline, failed back then: a first unknown answer may
        only mean gossip is still loading. The verdict counts only for the search that
        gave it: the record may name another next holder by now."""
        if payment_hash not in self.searching:
            return []
        actions = self._end_search(payment_hash, error)
        held = self.held.get(payment_hash)
        if held is None or held.state != HoldState.HELD:
            return actions
        if (unknown_node == held.record.next_node and held.record.next_onion is not None
                and held.attempts >= 2):
            return actions + self._fail(held, f"unknown next holder: {error}",
                                        failures.unknown_next_trampoline())
        return actions + self._attempt_failed(held, f"no route: {error}")

    def send_refused(self, payment_hash: str, partid: int, reason: str,
                     used_partid: int = 0) -> List[Action]:
        """The shell did not send attempt ``partid``: lightningd's height or sync forbade it,
        or lightningd already has a part numbered up to ``used_partid`` for this hash (a
        forgotten record's), so the next attempt numbers past it."""
        held = self.held.get(payment_hash)
        if held is None or held.state != HoldState.FORWARDING or held.partid != partid:
            return []
        self.unsent.discard((payment_hash, partid))
        held = self._put(held, state=HoldState.HELD, last_error=reason,
                         next_poll_height=self.height + 1, partid=max(partid, used_partid))
        if self.height >= held.give_up_height:
            return self._fail(held, GAVE_UP)
        if used_partid >= partid:
            # Only the number was taken (a payer's retry of a hash we tried before):
            # the next attempt numbers past it, now rather than a block later.
            return [Persist(held)] + self._try(held)
        return [Persist(held)]

    def adopt_attempt(self, payment_hash: str, partid: int, pending_partid: int) -> List[Action]:
        """lightningd already has part ``pending_partid`` pending for this hash (a record
        older than ours, or a restart): that part is our attempt now, never a second one."""
        held = self.held.get(payment_hash)
        if held is None or held.state != HoldState.FORWARDING or held.partid != partid:
            return []
        held = self._put(held, partid=pending_partid)
        return [Persist(held), CheckAttempt(payment_hash, pending_partid)]

    def attempt_failed(self, payment_hash: str, partid: Optional[int], error: str,
                       refused_by: Optional[str] = None,
                       holder_failure: Optional[Tuple[int, str]] = None) -> List[Action]:
        """Outgoing attempt ``partid`` ended without a preimage.

        A failure of any other attempt is stale and changes nothing.
        ``refused_by`` names the node that sent a permanent failure; when that
        is the recipient itself (say, an unknown payment secret), waiting for
        it to come back cannot help, so the HTLC is failed back at once.
        (For a ``sendonion`` attempt, whose failures name no node, the shell
        names the route's destination when the last hop failed: onion_failure.)
        ``holder_failure`` is (erring_index, failure message) of a trampoline
        failure (bolts #836): when it comes from the next holder itself (the
        end of the route) it gave up, or wants more fee or CLTV, and we pass
        it upstream at once, as #836's trampolines do: holding on could not do
        better. From any other node it is an ordinary failure.
        """
        held = self.held.get(payment_hash)
        if held is None or held.state != HoldState.FORWARDING or (partid or 0) != held.partid:
            return []
        self.lost_since.pop((payment_hash, held.partid), None)
        if (holder_failure is not None and held.record.next_onion is not None
                and holder_failure[0] == held.hops):
            held = self._put(held, state=HoldState.HELD)
            return self._fail(held, error, holder_failure[1])
        if refused_by == held.record.next_node:
            held = self._put(held, state=HoldState.HELD)
            return self._fail(held, f"recipient refused the payment: {error}")
        return self._attempt_failed(held, error)

    def attempt_succeeded(self, payment_hash: str, preimage: str) -> List[Action]:
        """A preimage from any attempt: proof of payment, so resolve now."""
        held = self.held.get(payment_hash)
        if held is None or held.state in TERMINAL:
            return []
        if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != payment_hash:
            return []
        self.lost_since.pop((payment_hash, held.partid), None)
        held = self._put(held, state=HoldState.COMPLETE, preimage=preimage, last_error=None,
                         paid_at=self.clock())
        return [Persist(held)] + self._answer(held)

    def attempt_checked(self, payment_hash: str, partid: int, outcome: Outcome) -> List[Action]:
        """lightningd's records judged (see lightningd.judge_attempt)."""
        match outcome:
            case Succeeded(preimage=preimage):
                return self.attempt_succeeded(payment_hash, preimage)
            case Failed(reason=reason, refused_by=refused_by, holder_failure=holder_failure):
                return self.attempt_failed(payment_hash, partid, reason, refused_by, holder_failure)
            case InFlight():
                self.lost_since.pop((payment_hash, partid), None)
                return []
            case Lost():
                if not self.may_be_in_flight(payment_hash, partid):
                    return []  # a verdict on an attempt that already ended
                # Only two blocks after it was first seen lost: lightningd lists a part's
                # HTLC only once channeld took the offer, which can take up to 30 s (an
                # unresponsive peer), and the first check may come right after the send.
                first = self.lost_since.setdefault((payment_hash, partid), self.height)
                if self.height > first + 1:
                    held = self.held[payment_hash]
                    self._put(held, lost_partids=tuple(sorted({*held.lost_partids, partid})))
                    return self.attempt_failed(payment_hash, partid, LOST)
                return []
            case _:
                assert_never(outcome)

    def may_be_in_flight(self, payment_hash: str, partid: int) -> bool:
        held = self.held.get(payment_hash)
        return held is not None and held.state == HoldState.FORWARDING and held.partid == partid

    def may_send(self, payment_hash: str, partid: int) -> bool:
        """The shell asks just before ``sendpay``: is attempt ``partid`` still the one to send?

        A yes commits: from then on the attempt may be in flight, whatever fails later.
        """
        if (payment_hash, partid) not in self.unsent:
            return False
        self.unsent.discard((payment_hash, partid))
        return self.may_be_in_flight(payment_hash, partid)

    def answered(self, payment_hash: str, key: str) -> None:
        """The shell delivered the answer for HTLC ``key`` (or lightningd no longer waits
        on it here): only now may another HTLC take this payment hash."""
        held = self.held.get(payment_hash)
        if held is not None and held.attached and held.incoming.key == key \
                and held.state in TERMINAL:
            self._put(held, attached=False)

    def action_failed(self, action: Action, error: str) -> List[Action]:
        """The shell could not carry out ``action``: stay correct, and say what to do instead."""
        match action:
            case Persist(held=held):
                self.unsaved.add(held.payment_hash)
                current = self.held.get(held.payment_hash)
                unsent = (held.payment_hash, held.partid)
                if (current is not None and current.state == HoldState.FORWARDING
                        and held.state == HoldState.FORWARDING and current.partid == held.partid
                        and unsent in self.unsent):
                    # Never send an attempt a restart would not know about;
                    # one already handed to sendpay stays in flight whatever fails.
                    self.unsent.discard(unsent)
                    current = self._put(current, state=HoldState.HELD,
                                        next_poll_height=self.height + 1,
                                        last_error=f"could not save the attempt: {error}")
                    if self.height >= current.give_up_height:
                        return self._fail(current, GAVE_UP)
                return []
            case Forget():
                return []  # the record reloads after a restart and is forgotten again
            case FindRoute(payment_hash=payment_hash):
                return self.route_failed(payment_hash, f"route search failed: {error}")
            case SendPay(payment_hash=payment_hash, partid=partid):
                return [CheckAttempt(payment_hash, partid)]
            case CheckAttempt():
                return []  # still forwarding; reconcile asks again
            case ResolveIncoming() | FailIncoming():
                return []  # still attached, so still owed: reconcile answers again
            case NotifyPayer():
                return []  # informative only
            case _:
                assert_never(action)

    def reconcile(self) -> List[Action]:
        """Re-issue what is owed: unsaved records, undelivered answers, unsettled attempts.

        An answer is owed until the shell reports it delivered, whatever
        became of the action that carried it; the shell answers a request
        once and ignores the rest.
        """
        actions: List[Action] = []
        for payment_hash in sorted(self.unsaved):
            if payment_hash in self.held:
                actions.append(Persist(self.held[payment_hash]))
        self.unsaved.clear()
        for payment_hash in sorted(self.owed):
            actions += self._answer(self.held[payment_hash])
        for payment_hash in sorted(self.forwarding):
            actions.append(CheckAttempt(payment_hash, self.held[payment_hash].partid))
        return actions

    # --- internals --------------------------------------------------------

    def _get(self, payment_hash: str) -> HeldPayment:
        try:
            return self.held[payment_hash]
        except KeyError:
            raise AsynclnError(f"no held payment with hash {payment_hash}", Code.UNKNOWN_PAYMENT)

    def _put(self, held: HeldPayment, **changes) -> HeldPayment:
        """Store ``held`` with ``changes``: the one place states move and running totals change."""
        old = self.held.get(held.payment_hash)
        if changes:
            if "state" in changes:
                move(HOLD_MOVES, held.state, changes["state"])
            held = _changed(held, changes)
        if (old is None or old.state != held.state or old.incoming is not held.incoming
                or old.record is not held.record):  # else what _count reads is unchanged
            if old is not None:
                self._count(old, -1)
            self._count(held, +1)
        self.held[held.payment_hash] = held
        owed = held.state in TERMINAL and held.attached
        (self.owed.add if owed else self.owed.discard)(held.payment_hash)
        wake = self._wake_height(held)
        if wake is not None and (old is None or wake != self._wake_height(old)
                                 or old.state != held.state):
            heapq.heappush(self._due, (wake, held.payment_hash))
        if held.state == HoldState.HELD and (old is None or old.state != HoldState.HELD
                                             or old.give_up_height != held.give_up_height):
            heapq.heappush(self._deadlines, (held.give_up_height, held.payment_hash))
        return held

    def _count(self, held: HeldPayment, sign: int) -> None:
        payment_hash, node = held.payment_hash, held.record.next_node
        if held.state in HOLD_OPEN:
            peer = held.incoming.peer
            self.active_count += sign
            self.active_msat += sign * held.incoming.amount_msat
            self.peer_count[peer] += sign
            self.peer_msat[peer] += sign * held.incoming.amount_msat
            if sign > 0:
                self.by_node[node].add(payment_hash)
            else:
                self.by_node[node].discard(payment_hash)
                if not self.by_node[node]:
                    del self.by_node[node]
        if held.state == HoldState.FORWARDING:
            (self.forwarding.add if sign > 0 else self.forwarding.discard)(payment_hash)

    def _forget(self, held: HeldPayment) -> List[Action]:
        self._count(held, -1)
        del self.held[held.payment_hash]
        self.unsaved.discard(held.payment_hash)
        self.owed.discard(held.payment_hash)
        # A probe forgotten before its answer must not leave its node's followers waiting.
        followers = self._end_search(held.payment_hash, "the probing payment was forgotten")
        return [Forget(held.payment_hash)] + followers

    def _wake_height(self, held: HeldPayment) -> Optional[int]:
        if held.state in TERMINAL:
            return held.incoming.cltv_expiry + 1  # forget once lightningd cannot replay it
        if held.state == HoldState.FORWARDING:
            return None  # the attempt's outcome, or reconcile, moves it on
        if not held.attached:
            return held.give_up_height
        return min(held.next_poll_height, held.give_up_height)

    def _wake(self, held: HeldPayment) -> List[Action]:
        if held.state in TERMINAL:
            if held.attached:
                return []  # its answer is still owed: keep it until reconcile delivers it
            return self._forget(held)
        if self.height >= held.give_up_height:
            return self._fail(held, GAVE_UP)
        return self._try(held)

    def _admission_error(self, incoming: Incoming, record: TrampolineRecord, offset: int,
                         forward_msat: int, outgoing_cltv: int) -> Optional[Reject]:
        """O(1): running totals, never a sum over what is held."""
        policy = self.policy
        if incoming.amount_msat < forward_msat:
            return Reject(failures.final_incorrect_htlc_amount(incoming.amount_msat),
                          "HTLC carries less than the onion says")
        if incoming.cltv_expiry < outgoing_cltv:
            return Reject(failures.final_incorrect_cltv_expiry(incoming.cltv_expiry),
                          "HTLC expiry is below the onion's outgoing_cltv_value")
        if record.total_msat != record.amount_msat:
            return Reject(failures.invalid_onion_payload(RECORD_TYPE, offset),
                          "multi-part payments (total_msat above amount_msat) are not supported")
        temporary = failures.temporary_node_failure()
        if not self.accept_new:
            return Reject(temporary, "not accepting new holds: the node's asyncln options were refused")
        if not self.synced:
            return Reject(temporary, "lightningd is still catching up with the chain")
        short = leg_refusal(policy, incoming, self.height, record.amount_msat,
                            record.final_cltv_delta, record.max_hold_blocks)
        if short is not None:
            return short
        if record.amount_msat < policy.min_held_msat:
            return Reject(temporary, "amount below asyncln-min-held-msat")
        if self.active_count >= policy.max_held:
            return Reject(temporary, "asyncln-max-held reached")
        if self.active_msat + incoming.amount_msat > policy.max_held_msat:
            return Reject(temporary, "asyncln-max-held-msat reached")
        if self.peer_count[incoming.peer] >= policy.max_held_per_peer:
            return Reject(temporary, "asyncln-max-held-per-peer reached for this peer")
        if self.peer_msat[incoming.peer] + incoming.amount_msat > policy.max_held_msat_per_peer:
            return Reject(temporary, "asyncln-max-held-msat-per-peer reached for this peer")
        return None

    def _reattach(self, held: HeldPayment, incoming: Incoming) -> Tuple[Verdict, List[Action]]:
        """lightningd replayed the hook (restart): answer exactly as before.

        The record takes the replay's identity (its scid, and the peer and
        shared secret a v0.1 record lacks, the channel id an older one lacks):
        the answer must name the HTLC the shell now waits on.
        """
        known = held.incoming
        incoming = replace(incoming, peer=incoming.peer or known.peer,
                           shared_secret=incoming.shared_secret or known.shared_secret,
                           channel_id=incoming.channel_id or known.channel_id)
        upgraded = (known.shared_secret, known.channel_id) != (incoming.shared_secret,
                                                              incoming.channel_id)
        held = self._put(held, attached=True, incoming=incoming)
        owed: List[Action] = [Persist(held)] if upgraded else []
        verdict, actions = self._resume(held)
        return verdict, owed + actions

    def _resume(self, held: HeldPayment) -> Tuple[Verdict, List[Action]]:
        match held.state:
            case HoldState.COMPLETE | HoldState.FAILED:
                return Hold(), self._answer(held)
            case HoldState.FORWARDING:
                return Hold(), [CheckAttempt(held.payment_hash, held.partid)]
            case HoldState.HELD:
                if self.height >= held.give_up_height:
                    return Hold(), self._fail(held, GAVE_UP)
                return Hold(), self._try(held)
            case _:
                assert_never(held.state)

    def _answer(self, held: HeldPayment) -> List[Action]:
        """The answer lightningd waits for, naming its HTLC; owed until :meth:`answered`."""
        if not held.attached:
            return []
        if held.state == HoldState.COMPLETE:
            return [ResolveIncoming(held.payment_hash, held.preimage, held.incoming.key)]
        return [FailIncoming(held.payment_hash, held.failure_message,
                             held.last_error or "failed before restart", held.incoming.key)]

    def _may_start(self, held: HeldPayment) -> bool:
        return (held.state == HoldState.HELD and held.attached and self.synced
                and self.height < held.give_up_height)

    def _try(self, held: HeldPayment) -> List[Action]:
        """One delivery try; while another payment searches for the same node, follow it."""
        if not self._may_start(held) or held.payment_hash in self.searching:
            return []
        key = (held.record.next_node, held.record.route_hints)
        held = self._put(held, attempts=held.attempts + 1,
                         next_poll_height=self.height + self.policy.poll_blocks)
        self.searching.add(held.payment_hash)
        if key in self.probes:
            self.followers[key].add(held.payment_hash)
            return []
        self.probes[key] = held.payment_hash
        return [self._find_route(held)]

    def _find_route(self, held: HeldPayment) -> FindRoute:
        record = held.record
        budget = held.incoming.amount_msat - record.amount_msat - self.policy.fee(record.amount_msat)
        return FindRoute(held.payment_hash, record.next_node, record.amount_msat,
                         record.final_cltv_delta, maxfee_msat=budget,
                         maxdelay=self._max_route_delay(held), hints=record.route_hints)

    def _end_search(self, payment_hash: str, error: Optional[str]) -> List[Action]:
        """A search ended; if it was a probe, its followers go now or fail with it.

        A follower shares a failure only if its own search could not do
        better: a payer must not make other payments fail by probing with a
        search that is bound to fail (too little fee, too little CLTV).
        """
        self.searching.discard(payment_hash)
        key = next((k for k, probe in self.probes.items() if probe == payment_hash), None)
        if key is None:
            return []
        del self.probes[key]
        probe = self.held.get(payment_hash)
        bound = self._find_route(probe) if probe is not None else None
        actions: List[Action] = []
        for follower in sorted(self.followers.pop(key, ())):
            held = self.held.get(follower)
            if held is None or not self._may_start(held):
                self.searching.discard(follower)
                continue
            own = self._find_route(held)
            if error is None or bound is None or not _no_easier(own, bound):
                actions.append(own)  # each finds its own route
            else:
                self.searching.discard(follower)
                actions += self._attempt_failed(held, f"no route: {error}")
        return actions

    def _max_route_delay(self, held: HeldPayment) -> int:
        return (held.incoming.cltv_expiry - self.policy.safety_blocks
                - self.height - HEIGHT_SLACK)

    def _route_problem(self, held: HeldPayment, route: List[dict]) -> Optional[str]:
        if not route:
            return "empty route"
        record = held.record
        first, last = route[0], route[-1]
        if last["id"] != record.next_node or last["amount_msat"] != record.amount_msat:
            return "route does not end at the recipient with the requested amount"
        if last["delay"] < record.final_cltv_delta:
            return "route gives the recipient less than its final CLTV"
        if first["delay"] > self._max_route_delay(held):
            return f"route needs {first['delay']} blocks of CLTV, only {self._max_route_delay(held)} left"
        if held.incoming.amount_msat - first["amount_msat"] < self.policy.fee(record.amount_msat):
            return ROUTE_TOO_DEAR
        return None

    def _with_spare_blocks(self, held: HeldPayment, route: List[dict]) -> List[dict]:
        """The route with up to ``spare_blocks`` more CLTV at every hop, as a payer's shadow
        blocks: the next node gets them above its final CLTV, each hop keeps its own delta,
        and the first hop's delay stays within ``_max_route_delay``."""
        spare = max(0, min(self.policy.spare_blocks,
                           self._max_route_delay(held) - route[0]["delay"]))
        return [{**hop, "delay": hop["delay"] + spare} for hop in route]

    def _attempt_failed(self, held: HeldPayment, error: str) -> List[Action]:
        was = held.state
        held = self._put(held, state=HoldState.HELD, last_error=error,
                         next_poll_height=max(held.next_poll_height, self.height + 1))
        if not held.record.please_poll or self.height >= held.give_up_height:
            return self._fail(held, f"recipient unreachable: {error}")
        actions: List[Action] = []
        if was == HoldState.FORWARDING:
            actions.append(Persist(held))  # a restart must not re-check a finished attempt
        if held.payer and (held.attempts == 1 or was == HoldState.FORWARDING):
            actions.append(self._notify(held, error))
        return actions

    def _notify(self, held: HeldPayment, reason: str) -> NotifyPayer:
        return NotifyPayer(held.payer, held.payment_hash, held.state, held.give_up_height,
                           held.next_poll_height, held.attempts, reason)

    def _fail(self, held: HeldPayment, reason: str,
              failure_message: Optional[str] = None) -> List[Action]:
        """Fail the HTLC back: by default #836's temporary_trampoline_failure (we held, we gave up)."""
        held = self._put(held, state=HoldState.FAILED, last_error=reason,
                         failure_message=failure_message or failures.temporary_trampoline_failure())
        actions: List[Action] = [Persist(held)]
        if held.payer:
            actions.append(self._notify(held, reason))
        return actions + self._answer(held)


_HELD_FIELDS = frozenset(HeldPayment.__dataclass_fields__)


def _changed(held: HeldPayment, changes: dict) -> HeldPayment:
    """dataclasses.replace(held, **changes) without re-running __init__ (HeldPayment has no
    checks in it): every event replaces a record, admission twice (bench/bench_core.py)."""
    if not changes.keys() <= _HELD_FIELDS:
        raise TypeError(f"HeldPayment has no field {sorted(changes.keys() - _HELD_FIELDS)}")
    new = object.__new__(HeldPayment)
    new.__dict__.update(held.__dict__)
    new.__dict__.update(changes)
    return new


def _no_easier(search: FindRoute, failed: FindRoute) -> bool:
    """``search`` asks at least as much as a search that failed: it would fail too."""
    return (search.amount_msat >= failed.amount_msat and search.final_cltv >= failed.final_cltv
            and search.maxfee_msat <= failed.maxfee_msat and search.maxdelay <= failed.maxdelay)
