"""The detector banks give bit for bit the scores and explanations of the per-value reference
detectors (tests/unit/reference/), and the scalar detectors are one-row views of them."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from processor.detect.banks import EWMABank, RobustBank, SeasonalBank, directions
from processor.detect.base import Detector
from tests.unit.reference.ewma import EWMA
from tests.unit.reference.robust import RobustBaseline
from tests.unit.reference.seasonal import Seasonal

DIRS = ("down", "up", "both")
MIN_SCALE = np.array([0.0, 0.05, 0.0])
REL = np.array([0.025, 0.0, 0.01])
ROWS = 7


def streams(seed: int, steps: int) -> np.ndarray:
    """(steps, rows, metrics): noise around per-stream levels, with steps, spikes and NaN holes."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(1.0, 50.0, (ROWS, len(DIRS)))
    x = level + rng.normal(0.0, 1.0, (steps, ROWS, len(DIRS))) * rng.uniform(0.0, 2.0, (ROWS, len(DIRS)))
    x[rng.random(x.shape) < 0.03] *= 3.0  # spikes up
    x[rng.random(x.shape) < 0.03] *= 0.2  # and down
    x[steps // 2:, : ROWS // 2] += 15.0  # a lasting step on some streams
    x[:, -1, 0] = 7.0  # a flat stream (MAD 0)
    x[rng.random(x.shape) < 0.08] = np.nan
    return x


def check(bank_scores: np.ndarray, dets: Sequence[Sequence[Detector]], rows: np.ndarray, x: np.ndarray) -> None:
    expected = np.array([[dets[r][j].score_one(float(x[b, j])) for j in range(len(DIRS))]
                         for b, r in enumerate(rows)])
    assert bank_scores.tolist() == expected.tolist()


def subsets(seed: int, steps: int) -> list[np.ndarray]:
    """A random subset of the rows at each step: batches need not hold every row, nor in order."""
    rng = np.random.default_rng(seed + 1)
    return [rng.permutation(ROWS)[: rng.integers(1, ROWS + 1)] for _ in range(steps)]


def scalar(kind: str, direction: str, j: int) -> Detector:
    lo, rel = float(MIN_SCALE[j]), float(REL[j])
    if kind == "robust":
        return RobustBaseline(window=20, direction=direction, grace_period=5, min_scale=lo, min_relative_scale=rel)
    return EWMA(alpha=0.1, direction=direction, grace_period=5, min_scale=lo, min_relative_scale=rel)


@pytest.mark.parametrize("kind", ["robust", "ewma"])
@pytest.mark.parametrize("seed", [1, 2])
def test_bank_matches_its_scalar_detector(kind: str, seed: int) -> None:
    bank: RobustBank | EWMABank = (RobustBank(20, directions(DIRS), 5, MIN_SCALE, REL) if kind == "robust"
                                   else EWMABank(0.1, directions(DIRS), 5, MIN_SCALE, REL))
    bank.grow(ROWS)
    dets = [[scalar(kind, d, j) for j, d in enumerate(DIRS)] for _ in range(ROWS)]
    x, scored = streams(seed, 300), 0
    for t, rows in enumerate(subsets(seed, 300)):
        if t == 150:
            bank.grow(2 * ROWS)
        xt = x[t, rows]
        if isinstance(bank, RobustBank):
            srt = bank.sorted_rings(rows)
            got = bank.score(rows, xt, srt)
            med, scale = bank.baseline(rows, 0, srt[:, 0])  # the traffic member's view, vectorised
            for b, r in enumerate(rows):
                if dets[r][0].n_learned:
                    v = float(med[b]) + 1.0
                    e = dets[r][0].explain_one(v)
                    assert (float(med[b]), (v - float(med[b])) / float(scale[b])) == (e.expected, e.deviation)
        else:
            got = bank.score(rows, xt)
        check(got, dets, rows, xt)
        scored += int((got > 0).sum())
        for b, r in enumerate(rows):
            for j in range(len(DIRS)):
                v = float(xt[b, j])
                if math.isfinite(v) and dets[r][j].n_learned:
                    assert bank.explain(int(r), j, v) == dets[r][j].explain_one(v)
        bank.learn(rows, xt)
        for b, r in enumerate(rows):
            for j in range(len(DIRS)):
                dets[r][j].learn_one(float(xt[b, j]))
    assert scored > 20  # the streams do alarm: the comparison covered the scoring path


@pytest.mark.parametrize("seed", [1, 2])
def test_seasonal_bank_matches_seasonal_with_gaps(seed: int) -> None:
    period, lags = 12, (1, 2)
    bank = SeasonalBank(period, lags, 1, directions(DIRS), MIN_SCALE, REL)
    bank.grow(ROWS)
    dets = [[Seasonal(period=period, lags=lags, direction=d, min_scale=float(MIN_SCALE[j]),
                      min_relative_scale=float(REL[j])) for j, d in enumerate(DIRS)] for _ in range(ROWS)]
    x = streams(seed, 200)
    x += 10.0 * np.sin(2 * np.pi * np.arange(200) / period)[:, None, None]  # a daily shape
    rng, scored = np.random.default_rng(seed), 0
    for t in range(200):
        if t == 120:
            bank.grow(2 * ROWS)  # more entities arrive: the held history moves to the larger arrays
        rows = np.arange(ROWS)  # one clock per row: every row takes every slot
        xt = x[t]
        refs = bank.references(rows)
        got = bank.score(rows, xt, refs)
        check(got, dets, rows, xt)
        scored += int((got > 0).sum())
        for r in rows:
            for j in range(len(DIRS)):
                v = float(xt[r, j])
                if math.isfinite(v):
                    assert bank.explain(int(r), j, v) == dets[r][j].explain_one(v) or math.isnan(
                        dets[r][j].explain_one(v).expected)
        bank.learn(rows, xt, refs)
        for r in rows:
            for j in range(len(DIRS)):
                dets[r][j].learn_one(float(xt[r, j]))
        if rng.random() < 0.05:  # a few windows with no data for one row
            gr, g = int(rng.integers(ROWS)), int(rng.choice([1, 2, 4, 30]))  # 30: longer than the ring
            bank.gap(gr, g)
            for det in dets[gr]:
                for _ in range(g):
                    det.skip_one()
    assert scored > 10


def test_bank_rows_reset_to_unfitted() -> None:
    bank = RobustBank(20, directions(DIRS), 0, MIN_SCALE, REL)
    bank.grow(2)
    rows = np.arange(2)
    for _ in range(30):
        bank.learn(rows, np.full((2, 3), 10.0))
    bank.reset(1)
    assert bank.n_learned[:, 0].tolist() == [30, 0]
    assert bank.score(rows, np.full((2, 3), 100.0), bank.sorted_rings(rows))[1].tolist() == [0.0, 0.0, 0.0]
    assert bank.score(rows, np.full((2, 3), 100.0), bank.sorted_rings(rows))[0, 1] > 0.9


def _stream(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A level with a step, spikes and NaN holes, and request volumes some of which are low."""
    rng = np.random.default_rng(seed)
    xs = 40.0 + rng.normal(0.0, 2.0, 400) + 6.0 * np.sin(np.arange(400) * 2 * np.pi / 12)
    xs[250:] += 12.0
    xs[rng.random(400) < 0.03] *= 2.5
    xs[rng.random(400) < 0.03] *= 0.3
    xs[rng.random(400) < 0.05] = np.nan
    return xs, rng.poisson(30, 400).astype(np.float64)


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("kind", ["robust", "ewma", "seasonal"])
def test_scalar_detectors_are_the_references(kind: str, direction: str) -> None:
    from processor.detect import EWMA as ViewEWMA
    from processor.detect import RobustBaseline as ViewRobust
    from processor.detect import Seasonal as ViewSeasonal

    params: dict = {"direction": direction, "min_volume": 25.0}
    classes = {"robust": (ViewRobust, RobustBaseline, {"window": 30}),
               "ewma": (ViewEWMA, EWMA, {"alpha": 0.1}),
               "seasonal": (ViewSeasonal, Seasonal, {"period": 12, "lags": (1, 2)})}[kind]
    view, ref = classes[0](**params, **classes[2]), classes[1](**params, **classes[2])
    xs, volumes = _stream(3)
    got = [view.process_one(x, v) for x, v in zip(xs, volumes, strict=True)]
    want = [ref.process_one(x, v) for x, v in zip(xs, volumes, strict=True)]
    assert got == want and max(got) > 0.5
    assert view.n_learned == ref.n_learned
    for v in (30.0, 45.0, 80.0):
        assert view.explain_one(v) == ref.explain_one(v)
