"""Look-back durations (`--since 15m`, `?until=2h`) as epoch-millisecond bounds, never before 1970."""

from __future__ import annotations

import time

from processor.config.duration import Duration
from processor.errors import ParamError

_MAX_CHARS = 32  # a duration is a few characters; a long one is an attack on the parser


def parse_lookback(text: str, now_ms: int | None = None, name: str = "since") -> int:
    """'15m' -> epoch ms 15 minutes ago. ParamError (a ValueError), naming ``name``, for text
    that is not a duration or that reaches back before 1970 (it would not fit ClickHouse's
    Int64 milliseconds or DateTime64)."""
    hint = "use a duration like 15m, 2h, 90s"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if len(text) > _MAX_CHARS:
        raise ParamError(f"{name}: {text[:_MAX_CHARS]!r}... is too long ({hint})")
    try:
        back_ms = Duration.parse(text).ms
    except ValueError:
        raise ParamError(f"{name}: invalid {text!r} ({hint})") from None
    if back_ms > now:
        raise ParamError(f"{name}: {text!r} reaches back before 1970 (at most {now // 3_600_000}h)")
    return now - back_ms


def parse_since(text: str, now_ms: int | None = None) -> int:
    return parse_lookback(text, now_ms, "since")
