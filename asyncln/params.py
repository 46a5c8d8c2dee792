"""RPC parameters checked for form, as lightningd checks its own, before any state is looked at.

A malformed parameter gets JSON-RPC's invalid-params code (-32602, what
lightningd answers for its own commands), a message naming the parameter and
what would be accepted, and changes nothing. Whether a well-formed value is
acceptable (a fee too low, a Rod that is not mine) is the command's business,
with asyncln's own codes.
"""

import re
from decimal import Decimal
from typing import Callable, Dict, Optional

from .errors import AsynclnError, Code

_AMOUNT = re.compile(r"^(\d+)(msat|sat)?$")
_BTC = re.compile(r"^(\d+)(?:\.(\d{1,11}))?btc$")
_HEX32 = re.compile(r"^[0-9a-fA-F]{64}$")
_NODE_ID = re.compile(r"^0[23][0-9a-fA-F]{64}$")
_MSAT_PER_BTC = 100_000_000_000


def _bad(name: str, value, wanted: str) -> AsynclnError:
    return AsynclnError(f"{name}: {value!r} is not {wanted}", Code.INVALID_PARAMS)


def amount(name: str, value) -> int:
    """msat, in the forms lightning-cli accepts: 1000, "1000msat", "1sat", "0.00000001btc"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        match = _AMOUNT.match(value)
        if match:
            return int(match.group(1)) * (1000 if match.group(2) == "sat" else 1)
        match = _BTC.match(value)
        if match:
            return int(Decimal(value.removesuffix("btc")) * _MSAT_PER_BTC)
    raise _bad(name, value, 'an amount (1000, "1000msat", "1sat" or "0.00000001btc")')


def integer(name: str, value) -> int:
    """A non-negative whole number (a JSON number, or its decimal string)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    raise _bad(name, value, "a non-negative integer")


def boolean(name: str, value) -> bool:
    """true or false, nothing else: "maybe" must not quietly pick the less private format."""
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    raise _bad(name, value, "true or false")


def payment_hash(name: str, value) -> str:
    if isinstance(value, str) and _HEX32.match(value):
        return value.lower()
    raise _bad(name, value, "a payment hash (64 hex characters)")


def node_id(name: str, value) -> str:
    if isinstance(value, str) and _NODE_ID.match(value):
        return value.lower()
    raise _bad(name, value, "a node id (66 hex characters starting 02 or 03)")


def text(name: str, value) -> str:
    """A string; what it must say (a code, an invoice) is the command's to judge."""
    if isinstance(value, str):
        return value
    raise _bad(name, value, "a string")


Checker = Callable[[str, object], object]


def check(kinds: Dict[str, Checker], params: Dict[str, Optional[object]]) -> Dict[str, object]:
    """``params`` with every given (non-None) value checked and normalised by its kind."""
    return {name: value if value is None else kinds[name](name, value)
            for name, value in params.items()}
