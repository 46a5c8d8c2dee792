"""The holding node's state machine: events in, actions out, no I/O.

One :class:`HeldPayment` per payment hash. The shell (plugin.py) feeds it
hook calls, blocks, peer arrivals, route answers and payment outcomes, then
carries out the returned actions in order. Money rules live here and are
property-tested in tests/test_hold_properties.py:

* an incoming HTLC is never failed while an outgoing attempt is in flight;
* a known preimage resolves the incoming HTLC in the same step;
* a held HTLC is failed back once the height reaches ``give_up_height``,
  which is never later than ``cltv_expiry - safety_blocks``;
* an outgoing attempt only starts with enough CLTV and fee margin.

Every state change is emitted as :class:`Persist` *before* the action that
depends on it, so a crash between the two leaves a record that errs safe.
"""

import hashlib
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Tuple, Union

from . import failures
from .policy import Policy
from .record import RECORD_TYPE, TrampolineRecord, find_record
from .wire import DecodeError

HELD = "held"
FORWARDING = "forwarding"
COMPLETE = "complete"
FAILED = "failed"
TERMINAL = (COMPLETE, FAILED)

# lightningd sets an outgoing HTLC's expiry from (its block height + 1), and
# it may have processed a block whose notification we have not seen yet: our
# CLTV checks assume the expiry base is two blocks above our height.
HEIGHT_SLACK = 2


@dataclass(frozen=True)
class Incoming:
    """The HTLC offered to us, as the htlc_accepted hook reports it."""

    channel: str
    htlc_id: int
    amount_msat: int
    cltv_expiry: int


@dataclass(frozen=True)
class HeldPayment:
    payment_hash: str
    incoming: Incoming
    record: TrampolineRecord
    payer: Optional[str]
    hold_start: int
    give_up_height: int
    next_poll_height: int
    attempts: int = 0
    state: str = HELD
    last_error: Optional[str] = None
    preimage: Optional[str] = None
    failure_message: Optional[str] = None
    # Whether lightningd is waiting on our hook answer for this HTLC now.
    # Not persisted: after a restart only a replayed hook re-attaches it.
    attached: bool = field(default=True, compare=False)

    def to_json(self) -> dict:
        data = asdict(self)
        del data["attached"]
        return data

    @classmethod
    def from_json(cls, data: dict) -> "HeldPayment":
        data = dict(data)
        data["incoming"] = Incoming(**data["incoming"])
        data["record"] = TrampolineRecord(**data["record"])
        return cls(attached=False, **data)


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


@dataclass(frozen=True)
class SendPay:
    payment_hash: str
    route: Tuple[dict, ...]
    payment_secret: str
    total_msat: int


@dataclass(frozen=True)
class CheckAttempt:
    """After a restart: ask lightningd what became of the in-flight attempt."""

    payment_hash: str


@dataclass(frozen=True)
class ResolveIncoming:
    payment_hash: str
    preimage: str


@dataclass(frozen=True)
class FailIncoming:
    payment_hash: str
    failure_message: str
    reason: str


@dataclass(frozen=True)
class NotifyPayer:
    payer: str
    payment_hash: str
    state: str
    give_up_height: int
    next_poll_height: int
    attempts: int
    reason: str


Action = Union[Persist, Forget, FindRoute, SendPay, CheckAttempt,
               ResolveIncoming, FailIncoming, NotifyPayer]


