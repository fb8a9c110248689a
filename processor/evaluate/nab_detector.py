"""NabDetector: calibrated surprise of robust deviations, seasonally adjusted, reported sparsely (NAB-style)."""

from __future__ import annotations

import bisect
import math
from collections import deque
from typing import Any

import numpy as np

from processor.detect import stats
from processor.detect.base import NO_EXPLANATION, Detector, Explanation
from processor.evaluate.ring import Ring

_LN10 = math.log(10.0)
# Quantiles kept per calibrator: the body of the deviation distribution, interpolated.
_N_QUANTILES = 64
# ACF below this counts as "decorrelated": a period is only searched beyond that lag, so the
# short-lag correlation of any smooth series is not mistaken for seasonality.
_ACF_DECORRELATED = 0.2
# A new period within 5% of the current one is the same season (no rebuild for 288 vs 290).
_PERIOD_TOLERANCE = 0.05
# ACF peaks within this of the highest one count as equally good (the first one wins).
_PEAK_SLACK = 0.05


class _Tail:
    """Turns a deviation into a log10 surprise against the deviations seen before.

    Below the ``quantile``-quantile the empirical CDF (interpolated between stored quantiles)
    gives the tail probability; above it an exponential tail fitted to the excesses
    (mean excess = scale) extrapolates, so "bigger than anything seen" still ranks by size.
    The fit is refreshed every ``refresh`` values; surprise is 0 until ``min_count`` values.
    """

    def __init__(self, capacity: int, quantile: float, refresh: int, min_count: int) -> None:
        self._ring = Ring(capacity)
        self._quantile = quantile
        self._refresh = refresh
        self._min_count = min_count
        self._since = 0
        self._probs = np.linspace(0.0, quantile, _N_QUANTILES)
        self._probs_list: list[float] = self._probs.tolist()
        self._qs: list[float] | None = None
        self._u = 0.0
        self._beta = 1.0
        self._log_tail = -math.log(1.0 - quantile)

    @property
    def count(self) -> int:
        return self._ring.size

    def surprise(self, v: float) -> float:
        if self._qs is None:
            return 0.0
        if v > self._u:
            return (self._log_tail + (v - self._u) / self._beta) / _LN10
        # P(X >= v), so a value tied with much of the history (a flat or quantised series) is
        # not rare: P(X < v) interpolated between the stored quantiles around v.
        qs, probs = self._qs, self._probs_list
        i = bisect.bisect_left(qs, v)  # qs[i - 1] < v <= qs[i]; v <= u keeps i < len(qs)
        if i == 0:
            return 0.0
        lo, hi = qs[i - 1], qs[i]
        below = probs[i - 1] + (probs[i] - probs[i - 1]) * ((v - lo) / (hi - lo))
        return -math.log10(1.0 - below)

    def learn(self, v: float) -> None:
        self._ring.push(v)
        self._since += 1
        if self._ring.size >= self._min_count and (self._qs is None or self._since >= self._refresh):
            self._since = 0
            h = self._ring.filled()
            self._qs = np.quantile(h, self._probs).tolist()
            self._u = self._qs[-1]
            excess = h[h > self._u] - self._u
            self._beta = max(float(excess.mean()) if excess.size else 0.0, 1e-12)


