"""The paying side: check the invoice, pick a trampoline, plan the onion, track the payment.

Pure functions over plain data, so the shell does all I/O. It gathers the
decoded invoice, the peers' terms (their INFO messages), a route to the
trampoline (``getroutes``) and the block height, then calls :func:`plan`;
later it feeds outcomes through :func:`on_status`, :func:`on_success`,
:func:`on_failure` and, from lightningd's own records, :func:`reconcile`.
Every state change goes through :func:`asyncln.states.move`.
"""

from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Set, Tuple

from . import failures
from .errors import AsynclnError, Code
from .lightningd import Failed, InFlight, Succeeded, judge_attempt, msat
from .messages import PaymentStatus
from .policy import Policy
from .code import deposit_description
from .hold import CANCELLED_BY_PAYER
from .record import MAX_HINT_HOPS, MAX_HINT_ROUTES, FinalPayload, HintHop, TrampolineRecord
from .states import PAY_MOVES, PAY_OPEN, PayState, move
from . import chain, commitment, onion
from .layer import Layer
from .onion import forward_payload

# CLTV the payer adds for hops between the holding node and the recipient:
# enough for a few intermediate nodes at CLN's default cltv-delta of 34.
DOWNSTREAM_CLTV_BUDGET = 144
# The first holder of a chain waits only for the payee's Rod: a day is plenty.
FIRST_HOLDER_MAX_HOLD = 144
# lightningd's default max-locktime-blocks, and askrene's default maxdelay.
MAX_HTLC_CLTV = 2016
# BOLT 11's default when the invoice sets no min_final_cltv_expiry.
DEFAULT_FINAL_CLTV = 18
# Seconds per block, to turn an invoice's expiry into a number of blocks.
BLOCK_SECONDS = 600

# What the payer gives the holding node for its own route to the recipient, on top of the
# holder's announced fee (README, "Fees"): the fee of the route the payer estimates from its own
# gossip, plus this margin for what its gossip may not show (a fee update, another path):
# ROUTE_MARGIN_MSAT plus ROUTE_MARGIN_PERCENT of the estimate.
ROUTE_MARGIN_MSAT = 100
ROUTE_MARGIN_PERCENT = 10
# With no estimate (the payer's gossip has no route to the recipient, even through its
# invoice's route hints): a budget for a couple of hops at common fees.
UNKNOWN_ROUTE_BASE_MSAT = 1000
UNKNOWN_ROUTE_PPM = 2000
# A holder's #836 refusal with new terms is retried automatically at most this often per payment,
# and only when its terms differ from the last ones tried: never a loop.
MAX_TERMS_RETRIES = 2

LOST_REASON = "lightningd kept a pending attempt with no HTLC behind it (crash); safe to retry"


@dataclass(frozen=True)
class Pay:
    payment_hash: str
    bolt11: str
    destination: str
    trampoline: str
    amount_msat: int
    amount_sent_msat: int
    cltv_expiry: int
    max_hold_blocks: int
    created_at: int
    trampoline_index: int  # erring_index lightningd reports for the holding node (we are 0)
    status: PayState = PayState.PENDING
    give_up_height: Optional[int] = None
    next_poll_height: Optional[int] = None
    payment_preimage: Optional[str] = None
    reason: Optional[str] = None
    partid: Optional[int] = None    # our current sendonion attempt; None in older records
    groupid: Optional[int] = None
    lost_since: Optional[int] = None  # height we first saw the attempt pending with no HTLC
    report: bool = False            # we asked the trampoline for PAYMENT_STATUS (report_to)
    version: int = 1                # 1: clear record; 2: asyncln onion
    rod: Optional[str] = None       # the payee's Rod, when S holds for it (a chain of holders)
    # A private offer's proof of payment, with the preimage: the payee key's signature
    # over payee.statement(payment_hash, offer_expires_at, rod). destination is the payee key.
    payee_signature: Optional[str] = None
    offer_expires_at: Optional[int] = None
    # The payer's cap (asyncln-pay's maxfee_msat), for an automatic retry with a holder's
    # new terms; the terms of the last such retry, and how many there were.
    maxfee_msat: Optional[int] = None
    retried_terms: Optional[Tuple[int, int, int]] = None
    terms_retries: int = 0

    def to_json(self) -> dict:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_json(cls, data: dict) -> "Pay":
        """Also reads records from before partids, whose status is a plain string."""
        terms = data.get("retried_terms")
        return cls(**{**data, "status": PayState(data["status"]),
                      "retried_terms": None if terms is None else tuple(terms)})


