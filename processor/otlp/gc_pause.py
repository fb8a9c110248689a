"""Pausing Python's cyclic garbage collector while a decoder allocates many short-lived objects."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the block with the cyclic GC off (restored after, if it was on).

    json.loads and upb wrappers allocate thousands of container objects per payload; each
    allocation burst triggers collections that scan them all and free nothing (they hold no
    cycles and die by reference counting). Measured: OTLP/JSON decoding is ~1.5x faster.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
