"""Detector banks: the rolling median/MAD, EWMA and seasonal detectors over many entities x metrics.

A bank holds the state of one detector per (entity row, metric) as arrays and scores or
learns a batch of rows in a handful of numpy calls (the README has the cost per
entity-window). They are the only implementation: the scalar detectors RobustBaseline, EWMA
and Seasonal are one-row views of them, and ``tests/unit/test_detect_banks.py`` holds them
bit for bit to plain per-value reference implementations (``tests/unit/reference/``) on
random streams. Exactness comes from a two-step path: most values sit within ``z0`` floors
of the baseline and score 0 whatever the spread, which is decided here with exact
arithmetic (+, -, *, /, sqrt, max, sort); the few that pass go through the scalar functions
of :mod:`processor.detect.stats`, so transcendental functions (log, exp) are never taken
from numpy's SIMD loops, whose last bits can differ from libm's.

Directions are per metric (``+1`` up, ``-1`` down, ``0`` both); rows must be unique within a
batch (fancy-index assignment). Rows are allocated by the caller (:meth:`grow`) and reset to
an unfitted detector with :meth:`reset`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from processor.detect import stats
from processor.detect.base import NO_EXPLANATION, Explanation

SIGN = {"up": 1.0, "down": -1.0, "both": 0.0}
ONE_ROW = np.zeros(1, dtype=np.int64)  # the row of a bank that backs one scalar detector


def directions(names: Sequence[str]) -> np.ndarray:
    """Per-metric direction names -> the sign vector the banks take."""
    for d in names:
        stats.check_direction(d)
    return np.array([SIGN[d] for d in names])


def _directed(z: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """stats.directed per column: sign * z, or |z| where the sign is 0 ("both")."""
    return np.where(sign == 0.0, np.abs(z), z * sign)


def _direction_name(sign: float) -> str:
    return "up" if sign > 0 else "down" if sign < 0 else "both"


def _grown(a: np.ndarray, capacity: int, fill: float) -> np.ndarray:
    out = np.full((capacity, *a.shape[1:]), fill, dtype=a.dtype)
    out[: len(a)] = a
    return out


def sorted_median(s: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Median of the first ``size`` values of each sorted last-axis row (NaN where size is 0)."""
    w = s.shape[-1]
    flat = np.ascontiguousarray(s).reshape(-1)
    base = np.arange(0, flat.size, w).reshape(size.shape)
    a = flat[base + np.maximum(size - 1, 0) // 2]
    b = flat[base + np.minimum(size // 2, w - 1)]
    return np.where(size > 0, (a + b) * 0.5, np.nan)


class RowColumns:
    """Per-row arrays listed in ``_fills`` (attribute -> value of a fresh row): grown and reset together.

    """

    _fills: dict[str, float] = {}

    def grow(self, capacity: int) -> None:
        for name, fill in self._fills.items():
            setattr(self, name, _grown(getattr(self, name), capacity, fill))

    def reset(self, row: int) -> None:
        for name, fill in self._fills.items():
            getattr(self, name)[row] = fill


class _Floors(RowColumns):
    """The scale floors and score shape shared by the banks (one value per metric)."""

    def __init__(self, sign: np.ndarray, min_scale: np.ndarray, min_relative_scale: np.ndarray,
                 z0: float, tau: float) -> None:
        if z0 < 0.0:
            raise ValueError("banks need z0 >= 0 (the zero-score shortcut relies on it)")
        self.sign = np.asarray(sign, dtype=np.float64)
        self.min_scale = np.asarray(min_scale, dtype=np.float64)
        self.min_relative_scale = np.asarray(min_relative_scale, dtype=np.float64)
        self.z0, self.tau = z0, tau
        self.names = [_direction_name(s) for s in self.sign]

    def floor(self, level: np.ndarray) -> np.ndarray:
        """stats.floor_scale without the spread: max(min_scale, rel * |level|, TINY)."""
        return np.maximum(np.maximum(self.min_scale, self.min_relative_scale * np.abs(level)), stats.TINY_SCALE)


class RobustBank(_Floors):
    """The rolling median/MAD per (row, metric): rings of ``window`` values.

    :class:`~processor.detect.robust.RobustBaseline` is one row of it."""

    _fills = {"ring": np.nan, "pos": 0, "size": 0, "n_learned": 0}

    def __init__(self, window: int, sign: np.ndarray, grace_period: int, min_scale: np.ndarray,
                 min_relative_scale: np.ndarray, z0: float = stats.Z0, tau: float = stats.TAU) -> None:
        super().__init__(sign, min_scale, min_relative_scale, z0, tau)
        self.window, self.grace_period = window, grace_period
        m = len(self.sign)
        self.ring = np.full((0, m, window), np.nan)
        self.pos = np.zeros((0, m), dtype=np.int64)
        self.size = np.zeros((0, m), dtype=np.int64)
        self.n_learned = np.zeros((0, m), dtype=np.int64)


    def sorted_rings(self, rows: np.ndarray) -> np.ndarray:
        """(rows, metrics, window) ring contents ascending, unfilled slots (NaN) last."""
        return np.sort(self.ring[rows], axis=2)

    def score(self, rows: np.ndarray, x: np.ndarray, srt: np.ndarray) -> np.ndarray:
        """score_one of x (rows, metrics) per row and metric; ``srt`` from :meth:`sorted_rings`."""
        size = self.size[rows]
        med = sorted_median(srt, size)
        d = _directed((x - med) / self.floor(med), self.sign)
        live = (self.n_learned[rows] >= self.grace_period) & (size > 0) & np.isfinite(x)
        out = np.zeros(x.shape)
        i, j = np.nonzero(live & ~(d <= self.z0))
        if len(i):
            m, scale = self.scales(srt[i, j], size[i, j], j)
            t = ((x[i, j] - m) / scale).tolist()
            for c, (b, col, dof) in enumerate(zip(i.tolist(), j.tolist(), (size[i, j] - 1).tolist(), strict=True)):
                out[b, col] = stats.squash_t(t[c], dof, self.names[col], self.z0, self.tau)
        return out

    def scales(self, srt: np.ndarray, size: np.ndarray, metric: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(median, floored robust scale) of sorted rings (n, window) holding ``size`` values, of
        the given metrics: :func:`stats.median_mad_sorted` then the floors, row by row in numpy."""
        med = sorted_median(srt, size)
        dev = np.sort(np.abs(srt - med[:, None]), axis=1)
        mad = sorted_median(dev, size)
        scale = stats.MAD_TO_SIGMA * mad
        for i in np.nonzero(~(mad > 0.0) & (size > 0))[0]:  # MAD 0: the mean-deviation fallback
            scale[i] = stats.median_mad_sorted(srt[i, : size[i]])[1]
        floor = np.maximum(np.maximum(self.min_scale[metric], self.min_relative_scale[metric] * np.abs(med)),
                           stats.TINY_SCALE)
        return med, np.maximum(scale, floor)

    def _stats(self, srt_row: np.ndarray, size: int, metric: int) -> tuple[float, float]:
        med, scale = stats.median_mad_sorted(srt_row[:size])
        return med, stats.floor_scale(scale, med, float(self.min_scale[metric]),
                                      float(self.min_relative_scale[metric]))

    def baseline(self, rows: np.ndarray, metric: int, srt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(median, floored scale) of one metric for each row (vectorised :meth:`explain` state);
        ``srt`` is that metric's sorted rings, (rows, window)."""
        return self.scales(srt, self.size[rows, metric], np.full(len(rows), metric))

    def explain(self, row: int, metric: int, x: float) -> Explanation:
        size = int(self.size[row, metric])
        if size == 0:
            return NO_EXPLANATION
        med, scale = self._stats(np.sort(self.ring[row, metric]), size, metric)
        return Explanation(med, (x - med) / scale)

    def learn(self, rows: np.ndarray, x: np.ndarray) -> None:
        """learn_one per row and metric; non-finite values are not learned."""
        i, j = np.nonzero(np.isfinite(x))
        r = rows[i]
        p = self.pos[r, j]
        self.ring[r, j, p] = x[i, j]
        self.pos[r, j] = (p + 1) % self.window
        self.size[r, j] = np.minimum(self.size[r, j] + 1, self.window)
        self.n_learned[r, j] += 1


class EWMABank(_Floors):
    """The EW mean and variance per (row, metric): two floats each.

    :class:`~processor.detect.ewma.EWMA` is one row of it."""

    _fills = {"mean": 0.0, "var": 0.0, "n_learned": 0}

    def __init__(self, alpha: float, sign: np.ndarray, grace_period: int, min_scale: np.ndarray,
                 min_relative_scale: np.ndarray, z0: float = stats.Z0, tau: float = stats.TAU) -> None:
        super().__init__(sign, min_scale, min_relative_scale, z0, tau)
        self.alpha, self.grace_period = alpha, grace_period
        m = len(self.sign)
        self.mean = np.zeros((0, m))
        self.var = np.zeros((0, m))
        self.n_learned = np.zeros((0, m), dtype=np.int64)


    def _scale(self, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        return np.maximum(np.sqrt(var), self.floor(mean))

    def score(self, rows: np.ndarray, x: np.ndarray) -> np.ndarray:
        mean, n = self.mean[rows], self.n_learned[rows]
        t = (x - mean) / self._scale(mean, self.var[rows])
        live = (n >= self.grace_period) & (n > 0) & np.isfinite(x)
        out = np.zeros(x.shape)
        for i, j in zip(*np.nonzero(live & ~(_directed(t, self.sign) <= self.z0)), strict=True):
            out[i, j] = stats.squash_t(float(t[i, j]), int(n[i, j]) - 1, self.names[j], self.z0, self.tau)
        return out

    def explain(self, row: int, metric: int, x: float) -> Explanation:
        if self.n_learned[row, metric] == 0:
            return NO_EXPLANATION
        mean = float(self.mean[row, metric])
        scale = stats.floor_scale(math.sqrt(float(self.var[row, metric])), mean, float(self.min_scale[metric]),
                                  float(self.min_relative_scale[metric]))
        return Explanation(mean, (x - mean) / scale)

    def learn(self, rows: np.ndarray, x: np.ndarray) -> None:
        i, j = np.nonzero(np.isfinite(x))
        r = rows[i]
        v, mean, var = x[i, j], self.mean[r, j], self.var[r, j]
        n = self.n_learned[r, j] + 1
        d = v - mean
        warm = n <= max(self.grace_period, 1)
        # Warm-up: exact mean and population variance (Welford); then exponential forgetting.
        wmean = mean + d / n
        wvar = var + (d * (v - wmean) - var) / n
        emean = mean + self.alpha * d
        evar = (1.0 - self.alpha) * (var + self.alpha * d * d)
        self.mean[r, j] = np.where(warm, wmean, emean)
        self.var[r, j] = np.where(warm, wvar, evar)
        self.n_learned[r, j] = n


class SeasonalBank(_Floors):
    """The same-phase comparison per (row, metric) (:class:`~processor.detect.seasonal.Seasonal` is one
    row of it); the metrics of a row share one clock (every slot pushes a value or a gap for each), so position and size are per row."""

    _fills = {"pos": 0, "size": 0, "resid": np.nan, "n_resid": 0}  # and the ring: see grow

    def __init__(self, period: int, lags: tuple[int, ...], half_width: int, sign: np.ndarray,
                 min_scale: np.ndarray, min_relative_scale: np.ndarray, z0: float = stats.Z0,
                 tau: float = stats.TAU, alpha: float = 0.05, resid_cap: float = 4.0) -> None:
        super().__init__(sign, min_scale, min_relative_scale, z0, tau)
        self.period, self.lags, self.half_width = period, tuple(lags), half_width
        self.alpha, self.resid_cap = alpha, resid_cap
        self.agos = np.array(sorted({lag * period - j for lag in self.lags
                                     for j in range(-half_width, half_width + 1)}), dtype=np.int64)
        self.capacity = int(self.agos[-1])
        m = len(self.sign)
        # Slot-major (slot, row, metric): a window's values of every row sit together, so the
        # memory in use grows with the history held, not with rows x a week of slots at once
        # (numpy asks for huge pages on large arrays: a row-major ring would page in 2 MB per
        # row and metric at its first value). Read only below each row's size: never initialised.
        self.ring = np.empty((self.capacity, 0, m), dtype=np.float32)
        self.pos = np.zeros(0, dtype=np.int64)
        self.size = np.zeros(0, dtype=np.int64)
        self.resid = np.full((0, m), np.nan)
        self.n_resid = np.zeros((0, m), dtype=np.int64)


    def grow(self, capacity: int) -> None:
        # A row's values fill slots 0, 1, ... (until it wraps), so every value held lies below
        # the largest size: only those slots are copied.
        used = int(self.size.max()) if len(self.size) else 0
        ring = self.ring
        self.ring = np.empty((ring.shape[0], capacity, ring.shape[2]), dtype=ring.dtype)
        self.ring[:used, : ring.shape[1]] = ring[:used]
        super().grow(capacity)

    # Pickled: the slots below the largest size, each row's unfilled ones as NaN (the rest of
    # the ring is uninitialised memory, which would make equal states pickle differently).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        used = int(self.size.max()) if len(self.size) else 0
        held = self.ring[:used].copy()
        held[np.arange(used)[:, None] >= self.size[None, :]] = np.nan
        state["ring"] = held
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        held = state.pop("ring")
        self.__dict__.update(state)
        self.ring = np.empty((self.capacity, *held.shape[1:]), dtype=held.dtype)
        self.ring[: len(held)] = held

    def references(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sorted references (rows, metrics, refs), their count, expected = their median) for
        the slot about to be filled; references missing or out of history are NaN (sorted last)."""
        idx = (self.pos[rows, None] - self.agos[None, :]) % self.capacity
        refs = self.ring[idx, rows[:, None], :].transpose(0, 2, 1)  # (rows, metrics, refs)
        held = self.agos[None, None, :] <= self.size[rows, None, None]
        refs = np.where(held, refs, np.float32(np.nan)).astype(np.float64)  # cast only what was written
        refs.sort(axis=2)
        count = np.isfinite(refs).sum(axis=2)
        return refs, count, sorted_median(refs, count)

    def _resid_term(self, rows: np.ndarray) -> np.ndarray:
        return np.where(self.n_resid[rows] > 0, stats.MEAN_AD_TO_SIGMA * self.resid[rows], 0.0)

    def _spread_scale(self, refs: np.ndarray, count: int, expected: float, resid_term: float, metric: int) -> float:
        spread = stats.mad_scale_small(refs[:count].tolist(), expected)
        return max(spread, resid_term, float(self.min_scale[metric]),
                   float(self.min_relative_scale[metric]) * abs(expected), stats.TINY_SCALE)

    def score(self, rows: np.ndarray, x: np.ndarray, refs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        srt, count, expected = refs
        resid = self._resid_term(rows)
        d = x - expected
        floor = np.maximum(resid, self.floor(expected))
        out = np.zeros(x.shape)
        hot = np.isfinite(x) & np.isfinite(expected) & ~(_directed(d / floor, self.sign) <= self.z0)
        for i, j in zip(*np.nonzero(hot), strict=True):
            scale = self._spread_scale(srt[i, j], int(count[i, j]), float(expected[i, j]), float(resid[i, j]), j)
            out[i, j] = stats.squash(stats.directed(float(d[i, j]) / scale, self.names[j]), self.z0, self.tau)
        return out

    def explain(self, row: int, metric: int, x: float) -> Explanation:
        srt, count, expected = self.references(np.array([row]))
        e = float(expected[0, metric])
        if e != e:
            return NO_EXPLANATION
        scale = self._spread_scale(srt[0, metric], int(count[0, metric]), e,
                                   float(self._resid_term(np.array([row]))[0, metric]), metric)
        return Explanation(e, (x - e) / scale)

    def learn(self, rows: np.ndarray, x: np.ndarray, refs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        """learn_one per row: finite values update the residual scale; every metric takes its slot
        (NaN for a gap). ``refs`` from :meth:`references` of this same slot."""
        srt, count, expected = refs
        upd = np.isfinite(x) & np.isfinite(expected)
        if upd.any():
            n_resid, resid_term = self.n_resid[rows], self._resid_term(rows)
            r = np.abs(x - expected)
            floor = np.maximum(resid_term, self.floor(expected))
            # The cap only bites beyond resid_cap floors: those few get the full scale.
            capped = upd & (n_resid > 0) & ~(r <= self.resid_cap * floor) if self.resid_cap >= 0.0 \
                else upd & (n_resid > 0)
            for i, j in zip(*np.nonzero(capped), strict=True):
                scale = self._spread_scale(srt[i, j], int(count[i, j]), float(expected[i, j]),
                                           float(resid_term[i, j]), j)
                r[i, j] = min(float(r[i, j]), self.resid_cap * scale)
            n_new = n_resid + 1
            w = np.maximum(self.alpha, 1.0 / np.maximum(n_new, 1))
            old = self.resid[rows]
            new = np.where(n_new == 1, r, old + w * (r - old))
            self.resid[rows] = np.where(upd, new, old)
            self.n_resid[rows] = np.where(upd, n_new, n_resid)
        self.ring[self.pos[rows], rows, :] = x
        self.pos[rows] = (self.pos[rows] + 1) % self.capacity
        self.size[rows] = np.minimum(self.size[rows] + 1, self.capacity)

    def gap(self, row: int, slots: int) -> None:
        """``slots`` slots without values for every metric of one row."""
        if slots <= 0:
            return
        if slots >= self.capacity:  # nothing held survives: as good as an empty ring (from slot 0)
            self.pos[row] = self.size[row] = 0
            return
        idx = (self.pos[row] + np.arange(slots)) % self.capacity
        self.ring[idx, row, :] = np.nan
        self.pos[row] = (self.pos[row] + slots) % self.capacity
        self.size[row] = min(int(self.size[row]) + slots, self.capacity)
