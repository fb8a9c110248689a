"""`--since 15m` style look-back windows, converted once to an epoch-millisecond bound."""

from __future__ import annotations

import time

from processor.config.duration import Duration


def parse_since(text: str, now_ms: int | None = None) -> int:
    """'15m' -> epoch ms 15 minutes ago. Raises ValueError with a usable message."""
    try:
        d = Duration.parse(text)
    except Exception as exc:
        raise ValueError(f"invalid --since {text!r}: use a duration like 15m, 2h, 90s") from exc
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return now - d.ms
