"""RobustBaseline: rolling median and MAD over the last windows, direction aware, volume guarded."""

from __future__ import annotations

from typing import Any

import numpy as np

from processor.detect import stats
from processor.detect.banks import ONE_ROW, RobustBank, directions
from processor.detect.base import Detector, Explanation


class RobustBaseline(Detector):
    """Robust z-score of a value against the median and MAD of the last ``window`` values.

    ``z = (x - median) / scale`` with ``scale = 1.4826 * MAD`` (mean absolute deviation when
    MAD is 0), floored by ``min_scale`` and ``min_relative_scale * |median|``. z is read as a
    Student-t deviation with (values in the window - 1) degrees of freedom and converted to
    its Gaussian equivalent (:func:`processor.detect.stats.t_to_z`), so a half-filled window
    does not alarm on noise. The part of z in ``direction`` ("up" for latency and errors,
    "down" for traffic, "both") becomes the score through
    :func:`processor.detect.stats.squash` (0 up to ``z0`` sigma, 0.5 at z0 + 1.4 tau).
    Median and MAD ignore up to half the window being outliers, so one spike neither hides
    the next nor lifts the baseline. With ``min_volume`` set, a value whose ``volume`` (request
    count) is below it scores 0 and is not learned: an error ratio of 1/2 is not evidence.

    This is one row of :class:`~processor.detect.banks.RobustBank`, the code the pipeline
    runs over every entity of a window at once.

    >>> import numpy as np
    >>> det = RobustBaseline(window=30, direction="up", grace_period=10)
    >>> series = 100 + np.random.default_rng(0).normal(0, 2, 60)
    >>> float(det.process_many(series).max()) < 0.5
    True
    >>> round(det.score_one(100.0), 3), round(det.score_one(130.0), 3), det.score_one(60.0)
    (0.0, 0.921, 0.0)
    """

    def __init__(
        self,
        window: int = 60,
        direction: str = "both",
        grace_period: int = 10,
        min_volume: float = 0.0,
        z0: float = stats.Z0,
        tau: float = stats.TAU,
        min_scale: float = 0.0,
        min_relative_scale: float = 0.01,
    ) -> None:
        super().__init__()
        if window < 3:
            raise ValueError(f"window must be >= 3, got {window}")
        self.window = window
        self.direction = direction
        self.grace_period = grace_period
        self.min_volume = min_volume
        self.z0 = z0
        self.tau = tau
        self.min_scale = min_scale
        self.min_relative_scale = min_relative_scale
        self.bank = RobustBank(window, directions([direction]), grace_period, np.array([min_scale]),
                               np.array([min_relative_scale]), z0, tau)
        self.bank.grow(1)

    def _score(self, x: float) -> float:
        return float(self.bank.score(ONE_ROW, np.array([[x]]), self.bank.sorted_rings(ONE_ROW))[0, 0])

    def _learn(self, x: float) -> None:
        self.bank.learn(ONE_ROW, np.array([[x]]))

    def explain_one(self, x: float) -> Explanation:
        return self.bank.explain(0, 0, float(x))

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"window": 20, "grace_period": 5, "direction": "both"}
