"""asyncln: hold Lightning payments at a trampoline until an offline recipient returns."""

__version__ = "0.1.0"
