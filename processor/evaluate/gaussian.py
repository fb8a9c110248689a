"""WindowedGaussian: NAB's windowed-Gaussian baseline detector, the benchmark's reference point."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from processor.detect.base import NO_EXPLANATION, Detector, Explanation
from processor.evaluate.ring import Ring

_SQRT2 = math.sqrt(2.0)
_STD_IF_ZERO = 1e-6  # NAB's stand-in for a zero standard deviation


class WindowedGaussian(Detector):
    """NAB's ``windowedGaussian`` detector, reproduced for side-by-side scoring.

    Behaviour (as NAB describes and implements it): the score of a value is
    ``1 - Q(|x - mean| / std)`` — one minus the Gaussian tail probability (Q-function) —
    with mean and population std of the values seen so far, up to ``window`` (6400) of them.
    Until the window is full every value joins it at once; after that values collect in a
    step buffer and the window slides forward ``step`` (100) values at a time, so the mean and
    std change only every ``step`` values. The first value scores 0 (empty window); a zero std
    is replaced by 1e-6.

    Not calibrated like the other detectors: a value equal to the mean already scores 0.5
    and one sigma away 0.84, which is why NAB's threshold optimisation is needed for it. Use
    it as the benchmark baseline, not in the pipeline.

    The fill phase uses Welford's running mean/variance instead of NAB's recomputation over
    the whole list, so scores agree with NAB's to floating-point rounding, not bit for bit.

    >>> det = WindowedGaussian(window=4, step=2)
    >>> [round(s, 3) for s in det.process_many([1.0, 3.0, 1.0, 3.0, 2.0, 9.0]).tolist()]
    [0.0, 1.0, 0.841, 0.921, 0.5, 1.0]
    """

    def __init__(self, window: int = 6400, step: int = 100) -> None:
        super().__init__()
        if window < 1 or step < 1:
            raise ValueError(f"window and step must be >= 1, got {window} and {step}")
        self.window = window
        self.step = step
        self._ring = Ring(window)
        self._pending = np.zeros(step)
        self._n_pending = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._std = 1.0

    def _learn(self, x: float) -> None:
        if not self._ring.full:
            self._ring.push(x)
            n = self._ring.size
            d = x - self._mean
            self._mean += d / n
            self._m2 += d * (x - self._mean)
            self._set_std(math.sqrt(max(self._m2, 0.0) / n))
            return
        self._pending[self._n_pending] = x
        self._n_pending += 1
        if self._n_pending == self.step:
            self._ring.extend(self._pending)
            self._n_pending = 0
            values = self._ring.buf
            self._mean = float(np.mean(values))
            self._set_std(float(np.std(values)))

    def _set_std(self, std: float) -> None:
        self._std = std if std != 0.0 else _STD_IF_ZERO

    def _score(self, x: float) -> float:
        if self._ring.size == 0:
            return 0.0
        z = abs(x - self._mean) / self._std
        return 1.0 - 0.5 * math.erfc(z / _SQRT2)

    def explain_one(self, x: float) -> Explanation:
        if self._ring.size == 0:
            return NO_EXPLANATION
        return Explanation(self._mean, (float(x) - self._mean) / self._std)

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"window": 50, "step": 7}
