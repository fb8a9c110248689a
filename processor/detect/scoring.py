"""One window's scores: every detector member over every entity row at once (no learning).

WindowDetector (:mod:`processor.detect.window`) calls these once per window: the entities'
windows on the model scale (`model_vectors`), then every member's score against the state
before the window (`score_window`); it judges and learns from the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from processor.config.components import AnomalyConfig
from processor.detect import stats
from processor.detect.banks import EWMABank, RobustBank
from processor.detect.counts import sustained_drops
from processor.detect.entity_state import EntityState
from processor.detect.entity_vector import FEATURES

Feats = tuple[int, int, float, float, float]  # (requests, errors, p50, p95, p99) of a window


@dataclass
class Scores:
    """Member scores of one batch of entity windows (rows of the batch x metrics)."""

    robust: np.ndarray | None
    ewma: np.ndarray | None
    seasonal: np.ndarray | None  # zero where the seasonal members are not warm yet
    references: tuple[np.ndarray, np.ndarray, np.ndarray] | None  # the seasonal slot's, for learning
    errors: np.ndarray
    drop: np.ndarray  # the multi-window drop's score
    drop_observed: np.ndarray  # its mean count per window
    drop_expected: np.ndarray  # and the baseline count
    drop_z: np.ndarray


def model_vectors(cfg: AnomalyConfig, st: EntityState, rows: np.ndarray, feats: list[Feats],
                  n: np.ndarray) -> np.ndarray:
    """The windows on the model scale (see to_model), NaN where a value is no evidence."""
    s = cfg
    tail, nan, log = s.tuning.min_tail_requests, math.nan, math.log
    x = np.full((len(feats), len(FEATURES)), nan)
    for b, (nb, kb, p50, p95, p99) in enumerate(feats):
        if nb < s.min_requests or nb <= 0:
            continue
        # A quantile with fewer than min_tail_requests requests above it is the max, not a p99.
        # math.log, not numpy's: its SIMD log may differ from libm in the last bit.
        x[b, 1] = log(p50) if nb * 0.5 >= tail and p50 > 0.0 else nan
        x[b, 2] = log(p95) if nb * 0.05 >= tail and p95 > 0.0 else nan
        x[b, 3] = log(p99) if nb * 0.01 >= tail and p99 > 0.0 else nan
        x[b, 4] = kb / nb
    # Traffic is judged against the volume the entity normally has: a drop to 3 requests
    # from 600 is the anomaly, so its guard uses the baseline volume, not this window's.
    rate_ok = n >= s.min_baseline_requests
    if not rate_ok.all():
        rate_ok |= st.baseline_volume(rows) >= s.min_baseline_requests
    x[:, 0] = np.where(rate_ok, 2.0 * np.sqrt(n + 0.375), nan)
    return x

def score_window(cfg: AnomalyConfig, st: EntityState, period: int, rows: np.ndarray, x: np.ndarray,
             n: np.ndarray, k: np.ndarray) -> Scores:
    """Every member's score of every row's window against the state before it (no learning)."""
    s = cfg
    x4 = x[:, :4]
    srt = st.robust.sorted_rings(rows) if st.robust is not None else None
    robust = st.robust.score(rows, x4, srt) if st.robust is not None and srt is not None else None
    ewma = st.ewma.score(rows, x4) if st.ewma is not None else None
    seasonal = refs = None
    if st.seasonal is not None:
        seasonal = np.zeros(x4.shape)
        refs = st.seasonal.references(rows)
        warm = st.slots[rows] > period * min(s.tuning.seasonal_lags) + s.tuning.seasonal_grace_windows
        if warm.all():
            seasonal = st.seasonal.score(rows, x4, refs)
        elif warm.any():
            seasonal[warm] = st.seasonal.score(rows[warm], x4[warm], tuple(r[warm] for r in refs))
    errors = st.errors.score(rows, k, n, s.min_requests)
    return Scores(robust, ewma, seasonal, refs, errors, *_drops(cfg, st, rows, x, n, srt))

def _drops(cfg: AnomalyConfig, st: EntityState, rows: np.ndarray, x: np.ndarray, n: np.ndarray,
       srt: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The multi-window traffic drop per row against the traffic member's baseline (robust
    first): (score, observed per-window count, expected count, z); score 0 where none."""
    s = cfg
    size = len(rows)
    score, z = np.zeros(size), np.zeros(size)
    observed, expected = np.full(size, math.nan), np.full(size, math.nan)
    base = st.robust if st.robust is not None else st.ewma
    if base is None or not st.recent_n.shape[1] or s.tuning.traffic_direction == "up":
        return score, observed, expected, z
    # A sum of m windows shows a drop sqrt(m) times more clearly than one, so it waits for a
    # full baseline (robust_windows learned): a scale from the first dozen windows of a
    # low-volume entity called an ordinary three-window dip a 4-sigma drop. Single-window
    # drops are the members' (Student-t read) meanwhile.
    learned = base.size[rows, 0] if isinstance(base, RobustBank) else base.n_learned[rows, 0]
    live = ((st.recent_count[rows] > 0) & np.isfinite(x[:, 0]) & (learned >= s.tuning.robust_windows)
            & (base.n_learned[rows, 0] >= base.grace_period))
    if not live.any():
        return score, observed, expected, z
    med, scale = _rate_baseline(base, rows[live], srt[live, 0] if srt is not None else None)
    with np.errstate(invalid="ignore"):
        dev = (x[live, 0] - med) / scale
    z[live], observed[live], expected[live] = sustained_drops(
        med, dev, x[live, 0], n[live], st.recent_n[rows[live]], st.recent_count[rows[live]], s.tuning.rate_drop_unit)
    for b in np.nonzero(z > 0.0)[0]:  # math's exp, as the scalar detectors score
        score[b] = stats.squash(float(z[b]))
    return score, observed, expected, z

def _rate_baseline(base: RobustBank | EWMABank, rows: np.ndarray, srt: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """(expected, scale) of the traffic member (NaN expected where it has nothing learned)."""
    if isinstance(base, RobustBank) and srt is not None:
        return base.baseline(rows, 0, srt)
    assert isinstance(base, EWMABank)
    mean = np.where(base.n_learned[rows, 0] > 0, base.mean[rows, 0], np.nan)
    return mean, base._scale(base.mean[rows, 0:1], base.var[rows, 0:1])[:, 0]
