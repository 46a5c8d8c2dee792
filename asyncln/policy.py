"""A holding node's terms: its asyncln-* options, and what its INFO message tells payers."""

from dataclasses import dataclass


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

    def fee(self, amount_msat: int) -> int:
        """Base plus proportional fee on what the recipient gets, rounded down."""
        return self.fee_base_msat + amount_msat * self.fee_ppm // 1_000_000
