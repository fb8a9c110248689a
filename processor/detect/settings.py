"""AnomalySettings: detector choice and thresholds of per-window detection (`processors.anomaly`)."""

from __future__ import annotations

from dataclasses import dataclass

from processor.detect import stats

DETECTORS = ("robust", "ewma", "seasonal", "autoencoder")
DAY_MS = 86_400_000
STATE_VERSION = 2  # 2: columnar EntityState


@dataclass(frozen=True)
class AnomalySettings:
    """Detector choice and thresholds (``processors.anomaly`` in config); defaults tuned on seeds != the report's."""

    detectors: tuple[str, ...] = ("robust", "ewma", "seasonal")
    window_size_ms: int = 60_000
    min_requests: int = 20  # below this a window's errors/latency are not evidence
    # Traffic is watched once the usual volume reaches this. On the square-root scale Poisson
    # noise is the same size at 10 as at 1,000 requests; at 20, a service sitting at 19-20
    # calls a minute lost 80% of them for 9 windows unseen (evaluate faults, seed 1, 2+2 days).
    min_baseline_requests: int = 10
    threshold: float = 0.5  # score >= threshold -> a Verdict
    warning: float = 0.5
    critical: float = 0.8
    info: float = 0.3  # members scoring at least this are listed as factors
    grace_windows: int = 10  # learned windows before a detector scores
    robust_windows: int = 60
    ewma_alpha: float = 0.05
    seasonal_lags: tuple[int, ...] = (1, 7)  # in periods (days)
    seasonal_period_windows: int | None = None  # None: windows per day
    traffic_direction: str = "down"  # "both" also flags surges
    adapt_after_windows: int = 30  # a shift flagged this long becomes the new normal
    # A score in [threshold, critical) alarms only if the metric's previous window scored at
    # least confirm_level (0: single windows alarm); a critical score alarms at once.
    confirm_level: float = 0.3
    latency_min_scale: float = 0.05  # latency is scored in log space: sigma never below ~5%
    rate_min_relative_scale: float = 0.05
    volume_history_windows: int = 30  # baseline volume (median) for the traffic guard
    error_windows: int = 60
    error_ratio_unit: float = 0.003  # effect size: an error-ratio rise of this much is 1 sigma
    error_span_windows: int = 3  # errors are also tested summed over the last 2..span windows
    rate_span_windows: int = 3  # and traffic drops (0 or 1: off) ...
    rate_drop_unit: float = 0.1  # ... with this relative drop as 1 sigma of effect size
    min_tail_requests: float = 1.0  # a quantile q is scored when n * (1 - q) >= this (p99: n >= 100)
    seasonal_grace_windows: int = 60  # seasonal members score this long after their first reference
    forget_after_windows: int = 1440  # state of an entity absent this long is dropped

    def __post_init__(self) -> None:
        unknown = set(self.detectors) - set(DETECTORS)
        if unknown or not self.detectors:
            raise ValueError(f"detectors: expected some of {DETECTORS}, got {self.detectors}")
        if not 0.0 <= self.info <= self.threshold <= 1.0 or not self.warning <= self.critical:
            raise ValueError("need 0 <= info <= threshold <= 1 and warning <= critical")
        if self.confirm_level and not self.info <= self.confirm_level <= self.threshold:
            raise ValueError("confirm_level must be 0 or in [info, threshold]")
        stats.check_direction(self.traffic_direction)
        if self.window_size_ms <= 0 or self.min_requests < 0:
            raise ValueError("window_size_ms must be > 0 and min_requests >= 0")

    @property
    def period_windows(self) -> int:
        return self.seasonal_period_windows or max(1, DAY_MS // self.window_size_ms)

    def severity(self, score: float) -> str | None:
        if score >= self.critical:
            return "critical"
        if score >= self.warning:
            return "warning"
        return "info" if score >= self.info else None

