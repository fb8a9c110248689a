"""NAB's calibration baselines: the null detector (constant 0.5) and a perfect oracle for tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from processor.evaluate.nab.scorer import NULL_SCORE, SeriesLabels


class NullDetector:
    """NAB's null detector: every row scores 0.5, learning nothing; its optimised score is 0."""

    def score_one(self, x: float) -> float:
        return NULL_SCORE

    def learn_one(self, x: float) -> None:
        return None


def perfect_scores(labels: Sequence[SeriesLabels]) -> list[npt.NDArray[np.float64]]:
    """An oracle that reads the labels: 1.0 on the first row of every window, 0.0 elsewhere.

    Only for tests and calibration: it scores 100 by construction, which checks normalisation.
    """
    out = []
    for lab in labels:
        s = np.zeros(lab.n_rows)
        s[[a for a, _ in lab.windows]] = 1.0
        out.append(s)
    return out
