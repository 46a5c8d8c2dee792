"""The states of a held payment and of a payer's payment, each with its one transition table.

Core, codecs and RPC all use these enums; :func:`move` is the only way a
state changes, and it refuses a move the table does not list.
"""

from enum import Enum
from typing import Mapping, FrozenSet, TypeVar


class HoldState(str, Enum):
    """A payment the holding node keeps for an offline next node."""

    HELD = "held"              # waiting for the next node; no attempt in flight
    FORWARDING = "forwarding"  # an outgoing attempt may still succeed
    COMPLETE = "complete"      # preimage known; the incoming HTLC is (to be) resolved
    FAILED = "failed"          # the incoming HTLC is (to be) failed back


class PayState(str, Enum):
    """A payment as the payer sees it."""

    PENDING = "pending"        # sent; the holding node has not reported yet
    HELD = "held"              # the holding node says it waits for the recipient
    COMPLETE = "complete"      # preimage received
    FAILED = "failed"          # our HTLC came back; the payment may be retried


HOLD_MOVES: Mapping[HoldState, FrozenSet[HoldState]] = {
    HoldState.HELD: frozenset({HoldState.HELD, HoldState.FORWARDING,
                               HoldState.COMPLETE, HoldState.FAILED}),
    # Never FORWARDING -> FAILED: an attempt that may succeed blocks a fail-back.
    HoldState.FORWARDING: frozenset({HoldState.FORWARDING, HoldState.HELD, HoldState.COMPLETE}),
    HoldState.COMPLETE: frozenset({HoldState.COMPLETE}),
    HoldState.FAILED: frozenset({HoldState.FAILED}),
}

PAY_MOVES: Mapping[PayState, FrozenSet[PayState]] = {
    PayState.PENDING: frozenset({PayState.PENDING, PayState.HELD,
                                 PayState.COMPLETE, PayState.FAILED}),
    PayState.HELD: frozenset({PayState.HELD, PayState.COMPLETE, PayState.FAILED}),
    PayState.COMPLETE: frozenset({PayState.COMPLETE}),
    PayState.FAILED: frozenset({PayState.FAILED, PayState.PENDING, PayState.COMPLETE}),
}

HOLD_OPEN = frozenset({HoldState.HELD, HoldState.FORWARDING})
PAY_OPEN = frozenset({PayState.PENDING, PayState.HELD})


class IllegalTransition(AssertionError):
    """A bug: code asked for a move its state's table forbids."""


S = TypeVar("S", HoldState, PayState)


def move(table: Mapping[S, FrozenSet[S]], old: S, new: S) -> S:
    if new not in table[old]:
        raise IllegalTransition(f"{old.value} -> {new.value} is not allowed")
    return new