class RelayError(Exception):
    """An operator request the state machine refuses; carries an RPC code."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


UNKNOWN_PAYMENT = 2101
ATTEMPT_IN_FLIGHT = 2102
ALREADY_RESOLVED = 2103


class Relay:
    """All payments this node holds for others."""

    def __init__(self, policy: Policy, height: int, held: Iterable[HeldPayment] = ()):
        self.policy = policy
        self.height = height
        self.held: Dict[str, HeldPayment] = {h.payment_hash: h for h in held}

    # --- events -----------------------------------------------------------

    def htlc_accepted(self, payment_hash: str, incoming: Incoming, payload: bytes,
                      forward_msat: int, outgoing_cltv: int,
                      payer: Optional[str]) -> Tuple[Verdict, List[Action]]:
        """A (possibly replayed) htlc_accepted hook call."""
        try:
            found = find_record(payload)
        except DecodeError as e:
            return Reject(failures.invalid_onion_payload(e.tlv_type, e.offset),
                          f"malformed onion payload: {e}"), []
        if found is None or not self.policy.relay:
            return Continue(), []
        offset, raw = found
        try:
            record = TrampolineRecord.decode(raw)
        except DecodeError as e:
            return Reject(failures.invalid_onion_payload(RECORD_TYPE, offset),
                          f"malformed asyncln record: {e}"), []

        existing = self.held.get(payment_hash)
        if existing is not None and _same_htlc(existing.incoming, incoming):
            return self._reattach(existing)
        if existing is not None and existing.state != FAILED:
            # A completed record must outlive its HTLC: lightningd may replay
            # that HTLC after a restart and must get the preimage again.
            return Reject(failures.temporary_node_failure(),
                          f"another HTLC with this payment hash is already {existing.state}"), []

        rejection = self._admission_error(incoming, record, forward_msat, outgoing_cltv)
        if rejection is not None:
            return rejection, []

        hold_limit = self.policy.max_hold_blocks
        if record.max_hold_blocks is not None:
            hold_limit = min(hold_limit, record.max_hold_blocks)
        hold_limit = max(hold_limit, 1)  # a zero hold still gets its first attempt
        held = HeldPayment(
            payment_hash=payment_hash, incoming=incoming, record=record, payer=payer,
            hold_start=self.height,
            give_up_height=min(self.height + hold_limit, self._last_forward_bound(incoming, record)),
            next_poll_height=self.height)
        self.held[payment_hash] = held
        return Hold(), [Persist(held)] + self._try(held)

    def block(self, height: int) -> List[Action]:
        self.height = max(self.height, height)
        actions: List[Action] = []
        for held in list(self.held.values()):
            if held.state in TERMINAL:
                if self.height > held.incoming.cltv_expiry:
                    del self.held[held.payment_hash]
                    actions.append(Forget(held.payment_hash))
            elif held.state == HELD:
                if self.height >= held.give_up_height:
                    actions += self._fail(held, "recipient stayed offline until the hold deadline")
                elif self.height >= held.next_poll_height:
                    actions += self._try(held)
        return actions

    def peer_online(self, node_id: str) -> List[Action]:
        actions: List[Action] = []
        for held in list(self.held.values()):
            if held.record.next_node == node_id and held.state == HELD:
                actions += self._try(held)
        return actions

    def poll(self, payment_hash: Optional[str] = None) -> List[Action]:
        """Operator asks for an immediate re-try of one or all held payments."""
        targets = [self._get(payment_hash)] if payment_hash else list(self.held.values())
        actions: List[Action] = []
        for held in targets:
            if held.state == HELD:
                actions += self._try(held)
        return actions

    def cancel(self, payment_hash: str) -> List[Action]:
        held = self._get(payment_hash)
        if held.state == FORWARDING:
            raise RelayError("an outgoing attempt is in flight; it must end first",
                             ATTEMPT_IN_FLIGHT)
        if held.state in TERMINAL:
            raise RelayError(f"payment is already {held.state}", ALREADY_RESOLVED)
        return self._fail(held, "cancelled by the holding node's operator")

    def route_found(self, payment_hash: str, route: List[dict]) -> List[Action]:
        held = self.held.get(payment_hash)
        if held is None or not self._may_start(held):
            return []
        problem = self._route_problem(held, route)
        if problem is not None:
            return self._attempt_failed(held, problem)
        held = self._update(held, state=FORWARDING, last_error=None)
        return [Persist(held),
                SendPay(payment_hash, tuple(route), held.record.payment_secret,
                        held.record.total_msat)]

    def route_failed(self, payment_hash: str, error: str) -> List[Action]:
        held = self.held.get(payment_hash)
        if held is None or held.state != HELD:
            return []
        return self._attempt_failed(held, f"no route: {error}")

    def attempt_failed(self, payment_hash: str, error: str,
                       refused_by: Optional[str] = None) -> List[Action]:
        """An outgoing attempt ended without a preimage.

        ``refused_by`` names the node that sent a permanent failure; when that
        is the recipient itself (say, an unknown payment secret), waiting for
        it to come back cannot help, so the HTLC is failed back at once.
        """
        held = self.held.get(payment_hash)
        if held is None or held.state != FORWARDING:
            return []
        if refused_by == held.record.next_node:
            held = self._update(held, state=HELD)
            return self._fail(held, f"recipient refused the payment: {error}")
        return self._attempt_failed(held, error)

    def attempt_succeeded(self, payment_hash: str, preimage: str) -> List[Action]:
        held = self.held.get(payment_hash)
        if held is None or held.state in TERMINAL:
            return []
        if hashlib.sha256(bytes.fromhex(preimage)).hexdigest() != payment_hash:
            return []
        held = self._update(held, state=COMPLETE, preimage=preimage, last_error=None)
        return [Persist(held), ResolveIncoming(payment_hash, preimage)]

    # --- internals --------------------------------------------------------

    def _get(self, payment_hash: str) -> HeldPayment:
        try:
            return self.held[payment_hash]
        except KeyError:
            raise RelayError(f"no held payment with hash {payment_hash}", UNKNOWN_PAYMENT)

    def _update(self, held: HeldPayment, **changes) -> HeldPayment:
        held = replace(held, **changes)
        self.held[held.payment_hash] = held
        return held

    def _last_forward_bound(self, incoming: Incoming, record: TrampolineRecord) -> int:
        """First height at which even a direct forward lacks CLTV margin."""
        return (incoming.cltv_expiry - self.policy.safety_blocks
                - record.final_cltv_delta - HEIGHT_SLACK + 1)

    def _admission_error(self, incoming: Incoming, record: TrampolineRecord,
                         forward_msat: int, outgoing_cltv: int) -> Optional[Reject]:
        if incoming.amount_msat < forward_msat:
            return Reject(failures.final_incorrect_htlc_amount(incoming.amount_msat),
                          "HTLC carries less than the onion says")
        if incoming.cltv_expiry < outgoing_cltv:
            return Reject(failures.final_incorrect_cltv_expiry(incoming.cltv_expiry),
                          "HTLC expiry is below the onion's outgoing_cltv_value")
        if incoming.amount_msat < record.amount_msat + self.policy.fee(record.amount_msat):
            return Reject(failures.trampoline_fee_insufficient(),
                          "incoming amount does not cover amount plus fee")
        if self._last_forward_bound(incoming, record) <= self.height:
            return Reject(failures.trampoline_expiry_too_soon(),
                          "incoming expiry leaves no room to forward safely")
        active = [h for h in self.held.values() if h.state not in TERMINAL]
        if len(active) >= self.policy.max_held:
            return Reject(failures.temporary_node_failure(), "asyncln-max-held reached")
        if sum(h.incoming.amount_msat for h in active) + incoming.amount_msat > self.policy.max_held_msat:
            return Reject(failures.temporary_node_failure(), "asyncln-max-held-msat reached")
        return None

    def _reattach(self, held: HeldPayment) -> Tuple[Verdict, List[Action]]:
        """lightningd replayed the hook (restart): answer exactly as before."""
        held = self._update(held, attached=True)
        if held.state == COMPLETE:
            return Hold(), [ResolveIncoming(held.payment_hash, held.preimage)]
        if held.state == FAILED:
            return Hold(), [FailIncoming(held.payment_hash, held.failure_message,
                                         held.last_error or "failed before restart")]
        if held.state == FORWARDING:
            return Hold(), [CheckAttempt(held.payment_hash)]
        if self.height >= held.give_up_height:
            return Hold(), self._fail(held, "recipient stayed offline until the hold deadline")
        return Hold(), self._try(held)

    def _may_start(self, held: HeldPayment) -> bool:
        return held.state == HELD and held.attached and self.height < held.give_up_height

    def _try(self, held: HeldPayment) -> List[Action]:
        if not self._may_start(held):
            return []
        held = self._update(held, attempts=held.attempts + 1)
        record = held.record
        budget = held.incoming.amount_msat - record.amount_msat - self.policy.fee(record.amount_msat)
        return [FindRoute(held.payment_hash, record.next_node, record.amount_msat,
                          record.final_cltv_delta, maxfee_msat=budget,
                          maxdelay=self._max_route_delay(held))]

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
            return "route fees exceed what the incoming HTLC leaves after our fee"
        return None

    def _attempt_failed(self, held: HeldPayment, error: str) -> List[Action]:
        held = self._update(held, state=HELD, last_error=error,
                            next_poll_height=self.height + self.policy.poll_blocks)
        if not held.record.please_poll or self.height >= held.give_up_height:
            return self._fail(held, f"recipient unreachable: {error}")
        actions: List[Action] = [Persist(held)]
        if held.payer:
            actions.append(NotifyPayer(held.payer, held.payment_hash, HELD, held.give_up_height,
                                       held.next_poll_height, held.attempts, error))
        return actions

    def _fail(self, held: HeldPayment, reason: str) -> List[Action]:
        assert held.state == HELD, "never fail while an attempt is in flight"
        message = failures.temporary_node_failure()
        held = self._update(held, state=FAILED, failure_message=message, last_error=reason)
        actions: List[Action] = [Persist(held)]
        if held.payer:
            actions.append(NotifyPayer(held.payer, held.payment_hash, FAILED, held.give_up_height,
                                       held.next_poll_height, held.attempts, reason))
        actions.append(FailIncoming(held.payment_hash, message, reason))
        return actions


def _same_htlc(a: Incoming, b: Incoming) -> bool:
    return a.channel == b.channel and a.htlc_id == b.htlc_id
