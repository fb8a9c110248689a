"""EWMA: exponentially weighted mean and variance, for fast level shifts, direction aware."""

from __future__ import annotations

from typing import Any

import numpy as np

from processor.detect import stats
from processor.detect.banks import ONE_ROW, EWMABank, directions
from processor.detect.base import Detector, Explanation


class EWMA(Detector):
    """z-score of a value against an exponentially weighted mean and variance.

    The first ``grace_period`` values (at least one) set the mean and variance exactly
    (Welford); after that each value moves them by ``alpha``: ``d = x - mean``,
    ``mean += alpha * d``, ``var = (1 - alpha) * (var + alpha * d * d)``. Memory is two floats,
    and a shift of the level shows on its first value. The variance absorbs a step quickly,
    so after a clean step the detector goes quiet again within a few values. Scale floors,
    the Student-t correction (here with n_learned - 1 degrees of freedom) and scoring as in
    :class:`processor.detect.robust.RobustBaseline`.

    This is one row of :class:`~processor.detect.banks.EWMABank`, the code the pipeline runs.

    >>> import numpy as np
    >>> det = EWMA(alpha=0.1, direction="down", grace_period=10)
    >>> _ = det.process_many(10 + np.random.default_rng(0).normal(0, 0.5, 100))
    >>> det.score_one(20.0), round(det.score_one(6.0), 3)
    (0.0, 0.857)
    """

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
    ) -> None:
        super().__init__()
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
        self.bank = EWMABank(alpha, directions([direction]), grace_period, np.array([min_scale]),
                             np.array([min_relative_scale]), z0, tau)
        self.bank.grow(1)

    def _score(self, x: float) -> float:
        return float(self.bank.score(ONE_ROW, np.array([[x]]))[0, 0])

    def _learn(self, x: float) -> None:
        self.bank.learn(ONE_ROW, np.array([[x]]))

    def explain_one(self, x: float) -> Explanation:
        return self.bank.explain(0, 0, float(x))

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"alpha": 0.2, "grace_period": 5, "direction": "up"}
