"""Window arithmetic over integer nanoseconds (pure functions, table-tested), scalar or numpy."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

T = TypeVar("T", int, np.ndarray)
END_OF_TIME_MS = 2**62  # after every window: "no bound" in time ranges and finality


def window_start(t_ns: T, size_ns: int) -> T:
    """Start of the tumbling window holding t (floor to a multiple of size, epoch-aligned)."""
    return t_ns - (t_ns % size_ns)


def watermark(max_event_ns: int, allowed_lateness_ns: int) -> int:
    return max_event_ns - allowed_lateness_ns


def is_closed(start_ns: T, size_ns: int, watermark_ns: int) -> bool | np.ndarray:
    """A window closes once the watermark reaches its end (elementwise for arrays)."""
    return start_ns + size_ns <= watermark_ns
