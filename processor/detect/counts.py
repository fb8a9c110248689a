"""Count tests of an entity window: the error ratio as a beta-binomial tail, traffic as a lasting drop."""

from __future__ import annotations

import math

import numpy as np

from processor.detect import stats
from processor.detect.banks import RowColumns


class ErrorBank(RowColumns):
    """Error ratio scored as a count, per entity row: beta-binomial tail of k errors in n against the recent pool.

    The baseline is the pooled ratio over the last ``window`` learned windows (Jeffreys prior),
    and the predictive distribution of the errors in n requests is beta-binomial, so a short
    history is not over-trusted. Evidence: the Gaussian-equivalent z of P(X >= k). Effect size:
    (ratio - baseline) / ``unit``. A window's score is the squash of the smaller of the two, so
    a significant but tiny rise (0.10% -> 0.12% over a million requests) and a large but
    unsurprising one (1 error in 3 requests) both stay quiet. The test also runs on the sums
    of the last 2..``span`` windows and keeps the strongest: 5% errors on 45 requests a
    minute is 2 errors per window — noise in one window, clear in three.

    State is columnar (one row per entity, as in :mod:`processor.detect.banks`): the effect
    size is a division, so the rows whose effect cannot reach ``Z0`` on any sum (nearly all)
    score 0 in one numpy pass, and only the rest pay for the tail (:func:`tail_score`).
    """

    _fills = dict.fromkeys(("ring_k", "ring_n", "pos", "size", "pool_k", "pool_n", "n_learned", "recent_k",
                            "recent_n", "recent_count"), 0)

    def __init__(self, window: int, grace_period: int, unit: float, span: int) -> None:
        self.window, self.grace_period, self.unit, self.span = window, grace_period, unit, span
        r = max(span - 1, 0)
        self.ring_k = np.zeros((0, window), dtype=np.int64)  # learned windows
        self.ring_n = np.zeros((0, window), dtype=np.int64)
        self.pos = np.zeros(0, dtype=np.int64)
        self.size = np.zeros(0, dtype=np.int64)
        self.pool_k = np.zeros(0, dtype=np.int64)
        self.pool_n = np.zeros(0, dtype=np.int64)
        self.n_learned = np.zeros(0, dtype=np.int64)
        # The last span - 1 windows, learned or not, most recent in the last column.
        self.recent_k = np.zeros((0, r), dtype=np.int64)
        self.recent_n = np.zeros((0, r), dtype=np.int64)
        self.recent_count = np.zeros(0, dtype=np.int64)

    def expected(self, rows: np.ndarray) -> np.ndarray:
        """Baseline error ratio per row; NaN before anything was learned."""
        return np.where(self.size[rows] > 0, (self.pool_k[rows] + 0.5) / (self.pool_n[rows] + 1.0), np.nan)

    def recent(self, row: int) -> list[tuple[int, int]]:
        """The recent windows of one row, oldest first."""
        c = int(self.recent_count[row])
        ks, ns = self.recent_k[row, -c:].tolist() if c else [], self.recent_n[row, -c:].tolist() if c else []
        return list(zip(ks, ns, strict=True))

    def score(self, rows: np.ndarray, k: np.ndarray, n: np.ndarray, min_requests: int = 0) -> np.ndarray:
        """Score of each row's k errors in n requests (with its recent windows); learns nothing.

        Only sums over at least ``min_requests`` requests are tested (the volume guard).
        """
        p0 = self.expected(rows)
        live = (n > 0) & (self.n_learned[rows] >= self.grace_period) & np.isfinite(p0)
        count = self.recent_count[rows]
        kk, nn = k.copy(), n.copy()
        hot = np.zeros(len(rows), dtype=bool)
        rk, rn = self.recent_k[rows], self.recent_n[rows]
        for i in range(self.recent_k.shape[1] + 1):
            if i:
                kk, nn = kk + rk[:, -i], nn + rn[:, -i]
            with np.errstate(divide="ignore", invalid="ignore"):
                effect = (kk / nn - p0) / self.unit
            hot |= (i <= count) & (nn >= min_requests) & (effect > stats.Z0)
        out = np.zeros(len(rows))
        for b in np.nonzero(live & hot)[0]:
            row = int(rows[b])
            out[b] = tail_score(int(k[b]), int(n[b]), self.recent(row), int(self.pool_k[row]),
                                int(self.pool_n[row]), self.unit, min_requests)
        return out

    def deviation(self, row: int, k: int, n: int) -> float:
        """(ratio - baseline) in binomial sigmas of n requests (for explanations)."""
        p0 = float(self.expected(np.array([row]))[0])
        if n <= 0 or p0 != p0:
            return math.nan
        return (k / n - p0) / math.sqrt(max(p0 * (1.0 - p0), 1e-12) / n)

    def push(self, rows: np.ndarray, k: np.ndarray, n: np.ndarray, learn: np.ndarray) -> None:
        """Record each row's window (n = 0 for one below the volume guard); learn it where ``learn``."""
        if self.recent_k.shape[1]:
            self.recent_k[rows] = np.roll(self.recent_k[rows], -1, axis=1)
            self.recent_n[rows] = np.roll(self.recent_n[rows], -1, axis=1)
            self.recent_k[rows, -1], self.recent_n[rows, -1] = k, n
            self.recent_count[rows] = np.minimum(self.recent_count[rows] + 1, self.recent_k.shape[1])
        sel = learn & (n > 0)
        r, kl, nl = rows[sel], k[sel], n[sel]
        p = self.pos[r]
        full = self.size[r] == self.window
        self.pool_k[r] += kl - np.where(full, self.ring_k[r, p], 0)
        self.pool_n[r] += nl - np.where(full, self.ring_n[r, p], 0)
        self.ring_k[r, p], self.ring_n[r, p] = kl, nl
        self.pos[r] = (p + 1) % self.window
        self.size[r] = np.minimum(self.size[r] + 1, self.window)
        self.n_learned[r] += 1