class _Engine:
    """Three deviation features of one base series and their calibrated surprise.

    The base is the raw value, or the value minus its seasonal reference. Features, each
    ``log1p`` of a robust z: the value against the long median (scale 1.4826 * MAD of the
    last ``history`` base values), the step from the previous base value (scale: MAD of
    steps), and the mean of the value feature over the last ``short`` rows (a sustained
    shift that no single row shows). Each has its own :class:`_Tail`; the evidence is the
    largest surprise.
    """

    def __init__(self, d: NabDetector, period: int) -> None:
        self.period = period
        self._grace = d.grace_period
        self._refresh = d.refresh
        self._rel = d.min_relative_scale
        self._cap = d.evidence_cap
        self._values = Ring(d.history)
        self._steps = Ring(d.history)
        # The previous short - 1 value features, averaged with the current one (a list: tiny).
        self._short: list[float] = []
        self._short_n = d.short - 1
        self._tails = tuple(_Tail(d.tail_history, d.tail_quantile, d.tail_refresh, d.grace_period)
                            for _ in range(3))
        self._prev = math.nan
        self._n = 0
        self._median = math.nan
        self._scale = math.nan
        self._step_scale = math.nan

    @property
    def ready(self) -> bool:
        return not math.isnan(self._median)

    def features(self, b: float) -> tuple[float, float, float]:
        fv = math.log1p(abs(b - self._median) / self._scale)
        fd = math.log1p(abs(b - self._prev) / self._step_scale)
        fa = (sum(self._short) + fv) / (len(self._short) + 1)
        return fv, fd, fa

    def surprise(self, feats: tuple[float, float, float]) -> float:
        return max(t.surprise(f) for t, f in zip(self._tails, feats, strict=True))

    def cap(self) -> float:
        return math.log10(self._tails[0].count + 1) + self._cap

    def absorb(self, b: float, feats: tuple[float, float, float] | None, level: float) -> None:
        if feats is not None:
            for t, f in zip(self._tails, feats, strict=True):
                t.learn(f)
            if self._short_n:
                self._short.append(feats[0])
                if len(self._short) > self._short_n:
                    del self._short[0]
        if self._n:
            self._steps.push(b - self._prev)
        self._values.push(b)
        self._prev = b
        self._n += 1
        if self._n >= max(self._grace, 2) and (not self.ready or self._n % self._refresh == 0):
            floor = self._rel * abs(level) + stats.TINY_SCALE
            self._median, scale = stats.median_mad_sorted(np.sort(self._values.filled()))
            _, step_scale = stats.median_mad_sorted(np.sort(self._steps.filled()))
            self._scale = max(scale, floor)
            self._step_scale = max(step_scale, floor)

    def expected(self) -> tuple[float, float]:
        return self._median, self._scale


