"""`--since 15m` style look-back windows, converted once to an epoch-millisecond bound."""

from __future__ import annotations

import time

from processor.storage.params import SINCE


def parse_since(text: str, now_ms: int | None = None) -> int:
    """'15m' -> epoch ms 15 minutes ago, never before 1970. Raises QueryParamError (a
    ValueError) with a usable message."""
    return int(SINCE.parse(text, int(time.time() * 1000) if now_ms is None else now_ms))
