"""holder_shell.settle_memory freezes what lives; it must not freeze what is already dead."""

import gc
import weakref

from asyncln import holder_shell


class Node:
    pass


def test_settle_memory_frees_old_dead_cycles_first():
    """A reference cycle that reached the oldest generation and then died (say, an error's
    frames kept for a while) is garbage when a slice ends: freezing it would leak it for
    good, once per poll round, and only the cyclic collector could ever free it."""
    cycle = Node()
    cycle.me = cycle
    alive = weakref.ref(cycle)
    gc.collect()      # it survives a full collection: now in the oldest generation
    del cycle         # dead, but only the cyclic collector can see it
    try:
        holder_shell.settle_memory()
        gc.collect()
        assert alive() is None
    finally:
        gc.unfreeze()