class NabDetector(Detector):
    """Streaming anomaly score built for NAB's rules: calibrated per series, sparse, early.

    **Evidence.** Each value is compared, after an optional seasonal adjustment, with robust
    baselines (see :class:`_Engine`: value vs long median, step vs typical step, short mean
    of the value deviation). Every feature's deviation becomes a tail probability against
    that feature's *own* history on this series, so "rare" means the same on a quiet series
    and a spiky one; the evidence is the largest -log10 tail probability.

    **Seasonality.** Every ``period_check`` values the autocorrelation of the last
    ``history`` raw values is searched (beyond its first drop below 0.2, up to
    ``max_period``); a peak >= ``acf_on`` switches to the base ``x - median(x[t-P],
    x[t-2P], ...)`` over ``season_cycles`` periods (it is kept while the peak stays >=
    ``acf_off``). A switch rebuilds the features by replaying the raw history it holds.

    **Reporting.** A row reports if its evidence is larger than each of the previous
    ``refractory`` rows' and, within ``refractory`` rows of the last report, at least
    ``escalation`` times that report's (unless that one already reached the cap): a new
    anomaly shows once, at its start, a growing one again as it grows, and its
    continuation stays quiet (NAB rewards only the first detection in a window and
    charges every other one outside it). A reporting row scores
    ``e / (e + scale)`` with e its evidence capped at log10(n) + ``evidence_cap`` decades
    (n values calibrated on: n values cannot vouch for a probability far below 1/n); 0.5
    is then a 1-in-100,000 deviation. Every other row scores 0.

    No look-ahead, no labels, one configuration for every series. Memory is bounded:
    rings of ``history`` values and three of ``tail_history``. The clock is the count of
    learned values (NaNs are skipped, not counted). About 20 us per value.

    >>> import numpy as np
    >>> xs = 10 + np.random.default_rng(1).normal(0, 1, 1000)
    >>> xs[800] = 25.0
    >>> s = NabDetector().process_many(xs)
    >>> int(np.argmax(s)), round(float(s[800]), 2), float(s[801]), bool(s[:800].max() < 0.45)
    (800, 0.49, 0.0, True)
    """

    def __init__(
        self,
        history: int = 2000,
        grace_period: int = 50,
        refresh: int = 20,
        tail_history: int = 2000,
        tail_quantile: float = 0.95,
        tail_refresh: int = 50,
        short: int = 10,
        scale: float = 5.0,
        evidence_cap: float = 2.0,
        refractory: int = 100,
        escalation: float = 1.4,
        min_relative_scale: float = 1e-3,
        seasonal: bool = True,
        min_period: int = 10,
        max_period: int = 400,
        period_check: int = 200,
        season_cycles: int = 3,
        acf_on: float = 0.6,
        acf_off: float = 0.3,
    ) -> None:
        super().__init__()
        if history < 3 or tail_history < 3 or grace_period < 2:
            raise ValueError("history and tail_history must be >= 3 and grace_period >= 2, got "
                             f"{history}, {tail_history}, {grace_period}")
        if refresh < 1 or tail_refresh < 1 or short < 1 or refractory < 0 or period_check < 1:
            raise ValueError("refresh, tail_refresh, short and period_check must be >= 1 and "
                             "refractory >= 0")
        if not 0.0 < tail_quantile < 1.0 or scale <= 0.0 or escalation < 1.0:
            raise ValueError(f"need 0 < tail_quantile < 1, scale > 0, escalation >= 1, got "
                             f"{tail_quantile}, {scale}, {escalation}")
        if not 2 <= min_period <= max_period or season_cycles < 1 or not 0.0 <= acf_off <= acf_on:
            raise ValueError("need 2 <= min_period <= max_period, season_cycles >= 1, "
                             "0 <= acf_off <= acf_on")
        self.history = history
        self.grace_period = grace_period
        self.refresh = refresh
        self.tail_history = tail_history
        self.tail_quantile = tail_quantile
        self.tail_refresh = tail_refresh
        self.short = short
        self.scale = scale
        self.evidence_cap = evidence_cap
        self.refractory = refractory
        self.escalation = escalation
        self.min_relative_scale = min_relative_scale
        self.seasonal = seasonal
        self.min_period = min_period
        self.max_period = max_period
        self.period_check = period_check
        self.season_cycles = season_cycles
        self.acf_on = acf_on
        self.acf_off = acf_off
        self._raw = Ring(max(history, season_cycles * max_period + 1))
        self._engine = _Engine(self, 0)
        self._level = 0.0
        # Sliding maximum of the last `refractory` rows' evidence: (row, evidence), decreasing.
        self._recent: deque[tuple[int, float]] = deque()
        self._anchor = 0.0  # evidence of the last report
        self._anchor_row = -(1 << 62)
        # score_one's work for (x, n_learned), reused by the learn_one that follows it.
        self._cache: tuple[float, int, float, tuple[float, float, float] | None, float] | None = None

    @property
    def period(self) -> int:
        """The seasonal period in use (0: none found)."""
        return self._engine.period

    # -- evidence -----------------------------------------------------------------------------
    def _reference(self, raw: Ring, period: int) -> float:
        """Median of the values 1..season_cycles periods back (0 without a period or history)."""
        if period == 0:
            return 0.0
        return _median([raw.ago(j * period) for j in range(1, self.season_cycles + 1) if j * period <= raw.size])

    def _evaluate(self, x: float) -> tuple[float, tuple[float, float, float] | None, float]:
        """(base value, features or None before warm-up, evidence) of x; learns nothing."""
        hit = self._cache
        if hit is not None and hit[0] == x and hit[1] == self.n_learned:
            return hit[2], hit[3], hit[4]
        eng = self._engine
        b = x - self._reference(self._raw, eng.period)
        feats = eng.features(b) if eng.ready else None
        sur = eng.surprise(feats) if feats is not None else 0.0
        self._cache = (x, self.n_learned, b, feats, sur)
        return b, feats, sur

    def _reports(self, sur: float, row: int) -> bool:
        """Whether evidence ``sur`` at ``row`` is news (see the class docstring).

        Compared uncapped, so a blip just under the cap does not mask a far larger spike
        right after it; but once a report has reached the cap nothing can say more.
        """
        if self._recent and sur <= self._recent[0][1]:
            return False
        if row - self._anchor_row > self.refractory:
            return True
        return sur >= self._anchor * self.escalation and self._anchor < self._engine.cap()

    def _score(self, x: float) -> float:
        _, _, sur = self._evaluate(x)
        if sur <= 0.0 or not self._reports(sur, self.n_learned):
            return 0.0
        sur = min(sur, self._engine.cap())
        return sur / (sur + self.scale)

    # -- learning -----------------------------------------------------------------------------
    def _learn(self, x: float) -> None:
        b, feats, sur = self._evaluate(x)
        row = self.n_learned
        if sur > 0.0 and self._reports(sur, row):
            self._anchor, self._anchor_row = sur, row
        recent = self._recent
        while recent and recent[-1][1] <= sur:
            recent.pop()
        recent.append((row, sur))
        while recent and recent[0][0] <= row - self.refractory:
            recent.popleft()
        self._raw.push(x)
        seen = row + 1
        if seen % self.refresh == 0 or seen <= self.grace_period:
            self._level = float(np.median(self._raw.filled()))
        self._engine.absorb(b, feats, self._level)
        self._cache = None
        if self.seasonal and seen % self.period_check == 0 and seen >= 2 * self.min_period + 50:
            self._check_period()

    def _check_period(self) -> None:
        period = detect_period(self._raw.values()[-self.history:], self.min_period, self.max_period,
                               self.acf_on, self.acf_off, self._engine.period)
        current = self._engine.period
        if period == current or (period and current and abs(period - current) <= _PERIOD_TOLERANCE * current):
            return
        self._engine = self._replay(period)

    def _replay(self, period: int) -> _Engine:
        """A fresh engine for ``period``, fed the raw history held (rows with a reference only)."""
        eng = _Engine(self, period)
        h = self._raw.values()
        for i in range(max(period, h.size - self.history), h.size):
            b = float(h[i]) - _median([float(h[i - j * period]) for j in range(1, self.season_cycles + 1)
                                       if i - j * period >= 0])
            feats = eng.features(b) if eng.ready else None
            eng.absorb(b, feats, self._level)
        return eng

    def explain_one(self, x: float) -> Explanation:
        if not self._engine.ready or not math.isfinite(x):
            return NO_EXPLANATION
        ref = self._reference(self._raw, self._engine.period)
        median, scale = self._engine.expected()
        return Explanation(ref + median, (float(x) - ref - median) / scale)

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"history": 60, "grace_period": 10, "refresh": 5, "tail_history": 60, "tail_refresh": 5,
                "short": 4, "refractory": 10, "min_period": 4, "max_period": 20, "period_check": 30}


