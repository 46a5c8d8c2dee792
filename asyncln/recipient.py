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


def invoices_needed(target: int, status: PoolStatus, batch: int) -> int:
    """How many invoices to deposit after the Rod's ``pool_status``.

    Never more than the Rod holds. Any refusal stops the top-up until the
    next connection, so a Rod that refuses everything is not flooded.
    """
    if status.refused:
        return 0
    wanted = min(target, status.max_invoices) - status.level
    return max(0, min(batch, wanted))


def wants_query(status: Optional[PoolStatus], asked_at: Optional[int], height: int,
                target: int, every: int) -> bool:
    """Ask a connected Rod for its pool level again? At most every ``every`` blocks.

    A connection may come before the channel that makes us a depositor, and
    payers drain the pool while we are away: so ask again now and then,
    until the pool is full.
    """
    if asked_at is not None and height < asked_at + every:
        return False
    if status is not None and status.refused and status.max_invoices > 0:
        return False  # it refused our invoices: minting more cannot help until we reconnect
    return status is None or bool(status.refused) or status.level < min(target,
                                                                         status.max_invoices)
