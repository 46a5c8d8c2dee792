"""What holding buys, simulated: the real :class:`asyncln.hold.Relay` against a simulated
chain and an offline recipient, no lightningd.

A payer's HTLC reaches holder S while recipient B is offline. S holds it and tries to
deliver; B comes back now and then for a short session. A small shell here does what
asyncln's holder_shell does with the relay's actions (a route search finds B's channel,
an attempt succeeds exactly while B is online) and feeds it what lightningd would: the
HTLC, every block, B's reconnections. Three ways S learns that B is back:

* poll only: S retries every asyncln-poll-blocks blocks (B is not S's peer, so S sees
  no reconnection);
* poll and wake: B is S's peer, and its reconnection wakes a retry at once
  (holder_shell.peer_connected -> Relay.peer_online);
* webhook push: as poll and wake, and a bLIP-55 webhook sent when S holds the HTLC
  brings B online ``push_delay_minutes`` later.

No matplotlib here: plot/draw.py draws what :func:`sweep` returns, and
tests/test_simulate.py checks how it behaves.
"""

import hashlib
import heapq
import random
import statistics
from collections import deque
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Iterable, Iterator, List, Optional, Tuple

from coincurve import PrivateKey

from asyncln import chain, hold
from asyncln.policy import Policy
from asyncln.record import FinalPayload, TrampolineRecord

PAYER = PrivateKey(b"\x01" * 32).public_key.format().hex()
HOLDER = PrivateKey(b"\x03" * 32).public_key.format().hex()
RECIPIENT = PrivateKey(b"\x02" * 32).public_key.format().hex()
START_HEIGHT = 900_000
AMOUNT_MSAT = 5_000_000        # what B gets
FINAL_CLTV = 18                # B's invoice's min_final_cltv_expiry_delta
ROUTING_FEE_MSAT = 1_000       # the payer's budget for S's route to B
OFFLINE = "WIRE_TEMPORARY_CHANNEL_FAILURE: the recipient is offline"

Window = Tuple[float, float]   # B online from .. until, minutes after the HTLC arrived


class Event(IntEnum):
    """What happens, in this order at one instant: B leaves, B comes back, a block."""

    DOWN = 0
    UP = 1
    BLOCK = 2


class Strategy(Enum):
    POLL = "poll only (every asyncln-poll-blocks)"
    WAKE = "poll, and wake on B's reconnection"
    PUSH = "poll, wake, and a webhook push"


@dataclass(frozen=True)
class Assumptions:
    """Everything the picture depends on; :func:`caption` states each."""

    payments: int = 200                 # per strategy and point
    seed: int = 1
    block_minutes: float = 10.0         # mean of exponential block intervals
    session_minutes: float = 10.0       # B stays online this long each time it comes back
    push_delay_minutes: float = 2.0     # webhook sent -> B online
    policy: Policy = field(default_factory=Policy)  # asyncln's defaults
    # x axis: the mean of B's exponential offline time, in hours
    mean_offline_hours: Tuple[float, ...] = (0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128, 256)


@dataclass(frozen=True)
class Outcome:
    """One payment: delivered, or failed back, ``minutes`` after S took the HTLC."""

    delivered: bool
    minutes: float
    attempts: int      # the relay's delivery tries


@dataclass(frozen=True)
class Point:
    strategy: Strategy
    mean_offline_hours: float
    delivered_share: float
    median_delay_hours: Optional[float]   # of the delivered payments; None if none was


def caption(a: Assumptions) -> str:
    """The assumptions, in words, for the figure and the README."""
    p = a.policy
    hold_days = p.max_hold_blocks * a.block_minutes / (60 * 24)
    return (f"Simulated with asyncln's hold.Relay (defaults: asyncln-poll-blocks={p.poll_blocks}, "
            f"asyncln-max-hold-blocks={p.max_hold_blocks}, about {hold_days:.0f} days, then failed back). "
            f"{a.payments} payments per point and strategy, seed {a.seed}. "
            f"Blocks: exponential intervals, mean {a.block_minutes:g} min. "
            f"B is offline when the HTLC arrives, for an exponential time of the mean on the x axis, "
            f"then online for {a.session_minutes:g} min, offline again (same distribution), and so on. "
            f"Webhook: B online {a.push_delay_minutes:g} min after S holds the HTLC. "
            f"An attempt succeeds exactly while B is online and takes no time.")


def recipient_online(rng: random.Random, mean_offline_minutes: float,
                     session_minutes: float) -> Iterator[Window]:
    """B's sessions: offline for an exponential time, then online for a session, again and again."""
    t = 0.0
    while True:
        t += rng.expovariate(1 / mean_offline_minutes)
        yield t, t + session_minutes
        t += session_minutes


def block_times(rng: random.Random, mean_minutes: float) -> Iterator[float]:
    """Blocks as a Poisson process: the next one is as far off whenever the HTLC arrives."""
    t = 0.0
    while True:
        t += rng.expovariate(1 / mean_minutes)
        yield t


def _window_events(windows: Iterable[Window]) -> Iterator[Tuple[float, Event]]:
    for start, end in windows:
        assert 0 < start < end, "B is offline when the HTLC arrives, and a window has a length"
        yield start, Event.UP
        yield end, Event.DOWN


