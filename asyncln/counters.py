"""What ``asyncln-getinfo`` reports as ``counters``: pure sums over stored records.

Computed afresh from the holder's records and the Rod's pools on every call,
so they survive a restart with no running totals to keep consistent. They
count what is still stored: a completed or failed record is forgotten once
its HTLC expired (lightningd can no longer replay it), and a served hash
once its invoice expired, so every count is "since the oldest kept record".
"""

import math
import statistics
from typing import Iterable, List

from . import failures
from .hold import CANCELLED_BY_PAYER, GAVE_UP, HeldPayment
from .rod import Pool
from .states import HOLD_OPEN, HoldState

# Why a held payment was failed back: a small fixed vocabulary, derived
# from the record's last_error (the reason hold.py's _fail was given).
RECIPIENT_OFFLINE = "recipient_offline"        # gave up at the deadline, or unreachable and no polling
CANCELLED = "cancelled"                        # by the payer, or by our operator (asyncln-cancel)
REFUSED_BY_RECIPIENT = "refused_by_recipient"  # the recipient itself failed the payment
NEXT_HOLDER_FAILED = "next_holder_failed"      # the next holder gave up, wanted more, or is unknown
OTHER = "other"
REASONS = (RECIPIENT_OFFLINE, CANCELLED, REFUSED_BY_RECIPIENT, NEXT_HOLDER_FAILED, OTHER)
LATENCY_WINDOW = 100  # the deliveries wake_to_paid looks at, latest first


def failure_reason(held: HeldPayment) -> str:
    """The vocabulary word for a failed record's last_error (see hold.Relay's _fail callers)."""
    error = held.last_error or ""
    if error == GAVE_UP or error.startswith("recipient unreachable"):
        return RECIPIENT_OFFLINE
    if error == CANCELLED_BY_PAYER or error.startswith("cancelled"):
        return CANCELLED
    if error.startswith("recipient refused"):
        return REFUSED_BY_RECIPIENT
    if held.record.next_onion is not None and (
            error.startswith("unknown next holder")
            or held.failure_message not in (None, failures.temporary_trampoline_failure())):
        return NEXT_HOLDER_FAILED  # a version-2 record's next holder answered, or never appeared
    return OTHER


def fee_earned(held: HeldPayment) -> int:
    """What a delivered payment left us: its incoming HTLC less what we sent on.

    ``sent_msat`` is the first hop's amount of the attempt last sent (route fees to
    hops after us included); a record from before it was stored counts the
    amount the next node received, so route fees are not subtracted there.
    """
    sent = held.sent_msat if held.sent_msat is not None else held.record.amount_msat
    return held.incoming.amount_msat - sent


def wake_to_paid(delivered: Iterable[HeldPayment]) -> dict:
    """Median and p90 (nearest rank) seconds from sending the attempt that delivered
    (hold.HeldPayment.woken_at) to its preimage, over the latest LATENCY_WINDOW
    deliveries that carry both times (records from before they were stored do not)."""
    timed = sorted((h.paid_at, h.woken_at) for h in delivered
                   if h.paid_at is not None and h.woken_at is not None)[-LATENCY_WINDOW:]
    # A wall clock stepped back between the two stamps must not report a negative time.
    seconds: List[float] = sorted(max(0.0, paid - woken) for paid, woken in timed)
    if not seconds:
        return {"deliveries": 0, "median_seconds": None, "p90_seconds": None}
    return {"deliveries": len(seconds),
            "median_seconds": round(statistics.median(seconds), 3),
            "p90_seconds": round(seconds[math.ceil(0.9 * len(seconds)) - 1], 3)}


def counters(held: Iterable[HeldPayment], pools: Iterable[Pool]) -> dict:
    held = list(held)
    pools = list(pools)
    failed = [h for h in held if h.state == HoldState.FAILED]
    delivered = [h for h in held if h.state == HoldState.COMPLETE]
    reasons = [failure_reason(h) for h in failed]
    return {
        "payments_held": len(held),  # every record was held once
        "payments_open": sum(h.state in HOLD_OPEN for h in held),
        "payments_delivered": len(delivered),
        "payments_failed_back": len(failed),
        "failed_back_by_reason": {r: reasons.count(r) for r in REASONS},
        "held_now_msat": sum(h.incoming.amount_msat for h in held if h.state in HOLD_OPEN),
        "fees_earned_msat": sum(map(fee_earned, delivered)),
        "rod_invoices_served": sum(len(p.served) for p in pools),
        "rod_notes_kept": sum(len(p.notes) for p in pools),
        "wake_to_paid": wake_to_paid(delivered),
    }