@dataclass(frozen=True)
class Invoice:
    """The fields of a decoded BOLT11 invoice that asyncln needs."""

    bolt11: str
    payment_hash: str
    payment_secret: str
    destination: str
    amount_msat: int
    min_final_cltv_expiry: int
    expires_at: Optional[int] = None  # unix seconds
    route_hints: Tuple[Tuple[HintHop, ...], ...] = ()
    # Ours, not the invoice's: the amount sealed for the recipient (asyncln/commitment.py),
    # for an invoice or private offer it deposited at a Rod without an amount.
    commitment: Optional[bytes] = None


def check_invoice(decoded: dict, now: int, bolt11: str = "",
                  amount_msat: Optional[int] = None) -> Invoice:
    """An :class:`Invoice` from lightningd's ``decode`` answer, if asyncln can pay it.

    ``decode`` does not echo the string it decoded: pass it as ``bolt11``.
    ``amount_msat`` is the payer's amount: required for an amountless
    invoice, and must match an invoice that names its own.
    """
    if decoded.get("type") != "bolt11 invoice" or not decoded.get("valid", False):
        raise AsynclnError("invstring is not a valid BOLT11 invoice", Code.INVOICE_UNUSABLE)
    if "amount_msat" in decoded:
        amount = msat(decoded["amount_msat"])
        if amount_msat is not None and amount_msat != amount:
            raise AsynclnError(f"amount_msat {amount_msat} differs from the invoice's {amount}",
                               Code.INVOICE_UNUSABLE)
    elif amount_msat is None:
        raise AsynclnError("the invoice has no amount: give amount_msat", Code.INVOICE_UNUSABLE)
    else:
        amount = amount_msat
    if amount < 1:
        raise AsynclnError("the amount must be at least 1msat", Code.INVOICE_UNUSABLE)
    if "payment_secret" not in decoded:
        raise AsynclnError("the invoice has no payment secret", Code.INVOICE_UNUSABLE)
    expires_at = None
    if decoded.get("expiry") is not None:
        expires_at = int(decoded["created_at"]) + int(decoded["expiry"])
        if expires_at <= now:
            raise AsynclnError("the invoice has expired", Code.INVOICE_UNUSABLE)
    return Invoice(bolt11, decoded["payment_hash"], decoded["payment_secret"], decoded["payee"],
                   amount, int(decoded.get("min_final_cltv_expiry", DEFAULT_FINAL_CLTV)),
                   expires_at, route_hints(decoded.get("routes", [])))


def check_fetched(decoded: dict, recipient: str, amount_msat: int, now: int, bolt11: str,
                  used: Set[str], *, rod_id: str) -> Invoice:
    """The invoice a Rod handed us: signed by the recipient, unexpired, for our amount, fresh.

    ``decode`` reports ``valid`` only when the signature matches ``payee``.
    ``used``: payment hashes we fetched or paid before; a Rod serving one
    again could be replaying an invoice whose preimage is already known.
    """
    try:
        invoice = check_invoice(decoded, now, bolt11, amount_msat)
    except AsynclnError as e:
        raise AsynclnError(f"the Rod's invoice is unusable: {e}", Code.INVOICE_MISMATCH)
    if invoice.destination != recipient:
        raise AsynclnError(f"the Rod's invoice is signed by {invoice.destination}, not by the "
                           f"recipient {recipient}", Code.INVOICE_MISMATCH)
    if decoded.get("description") != deposit_description(rod_id):
        raise AsynclnError("the Rod's invoice is not one the recipient deposited there "
                           f"(its description is not {deposit_description(rod_id)!r})",
                           Code.INVOICE_MISMATCH)
    if invoice.payment_hash in used:
        raise AsynclnError(f"the Rod's invoice reuses payment hash {invoice.payment_hash}",
                           Code.HASH_REUSED)
    return invoice


