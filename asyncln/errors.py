"""asyncln's one error vocabulary: every RPC error code, and the one exception that carries one.

The shell turns an :class:`AsynclnError` into an RPC error with its code;
the README's error table is checked against :class:`Code` by a test.
"""

from enum import IntEnum


class Code(IntEnum):
    """RPC error codes: asyncln's own in one range (21xx) so operators can grep for them,
    and JSON-RPC's for a malformed request, as lightningd answers its own commands."""

    INVALID_PARAMS = -32602       # a parameter is missing, unknown or malformed (asyncln/params.py)
    INTERNAL = -32603             # a bug in asyncln: the log says more at `broken`

    UNKNOWN_PAYMENT = 2101        # no held payment with that hash
    ATTEMPT_IN_FLIGHT = 2102      # cancel refused: an outgoing attempt may still succeed
    ALREADY_RESOLVED = 2103       # the payment is already complete or failed
    MAXFEE_TOO_LOW = 2111         # maxfee_msat does not cover the trampoline's fee
    HOLD_TOO_SHORT = 2112         # max_hold_blocks below 1, or the invoice expires first
    BAD_PARAMETER = 2113          # an RPC parameter has the wrong type or range
    NO_TRAMPOLINE = 2121          # no usable trampoline
    TRAMPOLINE_TERMS_UNKNOWN = 2122  # asked for its terms; retry shortly
    INVOICE_UNUSABLE = 2123       # not a usable BOLT11 invoice
    PAYMENT_EXISTS = 2124         # this invoice is already being paid or was paid
    SEND_FAILED = 2126            # no route to the trampoline, or sendonion failed
    DEPOSIT_REFUSED = 2131        # the Rod refuses this deposit (stranger, limits, bad invoice)
    UNKNOWN_RECIPIENT = 2132      # the Rod keeps no invoices for this recipient
    POOL_EMPTY = 2133             # the Rod has no unexpired invoice that fits this amount
    RATE_LIMITED = 2134           # too many invoice requests from this requester; retry later
    BAD_CODE = 2135               # the payment code is malformed, unknown or badly signed
    NO_ANSWER = 2136              # the Rod or trampoline did not answer in time, or is unreachable
    INVOICE_MISMATCH = 2137       # the fetched invoice is not B's, expired, or the wrong amount
    HASH_REUSED = 2138            # the fetched invoice's hash was used before
    NOTE_REFUSED = 2139           # the note is too long, or cannot be stored or opened
    LSP_REFUSED = 2141            # the peer answered our LSPS request with an error (bLIP-50/55)


class AsynclnError(Exception):
    """A request asyncln refuses, with the RPC code that says why."""

    def __init__(self, message: str, code: Code):
        super().__init__(message)
        self.code = code
