"""The Rod: keeps an offline recipient's presigned invoices and hands each out at most once.

A recipient B deposits BOLT11 invoices made by its own lightningd (so only
B knows their preimages) at its always-online Rod R. While B is offline a
payer A asks R for one of B's invoices, and may leave an end-to-end-
encrypted note (opaque bytes to R) that R delivers when B reconnects.

Pure: the shell decodes invoices with lightningd's ``decode``, passes the
time, persists :meth:`Rod.pool` after every change and turns an
:class:`AsynclnError` into an RPC error. Rules, property-tested in
tests/test_rod.py:

* a payment hash is served at most once: a served hash is remembered (and
  persisted) until its invoice expires, and a deposit of a hash in the pool
  or already served is refused. Once the invoice has expired B's lightningd
  refuses payments for it, and a deposit of it is refused as expired;
* nothing is served that expires within ``SERVE_MARGIN_SECONDS``, and
  nothing is kept that expires later than ``max_expiry_seconds``;
* a pool never exceeds ``max_invoices`` or ``max_bytes`` (served hashes
  included, so a pool cannot grow by being fetched), and only an allowed
  depositor adds to one;
* a pool belongs to the node that deposited it (BOLT 8 authenticates the
  custom message's sender); a payee key is filed with it only under that
  key's signature over (depositor, Rod). Public requests name node ids,
  private ones payee keys: the two are never looked up in each other's place;
* a refused call changes no pool;
* each requester's invoice requests pass a token bucket;
* a note is kept only for a hash served to its sender, for a recipient that
  has a pool.
"""

import math
import re
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from types import MappingProxyType
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union, assert_never

from . import payee
from .code import deposit_description
from .errors import AsynclnError, Code
from .lightningd import msat
from .policy import int_options

# A served invoice must leave the payer time to pay it: never serve one with less left.
SERVE_MARGIN_SECONDS = 600
# BOLT 11's expiry when the invoice sets none.
DEFAULT_EXPIRY_SECONDS = 3600
HOUR = 3600
DAY = 24 * HOUR
# What one entry of a pool's datastore record (asyncln/store.py's JSON) takes
# besides its invoice and offer strings, at most: a served hash's entry is
# 190 characters with a 20-digit expiry, an invoice's 186. RECORD_BYTES is
# the rest of the record (its keys and the payee key), notes aside.
ENTRY_BYTES = 200
RECORD_BYTES = 150

# Option name -> (RodLimits field, least allowed value), as policy.OPTIONS.
# The least min-expiry is the serving margin: a shorter one admits invoices
# that could never be served.
OPTIONS = {
    "asyncln-rod-max-invoices": ("max_invoices", 1),
    "asyncln-rod-max-bytes": ("max_bytes", RECORD_BYTES),
    "asyncln-rod-min-expiry": ("min_expiry_seconds", SERVE_MARGIN_SECONDS),
    "asyncln-rod-max-expiry": ("max_expiry_seconds", SERVE_MARGIN_SECONDS),
    "asyncln-rod-fetches-per-hour": ("fetches_per_hour", 1),
    "asyncln-rod-max-notes": ("max_notes", 0),
}
DEPOSITORS_OPTION = "asyncln-rod-depositors"
DEPOSITOR_MODES = ("peers", "any", "none")