def route_hints(routes: List[List[dict]]) -> Tuple[Tuple[HintHop, ...], ...]:
    """``decode``'s ``routes``, as many as the record carries (the shortest first)."""
    usable = sorted((r for r in routes if 1 <= len(r) <= MAX_HINT_HOPS), key=len)
    return tuple(tuple(HintHop(hop["pubkey"], hop["short_channel_id"], msat(hop["fee_base_msat"]),
                               int(hop["fee_proportional_millionths"]),
                               int(hop["cltv_expiry_delta"])) for hop in route)
                 for route in usable[:MAX_HINT_ROUTES])


def default_maxfee(amount_msat: int) -> int:
    """xpay's default: 5000msat or 1%, whichever is greater.

    The payer caps the fee; a trampoline announcing more is refused, not obeyed.
    """
    return max(5000, amount_msat // 100)


def choose_trampoline(requested: Optional[str], destination: str, terms: Dict[str, Policy],
                      connected: Set[str], amount_msat: int,
                      maxfee_msat: int) -> Tuple[str, Policy]:
    """The named trampoline if usable, else the cheapest connected peer that holds.

    TRAMPOLINE_TERMS_UNKNOWN tells the shell to send ``query_info`` and retry.
    """
    if requested is not None:
        if requested == destination:
            raise AsynclnError("the trampoline is the recipient: pay it directly",
                               Code.NO_TRAMPOLINE)
        info = terms.get(requested)
        if info is None and requested in connected:
            raise AsynclnError(f"{requested} has not told us its terms yet; asked, retry shortly",
                               Code.TRAMPOLINE_TERMS_UNKNOWN)
        if info is None:
            raise AsynclnError(f"{requested} is not a connected peer that supports asyncln",
                               Code.NO_TRAMPOLINE)
        if not info.relay:
            raise AsynclnError(f"{requested} does not hold payments for others",
                               Code.NO_TRAMPOLINE)
        _within_cap(info, amount_msat, maxfee_msat)
        return requested, info
    suitable = sorted(((info.fee(amount_msat), peer), info) for peer, info in terms.items()
                      if peer in connected and peer != destination and info.relay
                      and info.min_held_msat <= amount_msat)
    if not suitable:
        raise AsynclnError("no connected peer offers asyncln holding for this amount; "
                           "name one with trampoline=", Code.NO_TRAMPOLINE)
    (_, peer), info = suitable[0]
    _within_cap(info, amount_msat, maxfee_msat)
    return peer, info


def _within_cap(info: Policy, amount_msat: int, maxfee_msat: int):
    if info.fee(amount_msat) > maxfee_msat:
        raise AsynclnError(f"the trampoline's announced fee {info.fee(amount_msat)}msat exceeds "
                           f"the payer's cap maxfee_msat={maxfee_msat}", Code.MAXFEE_TOO_LOW)


def hold_blocks(requested: Optional[int], info: Policy, invoice: Invoice, now: int) -> int:
    """The payer's cap on the hold: never beyond the trampoline's terms or the invoice's expiry.

    A recipient refuses an expired invoice, so a longer hold could only fail.
    """
    hold = min(info.max_hold_blocks if requested is None else requested, info.max_hold_blocks)
    if hold < 1:
        raise AsynclnError(f"max_hold_blocks must be at least 1 (asked {requested}, the "
                           f"trampoline allows {info.max_hold_blocks})", Code.HOLD_TOO_SHORT)
    if invoice.expires_at is None:
        return hold
    left = (invoice.expires_at - now) // BLOCK_SECONDS
    if left < 1:
        raise AsynclnError(f"the invoice expires in {invoice.expires_at - now}s, before one "
                           f"block: too soon to hold the payment", Code.HOLD_TOO_SHORT)
    return min(hold, left)


def routing_budget(estimate_msat: Optional[int], amount_msat: int) -> int:
    """What the holding node may spend routing to the recipient: the estimate plus a margin.

    ``estimate_msat``: the fee of the holder's route as the payer's gossip shows it
    (:func:`route_estimate`); None when there is none, then a default for a few hops.
    """
    if estimate_msat is None:
        return UNKNOWN_ROUTE_BASE_MSAT + amount_msat * UNKNOWN_ROUTE_PPM // 1_000_000
    return estimate_msat + ROUTE_MARGIN_MSAT + estimate_msat * ROUTE_MARGIN_PERCENT // 100


def route_estimate(answer: dict, amount_msat: int) -> Optional[int]:
    """The fee of ``getroutes``' first route (source's own channels free), None if unusable."""
    try:
        fee = msat(answer["routes"][0]["path"][0]["amount_out_msat"]) - amount_msat
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return fee if fee >= 0 else None


def trampoline_amount(invoice: Invoice, maxfee_msat: int, fees_to_trampoline: int,
                      info: Policy, routing_budget_msat: int) -> int:
    """What the holding node must receive: the invoice's amount, its fee, its routing budget.

    The routing budget is what the holder may spend reaching the recipient
    (:func:`routing_budget`); the payer's total fee never exceeds
    maxfee_msat, which is a cap, not a target: the budget is cut to fit it.
    The holder always gets at least its announced fee, which it checks.
    """
    _within_cap(info, invoice.amount_msat, maxfee_msat)
    fee = info.fee(invoice.amount_msat)
    room = maxfee_msat - fees_to_trampoline - fee
    if room < 0:
        raise AsynclnError(f"maxfee_msat {maxfee_msat} does not cover the trampoline's fee "
                           f"{fee} plus {fees_to_trampoline} to reach it", Code.MAXFEE_TOO_LOW)
    return invoice.amount_msat + fee + max(0, min(routing_budget_msat, room))


def holder_terms(raw_message: Optional[str]) -> Optional[Tuple[int, int, int]]:
    """#836's trampoline_fee_or_expiry_insufficient: (fee_base_msat, fee_ppm, cltv_expiry_delta).

    None for any other message, or one too short to carry the terms.
    """
    try:
        data = bytes.fromhex(raw_message or "")
    except ValueError:
        return None
    if len(data) < 12 or int.from_bytes(data[:2], "big") != \
            failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT:
        return None
    return (int.from_bytes(data[2:6], "big"), int.from_bytes(data[6:10], "big"),
            int.from_bytes(data[10:12], "big"))


def retry_terms(pay: Pay, erring_index: Optional[int],
                raw_message: Optional[str]) -> Optional[Tuple[int, int, int]]:
    """The terms to retry a failed payment with, when its holding node refused it with new ones.

    Only the holder's own refusal (erring_index is the holder), only terms
    not tried already, at most MAX_TERMS_RETRIES times, and only for a
    payment the payer can pay again by itself (a BOLT11 invoice and its cap).
    Whether the terms fit the cap and the invoice is still valid, paying decides.
    """
    terms = holder_terms(raw_message)
    if (terms is None or pay.status != PayState.FAILED or erring_index != pay.trampoline_index
            or not pay.bolt11 or pay.maxfee_msat is None or terms == pay.retried_terms
            or pay.terms_retries >= MAX_TERMS_RETRIES):
        return None
    return terms


def with_terms(info: Policy, terms: Tuple[int, int, int]) -> Policy:
    """The holder's announced terms with the fee its refusal asked for."""
    return replace(info, fee_base_msat=terms[0], fee_ppm=terms[1])


def final_cltv_to_trampoline(invoice: Invoice, hold: int, info: Policy,
                             terms: Optional[Tuple[int, int, int]] = None) -> int:
    """Blocks of CLTV the HTLC must still have when it reaches the holding node.

    ``terms``: a refusal's, whose ``cltv_expiry_delta`` is what the holder
    needs above the recipient's final CLTV; an automatic retry gives it at
    most what a hold of ``hold`` blocks needs under the holder's announced
    terms, so that a holder cannot stretch the payer's HTLC to askrene's
    2016 blocks by asking.
    """
    cltv = hold + info.safety_blocks + invoice.min_final_cltv_expiry + DOWNSTREAM_CLTV_BUDGET
    if terms is None:
        return cltv
    needs = chain.refusal_terms(info, hold)["cltv_expiry_delta"]
    return max(cltv, min(terms[2], needs) + invoice.min_final_cltv_expiry)


def final_layer(invoice: Invoice, hold: int, report_to: Optional[str] = None) -> Layer:
    """The last holder's layer (record version 2): the recipient and its payment data."""
    return Layer(amt_to_forward=invoice.amount_msat,
                 outgoing_cltv_delta=invoice.min_final_cltv_expiry,
                 outgoing_node_id=invoice.destination, please_poll=True, max_hold_blocks=hold,
                 payment_secret=invoice.payment_secret, total_msat=invoice.amount_msat,
                 route_hints=invoice.route_hints, report_to=report_to,
                 amount_commitment=invoice.commitment)


def committed(invoice: Invoice, note_key: Optional[str]) -> Invoice:
    """The invoice with our amount sealed to the recipient's note key (from its payment code).

    Without a note key (an invoice that did not come from a Rod) nothing is
    committed: the recipient's own invoice names its amount.
    """
    if note_key is None:
        return invoice
    try:
        sealed = commitment.seal(invoice.amount_msat, note_key, invoice.payment_hash)
    except commitment.CommitmentError as e:
        raise AsynclnError(f"cannot commit to the amount: {e}", Code.BAD_PARAMETER)
    return replace(invoice, commitment=sealed)


def private_invoice(offer, payee_key: str, amount_msat: Optional[int]) -> Invoice:
    """A private offer as the payer's Invoice: no bolt11, no secret, the payee key for a name."""
    if amount_msat is None:
        raise AsynclnError("a private offer needs amount_msat", Code.BAD_PARAMETER)
    return Invoice("", offer.payment_hash, "", payee_key, amount_msat, offer.min_final_cltv,
                   offer.expires_at)


def tail_layer(invoice: Invoice, hold: int, tail: bytes,
               report_to: Optional[str] = None) -> Layer:
    """Our layer for the payee's Rod: the amount and hold, and the payee's sealed tail."""
    return Layer(amt_to_forward=invoice.amount_msat,
                 outgoing_cltv_delta=invoice.min_final_cltv_expiry, outgoing_node_id=None,
                 please_poll=True, max_hold_blocks=hold, report_to=report_to, inner_onion=tail,
                 amount_commitment=invoice.commitment)


def chain_layers(invoice: Invoice, first: Tuple[str, Policy], rod: Tuple[str, Policy],
                 hold: int, routing_budget_msat: int, report_to: Optional[str],
                 tail: Optional[bytes] = None) -> Tuple[List[Layer], chain.Leg]:
    """Layers for S (the payer's holder), then R (the payee's Rod), then the recipient.

    S learns only R; R learns the recipient. Each holder's CLTV and fee
    budget leaves the holders after it room to work (asyncln/chain.py).
    Returns the layers and S's leg: what S must receive, and with how much CLTV.
    """
    if hold < 2:
        raise AsynclnError("a chain of two holders needs a hold of at least 2 blocks",
                           Code.HOLD_TOO_SHORT)
    # One hold budget, split: R (always online) waits for the recipient; S waits only
    # for R, so it gets a short part. The two together stay within the payer's hold.
    first_hold = min(max(1, hold // 4), FIRST_HOLDER_MAX_HOLD, first[1].max_hold_blocks)
    holds = [first_hold, min(max(1, hold - first_hold), rod[1].max_hold_blocks)]
    routing = [routing_budget_msat // 2, routing_budget_msat // 2]
    legs = chain.plan_chain([first, rod], invoice.amount_msat, invoice.min_final_cltv_expiry,
                            holds, routing)
    excess = legs[0].cltv_delta_in + chain.LEG_CLTV_BUDGET - MAX_HTLC_CLTV
    if excess > 0:  # no route may carry more CLTV than lightningd's max-locktime-blocks
        if holds[1] - excess < 1:
            raise AsynclnError("a chain of two holders needs more CLTV than an HTLC may carry",
                               Code.HOLD_TOO_SHORT)
        holds[1] -= excess
        legs = chain.plan_chain([first, rod], invoice.amount_msat,
                                invoice.min_final_cltv_expiry, holds, routing)
    to_rod = Layer(amt_to_forward=legs[1].amount_in_msat,
                   outgoing_cltv_delta=legs[1].cltv_delta_in, outgoing_node_id=rod[0],
                   please_poll=True, max_hold_blocks=holds[0], report_to=report_to)
    last = final_layer(invoice, holds[1]) if tail is None else tail_layer(invoice, holds[1], tail)
    return [to_rod, last], legs[0]


def plan(invoice: Invoice, path: List[dict], height: int, hold: int,
         report_to: Optional[str] = None, please_poll: bool = True,
         maxfee_msat: Optional[int] = None,
         packet: Optional[bytes] = None) -> Tuple[List[dict], dict, int]:
    """Build ``createonion`` hops and the ``sendonion`` first hop.

    ``path`` is one ``getroutes`` route to the holding node (v26.06 fields).
    Returns (hops, first_hop, cltv_expiry at the holding node). lightningd
    bases ``first_hop.delay`` on its block height + 1, and so do we. With
    ``packet`` (an asyncln onion, record version 2) the holder's payload
    carries it instead of the clear record. With
    ``maxfee_msat``, a path costing more in total is refused: a second
    ``getroutes`` may find dearer hops than the one the amount was based on.
    """
    total = path[0]["amount_out_msat"]
    if maxfee_msat is not None and total > invoice.amount_msat + maxfee_msat:
        raise AsynclnError(f"the route would cost {total - invoice.amount_msat}msat in fees, "
                           f"above maxfee_msat={maxfee_msat}", Code.MAXFEE_TOO_LOW)
    base = height + 1
    trampoline_hop = path[-1]
    cltv_expiry = base + trampoline_hop["cltv_out"]
    record = TrampolineRecord(
        next_node=invoice.destination, amount_msat=invoice.amount_msat,
        final_cltv_delta=invoice.min_final_cltv_expiry,
        payment_secret=invoice.payment_secret, total_msat=invoice.amount_msat,
        please_poll=please_poll, max_hold_blocks=hold, report_to=report_to,
        route_hints=invoice.route_hints, final_tlvs=commitment.final_tlvs(invoice.commitment))
    hops = []
    for hop, onward in zip(path, path[1:]):
        hops.append({"pubkey": hop["node_id_out"],
                     "payload": _forward_payload(onward, base).hex()})
    if packet is None:
        final = FinalPayload(amt_to_forward=trampoline_hop["amount_out_msat"],
                             outgoing_cltv_value=cltv_expiry, record=record).encode()
    else:
        final = onion.final_payload(trampoline_hop["amount_out_msat"], cltv_expiry, packet)
    hops.append({"pubkey": trampoline_hop["node_id_out"], "payload": final.hex()})
    first_hop = {"id": path[0]["node_id_out"], "amount_msat": total, "delay": path[0]["cltv_out"]}
    return hops, first_hop, cltv_expiry


def _forward_payload(onward: dict, base: int) -> bytes:
    """A BOLT 4 forwarding payload telling a hop to use ``onward``'s channel (getroutes format)."""
    return forward_payload(onward["short_channel_id_dir"].split("/")[0],
                           onward["amount_out_msat"], base + onward["cltv_out"])


def on_status(pay: Pay, status: PaymentStatus, sender: str) -> Optional[Pay]:
    """A PAYMENT_STATUS message; None when it must be ignored.

    "failed" only records the reason: the HTLC's own failure ends the payment.
    """
    if sender != pay.trampoline or status.payment_hash != pay.payment_hash \
            or pay.status not in PAY_OPEN:
        return None
    if status.state == PayState.HELD.value:
        return replace(pay, status=move(PAY_MOVES, pay.status, PayState.HELD),
                       give_up_height=status.give_up_height,
                       next_poll_height=status.next_poll_height)
    return replace(pay, reason=status.reason)


def on_success(pay: Pay, preimage: str) -> Optional[Pay]:
    """Also after FAILED: a preimage is proof of payment, whatever we concluded."""
    if pay.status == PayState.COMPLETE:
        return None
    return replace(pay, status=move(PAY_MOVES, pay.status, PayState.COMPLETE),
                   payment_preimage=preimage, reason=None, lost_since=None)


def on_failure(pay: Pay, partid: Optional[int], groupid: Optional[int],
               failcode: Optional[int], erring_index: Optional[int],
               message: str) -> Optional[Pay]:
    """A failed attempt; None when it is not our current one.

    lightningd omits ``partid`` 0. ``erring_index`` counts our onion's hops
    (sendonion knows no node ids).
    """
    if pay.status not in PAY_OPEN:
        return None
    if pay.partid is not None and (partid or 0, groupid) != (pay.partid, pay.groupid):
        return None  # an earlier attempt's late failure says nothing about this one
    from_trampoline = erring_index == pay.trampoline_index
    if from_trampoline and pay.reason:
        reason = pay.reason  # the holding node told us why
    elif from_trampoline and failcode == failures.TEMPORARY_TRAMPOLINE_FAILURE:
        # The holder's "held" report may not have arrived yet: the code alone says it gave up.
        reason = ("recipient stayed offline: the holding node gave up" if pay.status == PayState.HELD
                  else failures.TRAMPOLINE_FAILURES[failcode])
    elif from_trampoline and failcode == failures.TRAMPOLINE_FEE_OR_EXPIRY_INSUFFICIENT:
        reason = f"a holding node wants more fee or CLTV (retry with a larger budget): {message}"
    elif from_trampoline and failcode == failures.UNKNOWN_NEXT_TRAMPOLINE:
        reason = f"a holding node cannot reach the next holder: {message}"
    else:
        reason = message
    return _fail(pay, reason)


def reconcile(pay: Pay, parts: List[dict], htlc_out: bool, height: int) -> Optional[Pay]:
    """Settle an open payment from ``listsendpays`` parts; None if nothing changed.

    ``htlc_out``: an outgoing HTLC with our hash sits in a channel. After a
    crash lightningd may show a part pending with none (CLN #3916); we wait
    for a later block to be sure before calling it failed.
    """
    if pay.status not in PAY_OPEN:
        return None
    outcome = judge_attempt(parts, pay.partid, htlc_out)
    if isinstance(outcome, Succeeded):
        return on_success(pay, outcome.preimage)
    if isinstance(outcome, Failed):
        return _fail(pay, outcome.reason)
    if isinstance(outcome, InFlight):
        return None if pay.lost_since is None else replace(pay, lost_since=None)
    if pay.lost_since is None:
        return replace(pay, lost_since=height)
    if height > pay.lost_since:
        return _fail(pay, LOST_REASON)
    return None


def _fail(pay: Pay, reason: str) -> Pay:
    return replace(pay, status=move(PAY_MOVES, pay.status, PayState.FAILED), reason=reason)


def may_cancel(pay: Pay) -> None:
    """A payer may ask its holding node to cancel only an open payment that asked for reports.

    The holding node accepts a cancel only from the ``report_to`` of the record.
    """
    if pay.status not in PAY_OPEN:
        raise AsynclnError(f"this payment is already {pay.status.value}", Code.ALREADY_RESOLVED)
    if not pay.report:
        raise AsynclnError("this payment did not ask its holding node for reports, so the "
                           "holding node would not take a cancel from us", Code.UNKNOWN_PAYMENT)


def cancelled(pay: Pay) -> Optional[Pay]:
    """The holding node accepted our cancel: the HTLC's failure will say why."""
    if pay.status not in PAY_OPEN:
        return None
    return replace(pay, reason=CANCELLED_BY_PAYER)


def may_pay_again(existing: Optional[Pay]) -> None:
    """Only a failed payment may be retried: any other could still pay, or has."""
    if existing is not None and existing.status != PayState.FAILED:
        raise AsynclnError(f"this invoice is already {existing.status.value}",
                           Code.PAYMENT_EXISTS)


def restart(pay: Pay, **new_fields) -> Pay:
    """A failed payment's new attempt; ``new_fields`` describe it (partid, groupid, ...)."""
    may_pay_again(pay)
    return replace(pay, status=move(PAY_MOVES, pay.status, PayState.PENDING),
                   payment_preimage=None, reason=None, lost_since=None,
                   give_up_height=None, next_poll_height=None, **new_fields)