class Shell:
    """S's shell, simulated: carries out the relay's actions as holder_shell does."""

    def __init__(self, policy: Policy, preimage: bytes):
        self.now = 0.0                                    # minutes after the HTLC arrived
        self.height = START_HEIGHT
        self.online = 0                                   # B's open windows (they may overlap)
        self.preimage = preimage.hex()
        self.payment_hash = hashlib.sha256(preimage).hexdigest()
        self.relay = hold.Relay(policy, START_HEIGHT, clock=lambda: self.now * 60)
        self.outcome: Optional[Outcome] = None

    def htlc(self) -> None:
        """The payer's HTLC, planned as a payer plans a one-holder chain (chain.plan_chain)."""
        policy = self.relay.policy
        leg, = chain.plan_chain([(HOLDER, policy)], AMOUNT_MSAT, FINAL_CLTV,
                                [policy.max_hold_blocks], [ROUTING_FEE_MSAT])
        record = TrampolineRecord(next_node=RECIPIENT, amount_msat=AMOUNT_MSAT,
                                  final_cltv_delta=FINAL_CLTV, payment_secret="22" * 32,
                                  total_msat=AMOUNT_MSAT, please_poll=True)
        cltv_expiry = self.height + leg.cltv_delta_in
        incoming = hold.Incoming(channel="103x1x0", htlc_id=0, amount_msat=leg.amount_in_msat,
                                 cltv_expiry=cltv_expiry, peer=PAYER, shared_secret="33" * 32,
                                 channel_id="cc" * 32)
        payload = FinalPayload(leg.amount_in_msat, cltv_expiry, record).encode()
        verdict, actions = self.relay.htlc_accepted(self.payment_hash, incoming, payload,
                                                    leg.amount_in_msat, cltv_expiry, self.height)
        assert isinstance(verdict, hold.Hold), verdict
        self.run(actions)

    def block(self) -> None:
        """block_added: check_chain, then reconcile."""
        self.height += 1
        self.run(self.relay.chain(self.height, True))
        self.run(self.relay.reconcile())

    def reconnected(self) -> None:
        """peer_connected -> wake: the relay retries what it holds for B."""
        self.run(self.relay.peer_online(RECIPIENT))

    def run(self, actions: List[hold.Action]) -> None:
        queue = deque(actions)
        while queue:
            queue.extendleft(reversed(self.execute(queue.popleft())))

    def execute(self, action: hold.Action) -> List[hold.Action]:
        match action:
            case hold.Persist() | hold.Forget() | hold.NotifyPayer():
                return []
            case hold.FindRoute(payment_hash=payment_hash, amount_msat=amount):
                # B's channel is known whether B is online or not: the attempt tells.
                route = [{"id": RECIPIENT, "channel": "105x1x0", "direction": 0,
                          "amount_msat": amount, "delay": action.final_cltv}]
                return self.relay.route_found(payment_hash, route)
            case hold.SendPay(payment_hash=payment_hash, partid=partid):
                if not self.relay.may_send(payment_hash, partid):
                    return []
                if self.online:
                    return self.relay.attempt_succeeded(payment_hash, self.preimage)
                return self.relay.attempt_failed(payment_hash, partid, OFFLINE)
            case hold.ResolveIncoming(payment_hash=payment_hash, htlc=key):
                self.answered(payment_hash, key, delivered=True)
                return []
            case hold.FailIncoming(payment_hash=payment_hash, htlc=key):
                self.answered(payment_hash, key, delivered=False)
                return []
            case _:
                raise AssertionError(f"the simulated shell does not expect {action}")

    def answered(self, payment_hash: str, key: str, delivered: bool) -> None:
        self.outcome = Outcome(delivered, self.now, self.relay.held[payment_hash].attempts)
        self.relay.answered(payment_hash, key)


def deliver(strategy: Strategy, online: Iterable[Window], blocks: Iterable[float],
            a: Assumptions, preimage: bytes = b"\x11" * 32) -> Outcome:
    """One held payment: B's natural sessions ``online`` and the chain's ``blocks``
    (minutes after the HTLC arrived, rising) until S resolves or fails back the HTLC."""
    shell = Shell(a.policy, preimage)
    shell.htlc()
    streams = [_window_events(online), ((t, Event.BLOCK) for t in blocks)]
    if strategy == Strategy.PUSH:
        push = a.push_delay_minutes
        streams.append(_window_events([(push, push + a.session_minutes)]))
    last = START_HEIGHT + chain.hold_limit(a.policy, None)
    for now, kind in heapq.merge(*streams):
        shell.now = now
        match kind:
            case Event.DOWN:
                shell.online -= 1
            case Event.UP:
                shell.online += 1
                if strategy != Strategy.POLL:
                    shell.reconnected()
            case Event.BLOCK:
                assert shell.height < last, "the relay did not fail back at its give-up height"
                shell.block()
        if shell.outcome is not None:
            return shell.outcome
    raise AssertionError("the events ended before the relay answered")


def payment(strategy: Strategy, mean_offline_hours: float, index: int, a: Assumptions) -> Outcome:
    """Payment ``index`` at one point: every strategy sees the same B and the same chain."""
    name = f"{a.seed}/{mean_offline_hours}/{index}"
    online = recipient_online(random.Random(f"{name}/B"), mean_offline_hours * 60,
                              a.session_minutes)
    blocks = block_times(random.Random(f"{name}/chain"), a.block_minutes)
    preimage = hashlib.sha256(name.encode()).digest()
    return deliver(strategy, online, blocks, a, preimage)


def sweep(a: Assumptions) -> List[Point]:
    """One point per strategy and mean offline time."""
    points = []
    for strategy in Strategy:
        for mean in a.mean_offline_hours:
            outcomes = [payment(strategy, mean, i, a) for i in range(a.payments)]
            delays = [o.minutes / 60 for o in outcomes if o.delivered]
            points.append(Point(strategy, mean, len(delays) / len(outcomes),
                                statistics.median(delays) if delays else None))
    return points