def tail_score(k: int, n: int, recent: list[tuple[int, int]], pool_k: int, pool_n: int, unit: float,
               min_requests: int) -> float:
    """The error test of one window against a pool of pool_k errors in pool_n requests: the squash
    of the best min(tail z, effect z) over the sums of this window and its ``recent`` ones."""
    p0 = (pool_k + 0.5) / (pool_n + 1.0)
    a, b = pool_k + 0.5, pool_n - pool_k + 0.5
    best = 0.0
    kk, nn = k, n
    for i in range(len(recent) + 1):
        if i:
            kk, nn = kk + recent[-i][0], nn + recent[-i][1]
        z_effect = (kk / nn - p0) / unit
        if nn < min_requests or not z_effect > max(stats.Z0, best):  # cheap test first
            continue
        z_stat = stats.z_from_log_tail(beta_binomial_log_sf(kk, nn, a, b))
        best = max(best, min(z_stat, z_effect))
    return stats.squash(best)


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


def sustained_drops(expected: np.ndarray, deviation: np.ndarray, x_rate: np.ndarray, n: np.ndarray,
                    recent_n: np.ndarray, recent_count: np.ndarray, drop_unit: float
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Traffic summed over each row's window and its recent ones against as many baselines.

    ``expected``/``deviation`` are the traffic member's explanation of ``x_rate`` (model
    scale), ``recent_n`` the last windows' request counts (most recent in the last column,
    ``recent_count`` of them held). Returns (z, observed per-window mean, baseline count):
    z > 0 where a sum of 2 or more windows shows a drop. On the square-root scale a sum of m
    windows keeps the per-window noise (Poisson and multiplicative alike) while a lasting drop
    grows by sqrt(m): a 50% drop of 40 requests a minute is noise in one window and clear over
    three.
    """
    live = (recent_count > 0) & np.isfinite(x_rate) & (deviation < 0.0)  # only below the baseline
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = (x_rate - expected) / deviation
        lam = np.maximum(0.0, 0.25 * expected * expected - 0.375)  # from_model(RATE, expected)
        best = np.zeros(len(n))
        observed = np.full(len(n), math.nan)
        total = n.astype(np.int64)
        for m in range(2, recent_n.shape[1] + 2):
            total = total + recent_n[:, -(m - 1)]
            # As for errors: significant (z_stat) and large (z_effect) — a baseline lagging a
            # diurnal decline is significant over three windows, but only a few percent.
            z_stat = (2.0 * np.sqrt(m * lam + 0.375) - 2.0 * np.sqrt(total + 0.375)) / scale
            z_effect = np.where(lam > 0, (1.0 - total / (m * lam)) / drop_unit, 0.0)
            z = np.minimum(z_stat, z_effect)
            better = live & (m - 1 <= recent_count) & (z > best)
            best = np.where(better, z, best)
            observed = np.where(better, total / m, observed)
    return best, observed, lam