_NODE_ID = re.compile(r"0[23][0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RodLimits:
    max_invoices: int = 50            # per depositor
    max_bytes: int = 50_000           # per depositor: Pool.size_bytes, its record's size
    min_expiry_seconds: int = DAY     # a deposited invoice must stay valid at least this long
    max_expiry_seconds: int = 14 * DAY  # and at most this long: a served hash is kept as long
    fetches_per_hour: int = 10        # invoice requests per requester, refilled continuously
    max_notes: int = 20               # notes waiting per recipient
    max_note_bytes: int = 561         # sealed note size cap: note.MAX_SEALED_BYTES; not an option
    depositors: str = "peers"         # "peers", "any", "none", or comma-separated node ids

    @classmethod
    def from_options(cls, options: Mapping) -> "RodLimits":
        """Parse lightningd's option values; ValueError names the first bad one."""
        values = int_options(options, OPTIONS)
        if DEPOSITORS_OPTION in options:
            values["depositors"] = _depositors(options[DEPOSITORS_OPTION])
        limits = cls(**values)
        if limits.max_expiry_seconds < limits.min_expiry_seconds:
            raise ValueError("asyncln-rod-max-expiry must be at least asyncln-rod-min-expiry")
        return limits

    def allows(self, depositor: str, is_channel_peer: bool) -> bool:
        """Whether ``depositors`` lets this node keep a pool here."""
        match self.depositors:
            case "any":
                return True
            case "peers":
                return is_channel_peer
            case "none":
                return False
            case listed:
                return depositor in listed.split(",")


def _depositors(value) -> str:
    text = str(value).strip().lower()
    if text in DEPOSITOR_MODES:
        return text
    ids = [part.strip() for part in text.split(",")]
    if not all(_NODE_ID.fullmatch(node) for node in ids):
        raise ValueError(f"{DEPOSITORS_OPTION} must be peers, any, none or comma-separated "
                         f"node ids, not {value!r}")
    return ",".join(ids)


@dataclass(frozen=True)
class Deposited:
    payment_hash: str
    bolt11: str
    amount_msat: Optional[int]        # None: amountless
    expires_at: int                   # unix seconds
    offer: Optional[str] = None       # hex private offer for the same payment (asyncln/payee.py)


@dataclass(frozen=True)
class Served:
    """Remembered until the invoice expires, so its hash is never served or accepted again."""

    requester: str
    expires_at: int


@dataclass(frozen=True)
class Pool:
    """Everything the Rod keeps for one depositor: one datastore record.

    ``invoices`` keep their deposit order; ``notes`` their arrival order.
    The mappings are read-only copies, so a Pool can be shared freely.
    """

    invoices: Tuple[Deposited, ...] = ()
    served: Mapping[str, Served] = field(default_factory=dict)  # payment_hash -> Served
    notes: Mapping[str, str] = field(default_factory=dict)      # payment_hash -> sealed note hex
    payee_key: Optional[str] = None   # the depositor's key in private codes: private requests name it

    def __post_init__(self):
        object.__setattr__(self, "invoices", tuple(self.invoices))
        object.__setattr__(self, "served", MappingProxyType(dict(self.served)))
        object.__setattr__(self, "notes", MappingProxyType(dict(self.notes)))

    @property
    def is_empty(self) -> bool:
        """Nothing to keep: the shell may delete the record."""
        return not (self.invoices or self.served or self.notes)

    @property
    def size_bytes(self) -> int:
        """A bound on the record's size, notes aside (``max_notes`` caps them).

        A served hash costs ENTRY_BYTES until its invoice expires, and an
        invoice never less: serving one never grows the pool.
        """
        return (RECORD_BYTES + sum(map(invoice_bytes, self.invoices))
                + ENTRY_BYTES * len(self.served))

    def fresh(self, now: float) -> "Pool":
        """Without expired invoices, and served hashes whose invoice expired.

        Notes stay until B takes them: B may come back long after the
        invoice expired, and B's lightningd knows whether it was paid.
        """
        return replace(self, invoices=tuple(i for i in self.invoices if i.expires_at > now),
                       served={h: s for h, s in self.served.items() if s.expires_at > now})

    def to_json(self) -> dict:
        return {"invoices": [asdict(invoice) for invoice in self.invoices],
                "served": {h: asdict(served) for h, served in self.served.items()},
                "notes": dict(self.notes), "payee_key": self.payee_key}

    @classmethod
    def from_json(cls, data: dict) -> "Pool":
        return cls(tuple(Deposited(**invoice) for invoice in data["invoices"]),
                   {h: Served(**served) for h, served in data["served"].items()},
                   data["notes"], data.get("payee_key"))


def invoice_bytes(invoice: Deposited) -> int:
    return len(invoice.bolt11) + len(invoice.offer or "") + ENTRY_BYTES


@dataclass(frozen=True)
class DepositResult:
    accepted: int
    refused: Tuple[str, ...]           # one reason per refused item, in order
    level: int                         # invoices now in the pool


def _refused(reason: str) -> AsynclnError:
    return AsynclnError(reason, Code.DEPOSIT_REFUSED)


def check_invoice(depositor: str, decoded: dict, bolt11: str, now: int,
                  limits: RodLimits, rod_id: Optional[str] = None) -> Deposited:
    """A :class:`Deposited` from lightningd's ``decode`` answer, if the Rod may keep it.

    ``decoded`` describes what a depositor sent us: any shape of it ends in
    a Deposited or DEPOSIT_REFUSED. Only the depositor's own invoices are
    kept (it alone knows their preimages), and only ones with a payment
    secret, which keeps intermediate nodes from probing B with them.
    """
    if (not isinstance(decoded, Mapping) or decoded.get("type") != "bolt11 invoice"
            or decoded.get("valid") is not True):
        raise _refused("not a valid BOLT11 invoice")
    payment_hash = decoded.get("payment_hash")
    if not _is_hex32(payment_hash):
        raise _refused("the invoice has no valid payment hash")
    prefix = payment_hash[:16]
    if not isinstance(bolt11, str) or not bolt11:
        raise _refused(f"{prefix}: no invoice string")
    if decoded.get("payee") != depositor:
        raise _refused(f"{prefix}: the invoice is not the depositor's own")
    if not _is_hex32(decoded.get("payment_secret")):
        raise _refused(f"{prefix}: the invoice has no payment secret")
    if rod_id is not None and decoded.get("description") != deposit_description(rod_id):
        raise _refused(f"{prefix}: the description must be {deposit_description(rod_id)!r}, "
                       "so that payers know the invoice was deposited here")
    amount = _amount(decoded, prefix)
    expires_at = _expires_at(decoded, prefix)
    problem = _expiry_problem(expires_at, now, limits)
    if problem:
        raise _refused(f"{prefix}: {problem}")
    return Deposited(payment_hash, bolt11, amount, expires_at)


def _is_hex32(value) -> bool:
    return isinstance(value, str) and _HEX32.fullmatch(value) is not None


def _amount(decoded: Mapping, prefix: str) -> Optional[int]:
    if "amount_msat" not in decoded:
        return None
    try:
        amount = msat(decoded["amount_msat"])
    except ValueError:
        raise _refused(f"{prefix}: unreadable amount {decoded['amount_msat']!r}")
    if amount < 1:
        raise _refused(f"{prefix}: the invoice asks for {amount}msat")
    return amount


def _expires_at(decoded: Mapping, prefix: str) -> int:
    created_at = decoded.get("created_at")
    expiry = decoded.get("expiry", DEFAULT_EXPIRY_SECONDS)
    if not (_is_count(created_at) and _is_count(expiry)):
        raise _refused(f"{prefix}: unreadable creation time or expiry")
    return created_at + expiry


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _expiry_problem(expires_at: int, now: float, limits: RodLimits) -> Optional[str]:
    """Why an invoice expiring at ``expires_at`` may not be deposited now, if it may not.

    The upper bound keeps a served hash, which the Rod remembers until the
    invoice expires, from outliving the depositor's interest in it.
    """
    needed = max(limits.min_expiry_seconds, SERVE_MARGIN_SECONDS)
    if expires_at - now < needed:
        return (f"expires in {expires_at - now}s; the Rod keeps invoices valid for at "
                f"least {needed}s (asyncln-rod-min-expiry)")
    if expires_at - now > limits.max_expiry_seconds:
        return (f"expires in {expires_at - now}s; the Rod keeps invoices valid for at "
                f"most {limits.max_expiry_seconds}s (asyncln-rod-max-expiry)")
    return None


def _choose(invoices: Sequence[Deposited], amount_msat: int, now: float,
            private: bool = False) -> Optional[Deposited]:
    """The fitting invoice that expires last: exactly ``amount_msat``, else amountless.

    An invoice's expiry bounds how long the payment can wait for offline B
    (the payer caps its hold there), so the longest-lived one gives B the
    most time to come back. Ties go to the earliest deposit.
    """
    usable = [i for i in invoices if i.expires_at - now >= SERVE_MARGIN_SECONDS
              and (i.offer is not None or not private)]
    for wanted in (amount_msat, None):
        fits = [i for i in usable if i.amount_msat == wanted]
        if fits:
            return max(fits, key=lambda i: i.expires_at)  # max keeps the first of equals
    return None


_NO_POOLS: Mapping[str, Pool] = MappingProxyType({})


class Rod:
    """Every depositor's pool, and each requester's token bucket.

    The buckets live in memory only: a restart refills every bucket, which
    lets a requester at most ``fetches_per_hour`` extra requests per restart.
    """

    def __init__(self, limits: RodLimits, pools: Mapping[str, Pool] = _NO_POOLS):
        self.limits = limits
        self._pools: Dict[str, Pool] = {d: p for d, p in pools.items() if not p.is_empty}
        # requester -> when its bucket is full again (GCRA): one exact number per requester
        self._full_at: Dict[str, Fraction] = {}

    # --- depositors (B) ---------------------------------------------------

    def may_deposit(self, depositor: str, is_channel_peer: bool) -> None:
        if not self.limits.allows(depositor, is_channel_peer):
            who = {"peers": "its channel peers", "none": "nobody"}.get(
                self.limits.depositors, "the nodes its operator listed")
            raise _refused(f"this Rod keeps invoices only for {who}")

    def deposit(self, depositor: str, is_channel_peer: bool,
                items: Sequence[Union[Deposited, str]], now: int) -> DepositResult:
        """Add checked invoices to the depositor's pool; no items just asks its level.

        ``items`` are invoices from :func:`check_invoice`, or the reason the
        shell refused one. Expired invoices leave first, so they hold no
        room; then each item is judged in order, and a refused one changes
        nothing and takes no room from those after it.
        """
        self.may_deposit(depositor, is_channel_peer)
        pool = self.pool(depositor).fresh(now)
        kept = list(pool.invoices)
        taken = {i.payment_hash for i in kept} | set(pool.served)
        size = pool.size_bytes
        refused: List[str] = []
        for item in items:
            match item:
                case str():
                    refused.append(item)
                case Deposited():
                    problem = self._deposit_problem(item, taken, len(kept), size, now)
                    if problem:
                        refused.append(f"{item.payment_hash[:16]}: {problem}")
                        continue
                    kept.append(item)
                    taken.add(item.payment_hash)
                    size += invoice_bytes(item)
                case _:
                    assert_never(item)
        self._store(depositor, replace(pool, invoices=tuple(kept)))
        return DepositResult(len(kept) - len(pool.invoices), tuple(refused), len(kept))

    def _deposit_problem(self, item: Deposited, taken: set, count: int, size: int,
                         now: int) -> Optional[str]:
        limits = self.limits
        if item.payment_hash in taken:
            return "this payment hash is already in the pool or was already served"
        expiry = _expiry_problem(item.expires_at, now, limits)
        if expiry:
            return expiry
        if count + 1 > limits.max_invoices:
            return f"the pool is full (asyncln-rod-max-invoices={limits.max_invoices})"
        if size + invoice_bytes(item) > limits.max_bytes:
            return f"the pool would exceed asyncln-rod-max-bytes={limits.max_bytes}"
        return None

    # --- requesters (A) ---------------------------------------------------

    def fetch(self, requester: str, recipient: str, amount_msat: int,
              now: float, private: bool = False) -> Deposited:
        """Hand out one of the recipient's invoices; it is never served again.

        Every request the bucket admits costs a token, whatever the answer:
        learning which nodes keep a pool, or whether it is empty, is then as
        limited as taking invoices. A request the bucket refuses costs
        nothing, so a requester that retries too fast is not locked out
        longer. The invoice leaves the pool and its hash is remembered with
        its requester, who alone may leave a note for it. A ``private``
        request names the recipient by its payee key and gets an invoice that
        has a private offer (the shell answers with the offer, not the invoice);
        it is looked up by payee key only, a public one by node id only, so
        that a private payer cannot learn which node is behind a payee key.
        """
        self._take_token(requester, now)
        if isinstance(amount_msat, bool) or not isinstance(amount_msat, int) or amount_msat < 1:
            raise AsynclnError(f"amount_msat must be a positive integer, not {amount_msat!r}",
                               Code.BAD_PARAMETER)
        recipient = self.depositor_of(recipient, private)
        pool = self._pools.get(recipient) if recipient else None
        if pool is None:
            raise AsynclnError("this Rod keeps no invoices for that recipient",
                               Code.UNKNOWN_RECIPIENT)
        invoice = _choose(pool.invoices, amount_msat, now, private)
        if invoice is None:
            raise AsynclnError(f"no unexpired invoice for {amount_msat}msat or any amount left",
                               Code.POOL_EMPTY)
        pool = pool.fresh(now)
        left = tuple(i for i in pool.invoices if i.payment_hash != invoice.payment_hash)
        served = {**pool.served, invoice.payment_hash: Served(requester, invoice.expires_at)}
        self._store(recipient, replace(pool, invoices=left, served=served))
        return invoice

    def _take_token(self, requester: str, now: float) -> None:
        """A token bucket of ``fetches_per_hour`` tokens that refills over an hour.

        Kept as the time the bucket is full again (GCRA), in exact fractions,
        so rounding never refuses the last request of a full burst.
        """
        cost = Fraction(HOUR, self.limits.fetches_per_hour)
        now = Fraction(now)
        full_at = max(self._full_at.get(requester, now), now)
        if full_at + cost - now > HOUR:
            wait = math.ceil(full_at + cost - now - HOUR)
            raise AsynclnError(f"more than {self.limits.fetches_per_hour} invoice requests an "
                               f"hour; retry in {wait}s", Code.RATE_LIMITED)
        self._full_at[requester] = full_at + cost

    # --- notes ------------------------------------------------------------

    def store_note(self, sender: str, recipient: str, payment_hash: str, sealed: bytes,
                   private: bool = False) -> str:
        """Keep a sealed note for the recipient, about an invoice served to ``sender``.

        The recipient is named as in :meth:`fetch` (a payee key when
        ``private``) and must have a pool here. Only the payer who got the
        invoice may attach a note to it, one note per invoice: others cannot
        fill B's mailbox or speak for that payment. Returns the depositor the
        note is filed under, to whom it goes.
        """
        limits = self.limits
        depositor = self.depositor_of(recipient, private)
        if depositor is None:
            raise AsynclnError("this Rod keeps no pool for that recipient", Code.NOTE_REFUSED)
        pool = self._pools[depositor]
        served = pool.served.get(payment_hash)
        if served is None or served.requester != sender:
            raise AsynclnError("no invoice with this payment hash was served to you for that "
                               "recipient", Code.NOTE_REFUSED)
        if not 0 < len(sealed) <= limits.max_note_bytes:
            raise AsynclnError(f"a note must be 1 to {limits.max_note_bytes} bytes, not "
                               f"{len(sealed)}", Code.NOTE_REFUSED)
        if payment_hash in pool.notes:
            raise AsynclnError("a note for this payment is already waiting", Code.NOTE_REFUSED)
        if len(pool.notes) >= limits.max_notes:
            raise AsynclnError(f"{limits.max_notes} notes already wait for that recipient",
                               Code.NOTE_REFUSED)
        self._store(depositor, replace(pool, notes={**pool.notes, payment_hash: sealed.hex()}))
        return depositor

    def notes_for(self, recipient: str) -> List[Tuple[str, bytes]]:
        """(payment_hash, sealed) of every note waiting for the recipient, oldest first."""
        return [(h, bytes.fromhex(note)) for h, note in self.pool(recipient).notes.items()]

    def note_delivered(self, recipient: str, payment_hash: str) -> bool:
        """The recipient took the note: forget it. True if one was waiting."""
        pool = self.pool(recipient)
        if payment_hash not in pool.notes:
            return False
        self._store(recipient, replace(
            pool, notes={h: n for h, n in pool.notes.items() if h != payment_hash}))
        return True

    # --- upkeep -----------------------------------------------------------

    def prune(self, now: int) -> List[str]:
        """Drop what expired; returns the depositors whose pool changed, sorted.

        Also forgets the buckets that are full again: absent and full are
        the same, so memory stays bounded by the last hour's requesters.
        """
        changed = []
        for depositor, pool in sorted(self._pools.items()):
            fresh = pool.fresh(now)
            if fresh != pool:
                self._store(depositor, fresh)
                changed.append(depositor)
        self._full_at = {r: full_at for r, full_at in self._full_at.items() if full_at > now}
        return changed

    def pool(self, depositor: str) -> Pool:
        """What to persist for the depositor; empty when nothing is kept (delete the record)."""
        return self._pools.get(depositor, Pool())

    def level(self, depositor: str) -> int:
        return len(self.pool(depositor).invoices)

    def claim_payee_key(self, depositor: str, payee_key: str, signature: Optional[str],
                        rod_id: str) -> Tuple[Optional[str], Tuple[str, ...]]:
        """File the depositor's private-code key with its pool.

        Only under the key's own signature over (depositor, this Rod), which
        nobody but the key's holder can make for their node: a payee key
        copied from B's code is worth nothing to another depositor. A proven
        key is taken from any other pool that has it (filed without proof by
        an older version). An empty pool is not created for it. Returns why
        the key was refused, if it was, and the depositors whose pool changed.
        """
        if signature is None:
            return "the payee key comes without its signature (deposit field 7): not filed", ()
        if not payee.verify(payee_key, signature, payee.owner_statement(depositor, rod_id)):
            return "the payee key's signature does not name you and this Rod: not filed", ()
        pool = self._pools.get(depositor)
        if pool is None or pool.payee_key == payee_key:
            return None, ()
        others = [d for d, p in self._pools.items() if p.payee_key == payee_key]
        for other in others:
            self._store(other, replace(self._pools[other], payee_key=None))
        self._store(depositor, replace(pool, payee_key=payee_key))
        return None, tuple(others) + (depositor,)

    def depositor_of(self, recipient: str, private: bool = False) -> Optional[str]:
        """Who keeps a pool here under that name: by payee key if ``private``, else by node id."""
        if private:
            return next((d for d, p in self._pools.items() if p.payee_key == recipient), None)
        return recipient if recipient in self._pools else None

    def depositors(self) -> List[str]:
        return sorted(self._pools)

    def _store(self, depositor: str, pool: Pool) -> None:
        if pool.is_empty:
            self._pools.pop(depositor, None)
        else:
            self._pools[depositor] = pool
