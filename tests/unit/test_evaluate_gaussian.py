"""WindowedGaussian reproduces NAB's windowed-Gaussian baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processor.evaluate.gaussian import WindowedGaussian


def nab_reference(values: np.ndarray, window: int, step: int) -> list[float]:
    """NAB's algorithm as its detector describes it, written the direct way (lists, full recompute)."""
    data: list[float] = []
    pending: list[float] = []
    mean, std = 0.0, 1.0
    scores = []
    for v in values.tolist():
        score = 0.0
        if data:
            xv = 2 * mean - v if v < mean else v  # the Q-function is symmetric: use the upper tail
            q = 0.5 * math.erfc((xv - mean) / std / math.sqrt(2))
            score = 1.0 - q
        scores.append(score)
        if len(data) < window:
            data.append(v)
        else:
            pending.append(v)
            if len(pending) < step:
                continue
            data = data[step:] + pending
            pending = []
        mean, std = float(np.mean(data)), float(np.std(data))
        std = std if std != 0.0 else 1e-6
    return scores


@pytest.mark.parametrize(("window", "step"), [(64, 8), (50, 7), (10, 10)])
def test_matches_the_nab_algorithm_through_fill_and_slide(window: int, step: int) -> None:
    rng = np.random.default_rng(window)
    values = np.cumsum(rng.normal(0.0, 1.0, 600)) + 20.0  # a random walk: the window matters
    values[400] += 15.0
    ours = WindowedGaussian(window=window, step=step).process_many(values)
    np.testing.assert_allclose(ours, nab_reference(values, window, step), rtol=0, atol=1e-9)


def test_defaults_are_nabs() -> None:
    det = WindowedGaussian()
    assert (det.window, det.step) == (6400, 100)


def test_first_value_scores_zero_then_constant_window_uses_tiny_std() -> None:
    det = WindowedGaussian(window=20, step=5)
    scores = det.process_many([3.0] * 10)
    assert scores[0] == 0.0 and (scores[1:] == 0.5).all()  # equal to the mean: Q = 0.5
    assert det.score_one(3.001) == 1.0  # std 0 -> 1e-6: any change is "certain"


def test_mean_and_std_only_move_every_step_once_full() -> None:
    det = WindowedGaussian(window=4, step=3)
    det.process_many([1.0, 2.0, 3.0, 4.0])
    before = det.score_one(10.0)
    det.process_many([100.0, 100.0])  # two of three pending: no slide yet
    assert det.score_one(10.0) == before
    det.learn_one(100.0)
    assert det.score_one(10.0) != before