def _median(values: list[float]) -> float:
    """Median of a short list (0 for an empty one); sorted() beats np.median on 3 values."""
    if not values:
        return 0.0
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def detect_period(history: np.ndarray, min_period: int, max_period: int, acf_on: float,
                  acf_off: float, current: int = 0) -> int:
    """The seasonal period of ``history`` (oldest first), or 0.

    The autocorrelation (unbiased estimator, so two cycles of history already show a daily
    period) is searched beyond its first drop below 0.2 up to ``max_period`` (at most half
    the history); its peak counts if >= ``acf_on``. A ``current`` period is kept while its
    autocorrelation stays >= ``acf_off`` (hysteresis: one anomalous day does not drop it).

    >>> t = np.arange(600)
    >>> detect_period(np.sin(2 * np.pi * t / 50), 10, 200, 0.6, 0.3)
    50
    >>> detect_period(np.random.default_rng(0).normal(size=600), 10, 200, 0.6, 0.3)
    0
    """
    n = history.size
    max_lag = min(max_period, n // 2)
    if max_lag <= min_period:
        return 0
    x = history - history.mean()
    f = np.fft.rfft(x, 2 * n)
    acov = np.fft.irfft(f * np.conj(f), 2 * n)[: max_lag + 1] / (n - np.arange(max_lag + 1))
    if not acov[0] > 0.0:
        return 0
    acf = acov / acov[0]
    keep = current if 0 < current < max_lag and acf[current] >= acf_off else 0
    below = np.flatnonzero(acf[1:] < _ACF_DECORRELATED)
    if not below.size:
        return keep
    start = max(int(below[0]) + 1, min_period)
    if start >= max_lag:
        return keep
    window = acf[start:max_lag]
    best = float(window.max())
    if best < acf_on:
        return keep
    # Multiples of a period correlate about as well as the period: take the first peak that
    # is nearly as high as the best (climbing from where the ACF first gets there).
    i = int(np.argmax(window >= best - _PEAK_SLACK))
    while i + 1 < window.size and window[i + 1] > window[i]:
        i += 1
    period = start + i
    return period if period < max_lag - 1 else keep
