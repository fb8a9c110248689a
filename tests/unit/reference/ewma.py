"""Reference EWMA: exponentially weighted mean and variance, for fast level shifts, direction aware.

The per-value implementation, written for clarity and speed per call, that the bank
(processor.detect.banks) must match bit for bit; see tests/unit/test_detect_banks.py.
"""

from __future__ import annotations

import math
from typing import Any

from processor.detect import stats
from processor.detect.base import NO_EXPLANATION, Detector, Explanation


class EWMA(Detector):
    """The semantics of :class:`processor.detect.ewma.EWMA`, one value at a time."""

    def __init__(
        self,
        alpha: float = 0.1,
        direction: str = "both",
        grace_period: int = 10,
        min_volume: float = 0.0,
        z0: float = stats.Z0,
        tau: float = stats.TAU,
        min_scale: float = 0.0,
        min_relative_scale: float = 0.01,
        clip: float | None = None,
    ) -> None:
        super().__init__()
        stats.check_direction(direction)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.direction = direction
        self.grace_period = grace_period
        self.min_volume = min_volume
        self.z0 = z0
        self.tau = tau
        self.min_scale = min_scale
        self.min_relative_scale = min_relative_scale
        self.clip = clip
        self._mean = 0.0
        self._var = 0.0  # Welford's M2 / n during warm-up, the EW variance after

    def _scale(self) -> float:
        return stats.floor_scale(math.sqrt(self._var), self._mean, self.min_scale, self.min_relative_scale)

    def _learn(self, x: float) -> None:
        n = self.n_learned + 1
        d = x - self._mean
        if n <= max(self.grace_period, 1):
            # Exact mean and population variance of the warm-up values.
            self._mean += d / n
            self._var += (d * (x - self._mean) - self._var) / n
            return
        if self.clip is not None:
            limit = self.clip * self._scale()
            dv = min(max(d, -limit), limit)
        else:
            dv = d
        self._mean += self.alpha * d
        self._var = (1.0 - self.alpha) * (self._var + self.alpha * dv * dv)

    def _score(self, x: float) -> float:
        if self.n_learned == 0:
            return 0.0
        # Student-t -> Gaussian with n - 1 dof: guards the warm-up, fades as values accumulate.
        return stats.squash_t((x - self._mean) / self._scale(), self.n_learned - 1, self.direction,
                              self.z0, self.tau)

    def explain_one(self, x: float) -> Explanation:
        if self.n_learned == 0:
            return NO_EXPLANATION
        return Explanation(self._mean, (float(x) - self._mean) / self._scale())

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"alpha": 0.2, "grace_period": 5, "direction": "up"}
