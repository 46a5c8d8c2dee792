"""asyncln's one error vocabulary: every RPC error code, and the one exception that carries one.

The shell turns an :class:`AsynclnError` into an RPC error with its code;
the README's error table is checked against :class:`Code` by a test.
"""

from enum import IntEnum


class Code(IntEnum):
    """RPC error codes, in one range (21xx) so operators can grep for them."""

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


class AsynclnError(Exception):
    """A request asyncln refuses, with the RPC code that says why."""

    def __init__(self, message: str, code: Code):
        super().__init__(message)
        self.code = code
