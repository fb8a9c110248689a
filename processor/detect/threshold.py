"""Thresholding: which flagged values a detector refuses to learn, and the Thresholded wrapper.

`refusals` is the rule, vectorised: the pipeline's WindowDetector applies it per entity and
metric; Thresholded is the same rule around one scalar detector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from processor.detect.base import BaseDetector
from processor.detect.robust import RobustBaseline


def refusals(flagged: np.ndarray, assessed: np.ndarray, run: np.ndarray, adapt_after: int | None
             ) -> tuple[np.ndarray, np.ndarray]:
    """(the new runs of consecutive flagged values, which values to refuse to learn).

    A flagged value extends its run, an assessed unflagged one ends it (a value that was not
    assessed, e.g. too few requests, leaves it). A flagged value is refused while its run is
    at most ``adapt_after`` long (always when None): an incident stays out of the baseline,
    a lasting change becomes the new level after ``adapt_after`` values.
    """
    run = np.where(flagged, run + 1, np.where(assessed, 0, run))
    refuse = flagged if adapt_after is None else flagged & (run <= adapt_after)
    return run, refuse


class Thresholded(BaseDetector[Any]):
    """Flags ``score >= threshold`` and, unless ``learn_from_anomalies``, does not learn flagged values.

    Refusing keeps an incident out of the baseline, so a long outage stays anomalous instead
    of becoming the new normal. The price: after a genuine, permanent level change the inner
    detector would never adapt. ``adapt_after=N`` bounds that — after N consecutive refused
    values the wrapper learns again (and keeps learning until a value is not flagged), so a
    lasting change is accepted as the new level after N windows. A refused value is
    :meth:`skip_one` for the inner detector (a clocked one records a gap).

    Scores are the inner detector's.

    >>> from processor.detect.robust import RobustBaseline
    >>> det = Thresholded(RobustBaseline(window=10, grace_period=5), threshold=0.5)
    >>> _ = det.process_many([10.0, 11.0, 9.0, 10.0, 10.0, 11.0, 9.0])
    >>> det.process_one(50.0) >= 0.5, det.detector.n_learned
    (True, 7)
    """

    def __init__(
        self,
        detector: BaseDetector[Any],
        threshold: float = 0.5,
        learn_from_anomalies: bool = False,
        adapt_after: int | None = None,
    ) -> None:
        super().__init__()
        self.detector = detector
        self.threshold = threshold
        self.learn_from_anomalies = learn_from_anomalies
        self.adapt_after = adapt_after
        self._refused_run = 0

    @property
    def clocked(self) -> bool:
        return self.detector.clocked

    def _coerce(self, x: Any) -> Any:
        return self.detector._coerce(x)

    def _coerce_many(self, xs: Any) -> np.ndarray:
        return self.detector._coerce_many(xs)

    def _finite(self, x: Any) -> bool:
        return self.detector._finite(x)

    def _score(self, x: Any) -> float:
        return self.detector.score_one(x)

    def _learn(self, x: Any) -> None:
        self.detector.learn_one(x)

    def score_one(self, x: Any, volume: float | None = None) -> float:
        return self.detector.score_one(x, volume)

    def flag_one(self, x: Any, volume: float | None = None) -> bool:
        """Whether x is anomalous under the threshold (learns nothing)."""
        return self.detector.score_one(x, volume) >= self.threshold

    def learn_one(self, x: Any, volume: float | None = None) -> None:
        self._learn_scored(x, volume, self.detector.score_one(x, volume))

    def process_one(self, x: Any, volume: float | None = None) -> float:
        s = self.detector.score_one(x, volume)
        self._learn_scored(x, volume, s)
        return s

    def _learn_scored(self, x: Any, volume: float | None, score: float) -> None:
        flagged = np.array([score >= self.threshold and not self.learn_from_anomalies])
        run, refuse = refusals(flagged, np.ones(1, bool), np.array([self._refused_run]), self.adapt_after)
        self._refused_run = int(run[0])
        if refuse[0]:
            self.detector.skip_one()
            return
        self.detector.learn_one(x, volume)
        self.n_learned = self.detector.n_learned

    def skip_one(self) -> None:
        self.detector.skip_one()

    @classmethod
    def _unit_test_params(cls) -> dict[str, Any]:
        return {"detector": RobustBaseline(window=20, grace_period=5), "threshold": 0.3}
