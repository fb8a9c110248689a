"""EntityState: every tracked entity's detector state as columns (one row per entity), for WindowDetector.

Rows are appended as entities appear, reset when an entity comes back after
``forget_after_windows`` without data, and freed for the next new entity when one has had
no row for that long; arrays grow by doubling. The per-metric detectors live in banks
(:mod:`processor.detect.banks`, :class:`~processor.detect.counts.ErrorBank`); this module
owns the bookkeeping around them: the window clock, gaps, the refusal counters of the
Thresholded convention, each metric's previous score (confirmation), the recent request
counts of the multi-window drop test and the baseline volume of the traffic guard.
"""

from __future__ import annotations

import numpy as np

from processor.config.components import AnomalyConfig
from processor.detect.banks import (
    EWMABank,
    RobustBank,
    RowColumns,
    SeasonalBank,
    directions,
    sorted_median,
)
from processor.detect.counts import ErrorBank
from processor.detect.entity_vector import FEATURES, LATENCY, RATE

SCORED = (RATE, *LATENCY)  # the metrics the banks watch, on the model scale; errors are counts
NO_WINDOW = -(1 << 62)  # last_ms of an entity that has seen no window yet


class EntityState(RowColumns):
    """Columnar state of every tracked entity; see the module docstring."""

    _fills = {"slots": 0, "refused": 0, "prev": 0.0, "prev_vector": 0.0, "volumes": np.nan, "volume_pos": 0,
              "volume_size": 0, "recent_n": 0, "recent_count": 0}

    def __init__(self, cfg: AnomalyConfig, period_windows: int) -> None:
        s = self.cfg = cfg
        self.index: dict[tuple[str, str], int] = {}  # insertion order = order of first sight
        self.last_ms: list[int] = []  # per row: the last window observed (rows and absences)
        self.last_seen_ms: list[int] = []  # per row: the last window the entity had a row in
        self.free: list[int] = []  # rows of forgotten entities, reused by the next new ones
        self.capacity = 0
        sign = directions([s.tuning.traffic_direction if m == RATE else "up" for m in SCORED])
        # Floors on the model scale (see to_model): a relative change r of the count is r/2 of
        # its square root; latency's log scale takes an absolute floor.
        lo = np.array([0.0 if m == RATE else s.tuning.latency_min_scale for m in SCORED])
        rel = np.array([s.tuning.rate_min_relative_scale / 2 if m == RATE else 0.0 for m in SCORED])
        self.robust = (RobustBank(s.tuning.robust_windows, sign, s.grace_windows, lo, rel)
                       if "robust" in s.detectors else None)
        self.ewma = EWMABank(s.tuning.ewma_alpha, sign, s.grace_windows, lo, rel) if "ewma" in s.detectors else None
        self.seasonal = (SeasonalBank(period_windows, s.tuning.seasonal_lags, 1, sign, lo, rel)
                         if "seasonal" in s.detectors else None)
        self.errors = ErrorBank(s.tuning.error_windows, s.grace_windows, s.tuning.error_ratio_unit, s.tuning.error_span_windows)
        self.slots = np.zeros(0, dtype=np.int64)  # windows since the row was (re)set, gaps included
        self.refused = np.zeros((0, len(FEATURES)), dtype=np.int64)  # consecutive refused windows
        self.prev = np.zeros((0, len(FEATURES)))  # each metric's score in its last assessed window
        self.prev_vector = np.zeros(0)  # the autoencoder's score in its last scored window
        self.volumes = np.full((0, s.tuning.volume_history_windows), np.nan)  # learned request counts
        self.volume_pos = np.zeros(0, dtype=np.int64)
        self.volume_size = np.zeros(0, dtype=np.int64)
        span = max(s.tuning.rate_span_windows - 1, 0)
        self.recent_n = np.zeros((0, span), dtype=np.int64)  # last windows' counts, newest last
        self.recent_count = np.zeros(0, dtype=np.int64)

    def banks(self) -> list[RobustBank | EWMABank | SeasonalBank | ErrorBank]:
        return [b for b in (self.robust, self.ewma, self.seasonal, self.errors) if b is not None]

    # -- rows -------------------------------------------------------------------------------------
    def add(self, key: tuple[str, str]) -> int:
        if self.free:
            row = self.free.pop()
        else:
            row = len(self.last_ms)
            if row >= self.capacity:
                self._grow(max(16, 2 * self.capacity))
            self.last_ms.append(NO_WINDOW)
            self.last_seen_ms.append(NO_WINDOW)
        self.index[key] = row
        self.reset(row)
        return row

    def forget(self, key: tuple[str, str]) -> None:
        """Stop tracking an entity; its row goes to the next new one."""
        self.free.append(self.index.pop(key))

    def _grow(self, capacity: int) -> None:
        for bank in self.banks():
            bank.grow(capacity)
        super().grow(capacity)
        self.capacity = capacity

    def reset(self, row: int) -> None:
        """A fresh, unfitted entity in this row."""
        for bank in self.banks():
            bank.reset(row)
        super().reset(row)
        self.last_ms[row] = self.last_seen_ms[row] = NO_WINDOW

    def gap(self, row: int, windows: int) -> None:
        """Windows with no data at all (not even a zero row): unknown, not zero traffic. The
        seasonal clock records them so the day/week phase holds; multi-window sums must not span them."""
        if self.seasonal is not None:
            self.seasonal.gap(row, windows)
        self.recent_count[row] = 0
        one = np.array([row])
        zero = np.zeros(1, dtype=np.int64)
        for _ in range(min(windows, self.errors.span)):
            self.errors.push(one, zero, zero, np.zeros(1, dtype=bool))
        self.slots[row] += windows

    # -- columns ----------------------------------------------------------------------------------
    def baseline_volume(self, rows: np.ndarray) -> np.ndarray:
        """Median of each row's last learned request counts (0 when none)."""
        size = self.volume_size[rows]
        med = sorted_median(np.sort(self.volumes[rows], axis=1), size)
        return np.where(size > 0, med, 0.0)

    def push_volume(self, rows: np.ndarray, n: np.ndarray) -> None:
        if not len(rows):
            return
        p = self.volume_pos[rows]
        self.volumes[rows, p] = n
        self.volume_pos[rows] = (p + 1) % self.volumes.shape[1]
        self.volume_size[rows] = np.minimum(self.volume_size[rows] + 1, self.volumes.shape[1])

    def push_recent(self, rows: np.ndarray, n: np.ndarray) -> None:
        if not self.recent_n.shape[1]:
            return
        self.recent_n[rows] = np.roll(self.recent_n[rows], -1, axis=1)
        self.recent_n[rows, -1] = n
        self.recent_count[rows] = np.minimum(self.recent_count[rows] + 1, self.recent_n.shape[1])
