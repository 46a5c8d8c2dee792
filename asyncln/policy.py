"""A holding node's terms: its asyncln-* options, and what its INFO message tells payers."""

from dataclasses import dataclass, fields
from typing import Mapping, Optional

# Option name -> (Policy field, least allowed value). One table for parsing,
# validation, the manifest's defaults and asyncln-getinfo.
OPTIONS = {
    "asyncln-poll-blocks": ("poll_blocks", 1),
    "asyncln-max-hold-blocks": ("max_hold_blocks", 1),
    "asyncln-safety-blocks": ("safety_blocks", 1),
    "asyncln-spare-blocks": ("spare_blocks", 0),
    "asyncln-fee-base-msat": ("fee_base_msat", 0),
    "asyncln-fee-ppm": ("fee_ppm", 0),
    "asyncln-max-held": ("max_held", 0),
    "asyncln-max-held-msat": ("max_held_msat", 0),
    "asyncln-min-held-msat": ("min_held_msat", 0),
    "asyncln-max-held-per-peer": ("max_held_per_peer", 0),
    "asyncln-max-held-msat-per-peer": ("max_held_msat_per_peer", 0),
}


@dataclass(frozen=True)
class Policy:
    poll_blocks: int = 6
    max_hold_blocks: int = 1008
    safety_blocks: int = 144
    fee_base_msat: int = 1000
    fee_ppm: int = 1000
    max_held: int = 100
    max_held_msat: int = 1_000_000_000
    relay: bool = True
    # Not announced in INFO's even fields: they only limit what one peer may tie up.
    min_held_msat: int = 10_000
    max_held_per_peer: int = 20
    max_held_msat_per_peer: int = 250_000_000
    accept_clear: bool = True       # take version-1 records, readable by every hop's holder
    # CLTV blocks given to the next node above its final CLTV, within our budget, as
    # payers add shadow blocks: a recipient that fulfils and then restarts must not pass
    # its own deadline (cltv_expiry - ceil(cltv_expiry_delta / 2)) before it reconnects.
    spare_blocks: int = 36
    # Announced in INFO, set by the shell: the asyncln onion key and its node-key signature.
    onion_key: Optional[str] = None
    onion_key_sig: Optional[str] = None

    def fee(self, amount_msat: int) -> int:
        """Base plus proportional fee on what the recipient gets, rounded down."""
        return self.fee_base_msat + amount_msat * self.fee_ppm // 1_000_000

    @classmethod
    def from_options(cls, options: Mapping) -> "Policy":
        """Parse lightningd's option values; ValueError names the first bad one."""
        return cls(relay=_bool(options.get("asyncln-relay", True), "asyncln-relay"),
                   accept_clear=_bool(options.get("asyncln-accept-clear", True),
                                      "asyncln-accept-clear"),
                   **int_options(options, OPTIONS))

    def as_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def int_options(options: Mapping, table: Mapping[str, tuple]) -> dict:
    """{field: value} for the integer options given, from a table name -> (field, least)."""
    values = {}
    for name, (field, least) in table.items():
        if name not in options:
            continue
        try:
            value = int(options[name])
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be an integer, not {options[name]!r}")
        if value < least:
            raise ValueError(f"{name} must be at least {least}")
        values[field] = value
    return values


def _bool(value, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "1", "yes"):
        return True
    if str(value).lower() in ("false", "0", "no"):
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


DEFAULTS = Policy()
