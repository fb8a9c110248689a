"""Seasonal: a value against the same phase one period (day) and seven periods (week) earlier."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from processor.detect import stats
from processor.detect.banks import ONE_ROW, SeasonalBank, directions
from processor.detect.base import Detector, Explanation


class Seasonal(Detector):
    """Deviation of a value from the values at the same phase ``lags`` periods earlier.

    Fed one value per window with ``period`` = windows per day, the default ``lags=(1, 7)``
    compares with the same window yesterday and a week ago. The references are the values
    at those lags and ``half_width`` slots either side (a 2*1+1 neighbourhood per lag, so a
    window that was a little late yesterday still lines up); expected = their median.
    The scale is the larger of their robust spread (1.4826 * MAD) and the typical size of
    recent residuals |x - expected| (an EW mean with ``alpha``, each residual capped at
    ``resid_cap`` scales so one incident does not blind it), then floored as in
    :class:`processor.detect.robust.RobustBaseline`. No references -> score 0.

    Memory is a ring of ``max(lags) * period + half_width`` float32 values: 10,081 values
    (40 KB) for minute windows and a week. History from storage goes in with
    :meth:`seed_history` (oldest first, NaN for missing windows). The detector is *clocked*:
    every call to ``learn_one`` is one slot, and an unusable value (NaN, low volume) is
    recorded as a gap so later values keep their phase.

    This is one row of :class:`~processor.detect.banks.SeasonalBank`, the code the pipeline runs.

    >>> det = Seasonal(period=4, lags=(1, 2), half_width=0)
    >>> det.seed_history([5.0, 1.0, 1.0, 1.0] * 2)
    >>> det.score_one(5.0), det.score_one(1.0) > 0.9
    (0.0, True)
    """

    _contract_skips = {
        "nan_leaves_state": "a NaN is a missing window: it takes its slot so later values keep "
        "their day/week phase",
    }

    def __init__(
        self,
        period: int,
        lags: tuple[int, ...] = (1, 7),
        half_width: int = 1,
        direction: str = "both",
        grace_period: int = 0,
        min_volume: float = 0.0,
        z0: float = stats.Z0,
        tau: float = stats.TAU,
        alpha: float = 0.05,
        resid_cap: float = 4.0,
        min_scale: float = 0.0,
        min_relative_scale: float = 0.01,
    ) -> None:
        super().__init__()
        if period < 1 or not lags or min(lags) < 1:
            raise ValueError(f"period and lags must be >= 1, got period={period}, lags={lags}")
        if not 0 <= half_width < period:
            raise ValueError(f"half_width must be in [0, period), got {half_width}")
        self.period = period
        self.lags = tuple(lags)
        self.half_width = half_width
        self.direction = direction
        self.grace_period = grace_period
        self.min_volume = min_volume
        self.z0 = z0
        self.tau = tau
        self.alpha = alpha
        self.resid_cap = resid_cap
        self.min_scale = min_scale
        self.min_relative_scale = min_relative_scale
        self.bank = SeasonalBank(period, self.lags, half_width, directions([direction]),
                                 np.array([min_scale]), np.array([min_relative_scale]), z0, tau,
                                 alpha, resid_cap)
        self.bank.grow(1)

    @property
    def clocked(self) -> bool:
        return True

    def seed_history(self, values: Iterable[float]) -> None:
        """Feed past values, oldest first (NaN = missing window), as if each was learned."""
        for v in values:
            self.learn_one(v)

    def _score(self, x: float) -> float:
        refs = self.bank.references(ONE_ROW)
        return float(self.bank.score(ONE_ROW, np.array([[x]]), refs)[0, 0])

    def _learn(self, x: float) -> None:
        self.bank.learn(ONE_ROW, np.array([[x]]), self.bank.references(ONE_ROW))

    def _gap(self) -> None:
        self.bank.gap(0, 1)

    def explain_one(self, x: float) -> Explanation:
        return self.bank.explain(0, 0, float(x))

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"period": 12, "lags": (1, 2), "half_width": 1}
