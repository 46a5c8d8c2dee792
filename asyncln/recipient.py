"""The often-offline recipient's side of its Rods: which Rods, and how many invoices to deposit.

Pure functions: the shell makes the invoices (``invoice``) and sends them.
"""

import re
from dataclasses import dataclass
from typing import Mapping, Optional, Tuple

from .code import Rod
from .messages import PoolStatus
from .policy import int_options
from .wire import is_point

# Options of a recipient (B). Rod-side limits live in rod.RodLimits.
_NODE_ID = re.compile(r"0[23][0-9a-f]{64}")
DEFAULT_POOL = 20
DEFAULT_INVOICE_EXPIRY = 7 * 24 * 3600  # a week: as long as a payment may be held
OPTIONS = {"asyncln-rod-pool": ("pool", 0), "asyncln-rod-invoice-expiry": ("invoice_expiry", 1)}


@dataclass(frozen=True)
class RecipientConfig:
    rods: Tuple[Rod, ...] = ()
    pool: int = DEFAULT_POOL                     # invoices to keep deposited at each Rod
    invoice_expiry: int = DEFAULT_INVOICE_EXPIRY  # seconds each presigned invoice stays valid

    @classmethod
    def from_options(cls, options: Mapping) -> "RecipientConfig":
        """ValueError names the bad option."""
        return cls(rods=parse_rods(options.get("asyncln-rod") or ""),
                   **int_options(options, OPTIONS))


def parse_rods(text: str) -> Tuple[Rod, ...]:
    """``id[@host:port]`` entries, comma-separated; an address lets payers connect."""
    rods = {}
    for entry in filter(None, (part.strip() for part in text.split(","))):
        node_id, _, address = entry.partition("@")
        node_id = node_id.strip().lower()  # as lightningd names peers
        valid = _NODE_ID.fullmatch(node_id) is not None and is_point(bytes.fromhex(node_id))
        if not valid:
            raise ValueError(f"asyncln-rod: {node_id!r} is not a node id")
        if node_id in rods:
            raise ValueError(f"asyncln-rod: {node_id} is named twice")
        rods[node_id] = Rod(node_id, (address,) if address else ())
    return tuple(rods.values())


@dataclass(frozen=True)
class MintBudget:
    """How many invoices B minted for one Rod's top-ups in the window starting at ``start``.

    B's own count, persisted: the Rod's reported level only ever lowers what
    B mints, so a Rod that lies about it cannot make B mint more than
    ``asyncln-rod-pool`` invoices per ``asyncln-poll-blocks`` blocks.
    """

    start: int = 0    # block height the window began
    count: int = 0

    def allowance(self, height: int, pool: int, every: int) -> int:
        """How many more B may mint at ``height``."""
        return pool if self.is_over(height, every) else max(0, pool - self.count)

    def minted(self, height: int, count: int, every: int) -> "MintBudget":
        """After minting ``count`` more at ``height``: a window that is over starts again."""
        if self.is_over(height, every):
            return MintBudget(height, count)
        return MintBudget(self.start, self.count + count)

    def is_over(self, height: int, every: int) -> bool:
        return height >= self.start + max(1, every)

    def to_json(self) -> dict:
        return {"start": self.start, "count": self.count}

    @classmethod
    def from_json(cls, data: dict) -> "MintBudget":
        return cls(int(data["start"]), int(data["count"]))


def invoices_needed(target: int, status: PoolStatus, batch: int, allowance: int) -> int:
    """How many invoices to deposit after the Rod's ``pool_status``.

    Never more than the Rod holds, nor than B's own ``allowance``
    (:class:`MintBudget`): the level is the Rod's word. Any refusal stops
    the top-up until the next query (connection, usable channel, poll: see
    :func:`wants_query`), so a Rod that refuses everything is not flooded.
    """
    if status.refused:
        return 0
    wanted = min(target, status.max_invoices) - status.level
    return max(0, min(batch, wanted, allowance))


def wants_query(status: Optional[PoolStatus], asked_at: Optional[int], height: int,
                target: int, every: int) -> bool:
    """Ask a connected Rod for its pool level again? At most every ``every`` blocks.

    Payers drain the pool while we are away: so ask again now and then,
    until the pool is full. A Rod that refused us as a depositor is also
    asked sooner, by :func:`wants_retry` and :func:`wants_query_on_channel`.
    """
    if asked_at is not None and height < asked_at + every:
        return False
    if status is not None and status.refused and status.max_invoices > 0:
        return False  # it refused our invoices: minting more cannot help until we reconnect
    return status is None or bool(status.refused) or status.level < min(target,
                                                                         status.max_invoices)


def refuses_depositor(status: Optional[PoolStatus]) -> bool:
    """The Rod refused us, not our invoices: it offers no room at all (``max_invoices`` 0).

    That is what a Rod answers a node that is not yet its channel peer, and
    a channel can change it. A refusal of invoices (room offered, invoices
    refused) cannot change by asking again.
    """
    return status is not None and bool(status.refused) and status.max_invoices == 0


def wants_retry(status: Optional[PoolStatus], asked_at: Optional[int], height: int,
                channel_usable: bool) -> bool:
    """Every block: ask a Rod that refused us as a depositor again, not a poll later?

    Only once our own channel to it is usable (a channel still locking in
    gives invoices without route hints), and at most once a block: a Rod
    that keeps refusing gets one empty query a block, which mints nothing.
    """
    return (refuses_depositor(status) and channel_usable
            and (asked_at is None or height > asked_at))


def wants_query_on_channel(status: Optional[PoolStatus], target: int) -> bool:
    """Our channel to a Rod just became usable (CHANNELD_NORMAL): ask it now?

    Yes unless we know the pool is full or the Rod refused our invoices
    themselves. Bounded by the channel events, each a lock-in or splice on
    chain; the query mints nothing, the answer is budgeted (:class:`MintBudget`).
    """
    if status is None or refuses_depositor(status):
        return True
    return not status.refused and status.level < min(target, status.max_invoices)
