"""Crafted seeded series through the level detectors (RobustBaseline, EWMA): step, spike, drift, noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from processor.detect import EWMA, RobustBaseline
from processor.detect.base import Detector

THRESHOLD = 0.5
LEVEL, SIGMA = 50.0, 2.0
ONSET = 300

FACTORIES: dict[str, Callable[[str], Detector]] = {
    "robust": lambda direction: RobustBaseline(direction=direction),
    "ewma": lambda direction: EWMA(direction=direction),
}
detectors = pytest.mark.parametrize("name", sorted(FACTORIES))


def noise(n: int, seed: int) -> np.ndarray:
    return LEVEL + np.random.default_rng(seed).normal(0.0, SIGMA, n)


def step(shift_sigmas: float, seed: int = 1) -> np.ndarray:
    xs = noise(ONSET + 100, seed)
    xs[ONSET:] += shift_sigmas * SIGMA
    return xs


def longest_run(flags: np.ndarray) -> int:
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


@detectors
@pytest.mark.parametrize("shift", [8.0, -8.0])
def test_step_detected_within_three_points_in_its_direction(name: str, shift: float) -> None:
    xs = step(shift)
    watching = FACTORIES[name]("up" if shift > 0 else "down")
    blind = FACTORIES[name]("down" if shift > 0 else "up")
    both = FACTORIES[name]("both")
    scores = watching.process_many(xs)
    assert (scores[:ONSET] >= THRESHOLD).sum() <= 1  # noise alone: at most a stray point
    assert (scores[ONSET:ONSET + 3] >= THRESHOLD).any()
    # The opposite direction never alarms on it: traffic going up is not an incident.
    assert (blind.process_many(xs)[ONSET:] < THRESHOLD).all()
    assert both.process_many(xs)[ONSET] >= THRESHOLD


@detectors
def test_step_alarm_ends_once_the_new_level_is_the_baseline(name: str) -> None:
    scores = FACTORIES[name]("up").process_many(step(8.0))
    # RobustBaseline needs half its 60-value window on the new level; EWMA's variance absorbs it.
    assert (scores[ONSET + 40:] < THRESHOLD).all()


@detectors
def test_spike_flagged_and_does_not_move_the_baseline(name: str) -> None:
    xs = noise(600, seed=2)
    xs[ONSET] += 12 * SIGMA
    scores = FACTORIES[name]("both").process_many(xs)
    assert scores[ONSET] >= 0.8
    assert (np.delete(scores, ONSET)[ONSET:] < THRESHOLD).all()  # nothing in the spike's wake
    assert (np.delete(scores, ONSET) >= THRESHOLD).sum() <= 1


def test_robust_sees_a_second_spike_right_after_the_first() -> None:
    # Median and MAD ignore the first outlier; a mean/variance detector would be blinded.
    xs = noise(400, seed=3)
    xs[ONSET] += 12 * SIGMA
    xs[ONSET + 2] += 8 * SIGMA
    scores = RobustBaseline(direction="up").process_many(xs)
    assert scores[ONSET] >= THRESHOLD and scores[ONSET + 2] >= THRESHOLD


@detectors
def test_slow_drift_gives_no_sustained_alarm(name: str) -> None:
    # 30 sigma over 1500 points: a slow trend both detectors must follow, not alarm on.
    xs = noise(1500, seed=4) + np.linspace(0.0, 30 * SIGMA, 1500)
    flags = FACTORIES[name]("both").process_many(xs) >= THRESHOLD
    assert flags.mean() < 0.01
    assert longest_run(flags) <= 1


@detectors
@pytest.mark.parametrize("seed", [5, 6, 7])
def test_noise_only_false_positive_rate_below_one_percent(name: str, seed: int) -> None:
    scores = FACTORIES[name]("both").process_many(noise(5000, seed))
    assert (scores >= THRESHOLD).mean() < 0.01
    assert np.median(scores) == 0.0


@detectors
def test_heavy_tailed_noise_false_positive_rate_below_one_percent(name: str) -> None:
    # Student-t (5 dof) noise: real latency noise has fatter tails than a Gaussian.
    rng = np.random.default_rng(8)
    xs = LEVEL + SIGMA * rng.standard_t(5, 5000)
    assert (FACTORIES[name]("both").process_many(xs) >= THRESHOLD).mean() < 0.01


@detectors
def test_warm_up_scores_zero(name: str) -> None:
    det = FACTORIES[name]("both")
    xs = noise(det.grace_period, seed=9)
    xs[-1] += 50 * SIGMA
    assert (det.process_many(xs) == 0.0).all()


@detectors
def test_min_volume_guard_silences_and_skips_low_volume_values(name: str) -> None:
    guarded = FACTORIES[name]("up").clone(min_volume=20.0)
    xs = noise(200, seed=10)
    volumes = np.full(200, 100.0)
    xs[150:160] = 1.0  # an error ratio of 100% ...
    volumes[150:160] = 3.0  # ... on three requests
    scores = guarded.process_many(xs, volumes)
    assert (scores[150:160] == 0.0).all()
    assert guarded.n_learned == 190
    # Those values were not learned: the same detector without them scores the rest the same.
    reference = FACTORIES[name]("up").clone(min_volume=20.0)
    keep = np.r_[0:150, 160:200]
    np.testing.assert_allclose(scores[keep], reference.process_many(xs[keep], volumes[keep]), rtol=1e-9)
    # Enough volume and the same value is an alarm.
    assert guarded.score_one(xs[0] + 20 * SIGMA, volume=25.0) >= THRESHOLD
    assert guarded.score_one(xs[0] + 20 * SIGMA, volume=19.0) == 0.0


def test_robust_vectorised_process_many_with_volumes_equals_the_loop() -> None:
    xs = noise(500, seed=13)
    xs[::23] = np.nan
    xs[300] += 30 * SIGMA
    volumes = np.random.default_rng(13).poisson(30, 500).astype(np.float64)
    volumes[::31] = np.nan
    vectorised = RobustBaseline(window=40, min_volume=25.0)
    loop = RobustBaseline(window=40, min_volume=25.0)
    scores = vectorised.process_many(xs, volumes)
    np.testing.assert_allclose(scores, [loop.process_one(x, v) for x, v in zip(xs, volumes, strict=True)],
                               rtol=1e-9, atol=1e-12)
    assert scores[300] > 0.9 and vectorised.n_learned == loop.n_learned < 450


def test_flat_series_small_change_is_not_infinite() -> None:
    # MAD 0 on a flat series: the relative floor (1% of the level) keeps z finite and sane.
    det = RobustBaseline(direction="up")
    det.process_many(np.full(100, 120.0))
    assert det.score_one(120.5) == 0.0
    assert det.score_one(127.0) >= THRESHOLD
    assert det.explain_one(127.0).expected == 120.0


def test_explain_reports_baseline_and_signed_deviation() -> None:
    det = RobustBaseline(direction="both")
    det.process_many(noise(200, seed=11))
    exp = det.explain_one(LEVEL - 10 * SIGMA)
    assert abs(exp.expected - LEVEL) < 0.5 * SIGMA
    assert -12 < exp.deviation < -8
    ewma = EWMA()
    ewma.process_many(noise(200, seed=11))
    e2 = ewma.explain_one(LEVEL + 10 * SIGMA)
    assert abs(e2.expected - LEVEL) < SIGMA and 7 < e2.deviation < 13


def test_robust_memory_is_bounded_by_its_window() -> None:
    det = RobustBaseline(window=30)
    det.process_many(noise(10_000, seed=12))
    assert det.bank.ring.size == 30
