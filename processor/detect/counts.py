"""Count tests of an entity window: the error ratio as a beta-binomial tail, traffic as a lasting drop."""

from __future__ import annotations

import math
from typing import NamedTuple

from processor.detect import stats
from processor.detect.base import Detector
from processor.detect.entity_vector import RATE, Evidence, from_model, to_model


class ErrorAssessment(NamedTuple):
    score: float
    expected: float  # baseline error ratio
    deviation: float  # (ratio - expected) / binomial sigma


class ErrorRatioTest:
    """Error ratio scored as a count: beta-binomial tail of k errors in n against the recent pool.

    The baseline is the pooled ratio over the last ``window`` learned windows (Jeffreys prior),
    and the predictive distribution of the errors in n requests is beta-binomial, so a short
    history is not over-trusted. Evidence: the Gaussian-equivalent z of P(X >= k). Effect size:
    (ratio - baseline) / ``unit``. A window's score is the squash of the smaller of the two, so
    a significant but tiny rise (0.10% -> 0.12% over a million requests) and a large but
    unsurprising one (1 error in 3 requests) both stay quiet. The test also runs on the sums
    of the last 2..``span`` windows and keeps the strongest: 5% errors on 45 requests a
    minute is 2 errors per window — noise in one window, clear in three.

    Not a BaseDetector: its input is a pair (errors, requests), not one float.
    """

    def __init__(self, window: int = 60, grace_period: int = 10, unit: float = 0.003,
                 span: int = 3) -> None:
        self.window, self.grace_period, self.unit, self.span = window, grace_period, unit, span
        self._ring: list[tuple[int, int]] = []  # learned windows
        self._recent: list[tuple[int, int]] = []  # the last span - 1 windows, learned or not
        self._k = self._n = 0
        self.n_learned = 0

    def expected(self) -> float:
        return (self._k + 0.5) / (self._n + 1.0) if self._ring else math.nan

    def assess(self, k: int, n: int, min_requests: int = 0) -> ErrorAssessment:
        """Score of this window's k errors in n requests (with the recent windows); learns nothing.

        Only sums over at least ``min_requests`` requests are tested (the volume guard).
        """
        p0 = self.expected()
        if n <= 0 or self.n_learned < self.grace_period or math.isnan(p0):
            return ErrorAssessment(0.0, p0, math.nan)
        sigma1 = math.sqrt(max(p0 * (1.0 - p0), 1e-12) / n)
        deviation = (k / n - p0) / sigma1
        a, b = self._k + 0.5, self._n - self._k + 0.5
        best = 0.0
        kk, nn = k, n
        for i in range(len(self._recent) + 1):
            if i:
                kk, nn = kk + self._recent[-i][0], nn + self._recent[-i][1]
            z_effect = (kk / nn - p0) / self.unit
            if nn < min_requests or not z_effect > max(stats.Z0, best):  # cheap test first
                continue
            z_stat = stats.z_from_log_tail(beta_binomial_log_sf(kk, nn, a, b))
            best = max(best, min(z_stat, z_effect))
        return ErrorAssessment(stats.squash(best), p0, deviation)

    def push(self, k: int, n: int, learn: bool) -> None:
        """Record this window (n = 0 for one below the volume guard) and learn it if ``learn``."""
        if self.span > 1:
            self._recent.append((k, n))
            if len(self._recent) > self.span - 1:
                del self._recent[0]
        if not learn or n <= 0:
            return
        self._ring.append((k, n))
        self._k += k
        self._n += n
        if len(self._ring) > self.window:
            k0, n0 = self._ring.pop(0)
            self._k -= k0
            self._n -= n0
        self.n_learned += 1


def beta_binomial_log_sf(k: int, n: int, a: float, b: float) -> float:
    """log P(X >= k) for X ~ BetaBinomial(n, a, b), summing the pmf upward from k (k above the mean)."""
    if k <= 0:
        return 0.0
    lg = math.lgamma
    log_pmf = (lg(n + 1) - lg(k + 1) - lg(n - k + 1) + lg(k + a) + lg(n - k + b) - lg(n + a + b)
               + lg(a + b) - lg(a) - lg(b))
    total = term = 1.0
    for j in range(k, n):
        term *= (n - j) / (j + 1) * (j + a) / (n - j - 1 + b)
        total += term
        if term < 1e-12 * total:
            break
    return log_pmf + math.log(total)


def sustained_drop(det: Detector | None, recent_n: list[int], x_rate: float, n: int,
                   traffic_direction: str, drop_unit: float) -> Evidence | None:
    """Traffic summed over this and the ``recent_n`` windows against as many baselines of ``det``.

    On the square-root scale a sum of m windows keeps the per-window noise (Poisson and
    multiplicative alike) while a lasting drop grows by sqrt(m): a 50% drop of 40
    requests a minute is noise in one window and clear over three.
    """
    if (det is None or not recent_n or math.isnan(x_rate) or det.n_learned < det.grace_period
            or traffic_direction == "up"):
        return None
    exp = det.explain_one(x_rate)
    if not exp.deviation < 0.0:  # only below the baseline can a sum show a drop
        return None
    scale = (x_rate - exp.expected) / exp.deviation
    lam = from_model(RATE, exp.expected)
    best, best_m, total, observed = 0.0, 1, n, math.nan
    for m, prev in enumerate(reversed(recent_n), start=2):
        total += prev
        # As for errors: significant (z_stat) and large (z_effect) — a baseline lagging a
        # diurnal decline is significant over three windows, but only a few percent.
        z_stat = (to_model(RATE, m * lam) - to_model(RATE, total)) / scale
        z_effect = (1.0 - total / (m * lam)) / drop_unit if lam > 0 else 0.0
        z = min(z_stat, z_effect)
        if z > best:
            best, best_m, observed = z, m, total / m
    if best_m == 1:
        return None
    return Evidence(RATE, observed, lam, -best, "sustained", stats.squash(best))
