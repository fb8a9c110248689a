"""The one health definition (`processors.windows.health`) and the p95 baselines it compares with."""

from __future__ import annotations

import math
import statistics
from collections import deque

from processor.config.components import HealthConfig


def classify(rules: HealthConfig, calls: int, errors: int, p95_ms: float,
             baseline_p95_ms: float | None) -> str:
    """insufficient_data, critical, degraded or healthy: the worse of the error and latency rules."""
    if calls < rules.min_requests:
        return "insufficient_data"
    rate = errors / calls if calls else 0.0
    ratio = (p95_ms / baseline_p95_ms) if baseline_p95_ms and not math.isnan(p95_ms) else 0.0
    if rate >= rules.error_rate_critical or ratio >= rules.latency_critical_ratio:
        return "critical"
    if rate >= rules.error_rate_degraded or ratio >= rules.latency_degraded_ratio:
        return "degraded"
    return "healthy"


class LatencyBaselines:
    """Per service, the p95 of its last `baseline_windows` judged windows (the latency rules' 1x)."""

    def __init__(self, windows: int) -> None:
        self.windows = windows
        self._p95: dict[str, deque[tuple[int, float]]] = {}

    def baseline(self, service: str, before_ms: int) -> float | None:
        """Median p95 of the service's windows that start before `before_ms` (None: no history)."""
        hist = [p for ws, p in self._p95.get(service, ()) if ws < before_ms]
        return statistics.median(hist) if hist else None

    def add(self, service: str, window_start_ms: int, p95_ms: float) -> None:
        dq = self._p95.setdefault(service, deque(maxlen=self.windows))
        if math.isnan(p95_ms) or any(ws == window_start_ms for ws, _ in dq):
            return
        dq.append((window_start_ms, p95_ms))
