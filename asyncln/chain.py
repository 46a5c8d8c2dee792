"""A chain of holders' budgets: what the payer asks of each, and what each checks.

A payment may pass several holders (A -> S -> R -> B). Each holder i gets an
HTLC, holds it for up to ``hold_i`` blocks, then routes to the next node and
must keep its own safety margin: its outgoing HTLC expires at least
``safety_i`` blocks before its incoming one, so it can always settle upstream
in time. The payer plans backwards from the recipient; every holder re-checks
its own leg on arrival, because it trusts nobody's arithmetic but its own.

Heights follow hold.py, which takes its give-up height from here for every
record version: a holder starts attempts at heights below its
``give_up_height`` and fails the HTLC back at that height, and lightningd may
base an outgoing expiry up to ``HEIGHT_SLACK`` blocks above the holder's
height. So a hold of ``n`` blocks means attempts at arrival .. arrival+n-1,
the last of which can produce an expiry as late as
arrival + n - 1 + HEIGHT_SLACK + route delay.
"""

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from .policy import Policy

# lightningd sets an outgoing HTLC's expiry from (its network height + 1),
# and may have seen a block whose notification we have not: our CLTV checks
# assume the expiry base is two blocks above our height.
HEIGHT_SLACK = 2

# CLTV a holder may spend on the route to the next node, on top of the CLTV
# that node needs: a few hops at CLN's default cltv-delta, as payer.py's
# DOWNSTREAM_CLTV_BUDGET. A number, not an import: the payer will plan chains,
# and payer.py importing this module must not import payer.py back.
LEG_CLTV_BUDGET = 144


def hold_limit(policy: Policy, max_hold_blocks: Optional[int]) -> int:
    """Blocks we hold: the payer's cap within ours; a zero hold still gets its first attempt."""
    if max_hold_blocks is None:
        return max(policy.max_hold_blocks, 1)
    return max(min(policy.max_hold_blocks, max_hold_blocks), 1)


@dataclass(frozen=True)
class Leg:
    """What the payer tells holder i (it becomes the holder's Layer)."""

    holder: str
    amount_in_msat: int       # what holder i must receive
    amt_to_forward: int       # what the next node must receive
    cltv_delta_in: int        # blocks holder i's incoming HTLC must have left on arrival
    outgoing_cltv_delta: int  # blocks the next node's incoming HTLC must have left
    max_hold_blocks: int


def _margin(policy: Policy, hold_blocks: int) -> int:
    """Blocks between the incoming and the next node's delta for a hold of ``hold_blocks``.

    The last attempt starts ``hold_blocks - 1`` blocks after arrival, its
    expiry base may be ``HEIGHT_SLACK`` higher, its route may spend
    ``LEG_CLTV_BUDGET``, and ``safety_blocks`` must remain after all that.
    """
    return hold_blocks - 1 + HEIGHT_SLACK + LEG_CLTV_BUDGET + policy.safety_blocks


def plan_chain(holders: Sequence[Tuple[str, Policy]], amount_msat: int, final_cltv: int,
               hold_blocks: Sequence[int], routing_fee_msat: Sequence[int]) -> List[Leg]:
    """Every holder's leg, planned backwards from the recipient (``amount_msat``, ``final_cltv``).

    Holder i keeps its fee on what it forwards and may spend
    ``routing_fee_msat[i]`` reaching the next node; its CLTV covers its hold,
    its route and its safety margin. A planned leg passes :func:`check_leg`
    at the arrival height, and its give-up height is exactly arrival + hold:
    neither bound wastes the other's blocks.
    """
    if not holders or not len(holders) == len(hold_blocks) == len(routing_fee_msat):
        raise ValueError("one hold and one routing fee per holder, and at least one holder")
    if amount_msat < 1 or final_cltv < 0 or min(routing_fee_msat) < 0:
        raise ValueError("amount must be positive, CLTV and routing fees not negative")
    for (holder, policy), hold in zip(holders, hold_blocks):
        if not 1 <= hold <= policy.max_hold_blocks:
            raise ValueError(f"hold of {hold} blocks at {holder}: must be 1 to its "
                             f"max_hold_blocks {policy.max_hold_blocks}")
    legs: List[Leg] = []
    amount, delta = amount_msat, final_cltv
    steps = list(zip(holders, hold_blocks, routing_fee_msat))
    for (holder, policy), hold, routing in reversed(steps):
        leg = Leg(holder, amount + policy.fee(amount) + routing, amount,
                  delta + _margin(policy, hold), delta, hold)
        legs.append(leg)
        amount, delta = leg.amount_in_msat, leg.cltv_delta_in
    return legs[::-1]


def check_leg(policy: Policy, incoming_msat: int, incoming_cltv_expiry: int, height: int,
              layer_amt_to_forward: int, layer_outgoing_cltv_delta: int,
              max_hold_blocks: Optional[int]) -> Optional[Tuple[str, dict]]:
    """What a holder checks on arrival: None if it can take the leg.

    It refuses when the HTLC does not cover its fee, or leaves too little
    CLTV to hold even one block and still forward with the next node's delta,
    its route budget and its safety margin. The refusal carries the terms of
    #836's ``trampoline_fee_or_expiry_insufficient``; its ``cltv_expiry_delta``
    is what the hold the payer asked for needs, so a payer that retries with
    it gets that hold, not just one block.
    """
    fee_short = incoming_msat - layer_amt_to_forward < policy.fee(layer_amt_to_forward)
    cltv_short = (incoming_cltv_expiry - height
                  < layer_outgoing_cltv_delta + _margin(policy, 1))
    if not (fee_short or cltv_short):
        return None
    return "fee_or_expiry", refusal_terms(policy, max_hold_blocks)


def refusal_terms(policy: Policy, max_hold_blocks: Optional[int], route_fee_msat: int = 0) -> dict:
    """#836's terms for a refusal: our fee, plus ``route_fee_msat`` when our route to the next
    node costs more than the payer left us, and the CLTV the hold asked for needs."""
    return {"fee_base_msat": policy.fee_base_msat + route_fee_msat,
            "fee_proportional_millionths": policy.fee_ppm,
            "cltv_expiry_delta": _margin(policy, hold_limit(policy, max_hold_blocks))}


def give_up_height(policy: Policy, incoming_cltv_expiry: int, height: int,
                   outgoing_cltv_delta: int, max_hold_blocks: Optional[int]) -> int:
    """The height at which the holder fails the HTLC back instead of trying again.

    As hold.py's ``give_up_height``, attempts start only below it. The CLTV
    bound keeps the last attempt's outgoing expiry (base up to HEIGHT_SLACK
    above its height, a route up to ``LEG_CLTV_BUDGET`` plus the next node's
    delta) at or below ``incoming_cltv_expiry - safety_blocks``.
    """
    cltv_bound = (incoming_cltv_expiry - policy.safety_blocks - LEG_CLTV_BUDGET
                  - outgoing_cltv_delta - HEIGHT_SLACK + 1)
    return min(height + hold_limit(policy, max_hold_blocks), cltv_bound)
