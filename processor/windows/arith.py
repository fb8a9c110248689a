"""Window arithmetic over integer nanoseconds (pure functions, table-tested)."""

from __future__ import annotations

import numpy as np


def window_start(t_ns: np.ndarray | int, size_ns: int) -> np.ndarray | int:
    """Start of the tumbling window holding t (floor to a multiple of size, epoch-aligned)."""
    return t_ns - (t_ns % size_ns)


def watermark(max_event_ns: int, allowed_lateness_ns: int) -> int:
    return max_event_ns - allowed_lateness_ns


def is_closed(start_ns: int, size_ns: int, watermark_ns: int) -> bool:
    """A window closes once the watermark reaches its end."""
    return start_ns + size_ns <= watermark_ns
