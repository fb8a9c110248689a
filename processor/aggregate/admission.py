"""Which span end times stage 1 accepts (bounded by the wall clock, ahead and behind), and
how far back a late one may still correct its window.

Event time drives everything (watermarks, window closing, pairing expiry), and it comes
from clients: one span dated next year would close every window of its partition and,
through the stored watermark, make everything after it late across restarts. So a span
must end no later than `max_future_skew` ahead of the wall clock and no longer than
`max_span_age` ago (capped at the ClickHouse TTL, past which its row would be deleted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from processor.config import Config
from processor.otlp.batch import SpanBatch


@dataclass(frozen=True)
class Admitted:
    spans: SpanBatch
    future: int  # rejected: ending too far ahead of the wall clock
    too_old: int  # rejected: ending too long ago


class EventTimeBounds:
    def __init__(self, config: Config) -> None:
        self.future_ns = config.windows.max_future_skew.ns
        age = config.windows.max_span_age.ns
        if config.clickhouse is not None and config.clickhouse.ttl.ns > 0:
            age = min(age, config.clickhouse.ttl.ns)
        self.age_ns = age

    def limits(self, now_s: float) -> tuple[int, int]:
        """(oldest, latest) span end accepted at wall time ``now_s``, inclusive, in ns."""
        now_ns = int(now_s * 1e9)
        return now_ns - self.age_ns, now_ns + self.future_ns

    def admit(self, spans: SpanBatch, now_s: float) -> Admitted:
        if not len(spans):
            return Admitted(spans, 0, 0)
        lo, hi = self.limits(now_s)
        future = spans.end_ns > hi
        old = spans.end_ns < lo
        if not (future.any() or old.any()):
            return Admitted(spans, 0, 0)
        return Admitted(spans.take(~(future | old)), int(future.sum()), int(old.sum()))

    def latest_end(self, ends: np.ndarray, now_s: float) -> int:
        """The latest admissible end among ``ends`` (0 if none): the progress they show."""
        lo, hi = self.limits(now_s)
        ok = ends[(ends >= lo) & (ends <= hi)]
        return int(ok.max()) if ok.size else 0


def correction_horizon_ns(config: Config) -> int:
    """How far back (event time) a late span may still correct its window: the configured
    horizon, capped at the ClickHouse TTL (older rows are deleted)."""
    horizon = config.windows.correction_horizon.ns
    if config.clickhouse is not None and config.clickhouse.ttl.ns > 0:
        horizon = min(horizon, config.clickhouse.ttl.ns)
    return horizon
