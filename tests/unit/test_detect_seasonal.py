"""Seasonal detector: phase-aware comparison with a day and a week earlier, history, gaps."""

from __future__ import annotations

import math

import numpy as np

from processor.detect import RobustBaseline, Seasonal

P = 48  # windows per "day"
THRESHOLD = 0.5


def diurnal(days: int, seed: int, start_day: int = 0) -> np.ndarray:
    t = np.arange(start_day * P, (start_day + days) * P)
    return 100.0 + 50.0 * np.sin(2 * math.pi * t / P) + np.random.default_rng(seed).normal(0.0, 3.0, t.size)


def seeded(direction: str = "both", seed: int = 1) -> Seasonal:
    det = Seasonal(period=P, direction=direction)
    det.seed_history(diurnal(8, seed))
    return det


def test_value_normal_for_another_phase_is_flagged_at_this_phase() -> None:
    det = seeded()
    today = diurnal(1, seed=2, start_day=8)
    trough = int(np.argmin(today))
    det.process_many(today[:trough])
    peak_value = float(today.max())
    assert det.score_one(peak_value) >= 0.9
    # A rolling baseline over the last hour-scale window has seen such values and stays quiet.
    rolling = RobustBaseline(window=P)
    rolling.process_many(np.r_[diurnal(8, 1), today[:trough]])
    assert rolling.score_one(peak_value) < THRESHOLD


def test_noise_only_days_false_positive_rate_below_one_percent() -> None:
    det = seeded(seed=3)
    scores = det.process_many(diurnal(7, seed=4, start_day=8))
    assert (scores >= THRESHOLD).mean() < 0.01


def test_step_detected_at_onset_in_its_direction() -> None:
    xs = diurnal(2, seed=5, start_day=8)
    onset = 30
    xs[onset:] += 40.0
    up, down = seeded("up", seed=6), seeded("down", seed=6)
    s_up, s_down = up.process_many(xs), down.process_many(xs)
    assert (s_up[:onset] < THRESHOLD).all()
    assert (s_up[onset:onset + 2] >= THRESHOLD).all()
    assert (s_down < THRESHOLD).all()


def test_expected_is_the_same_phase_of_earlier_days() -> None:
    det = Seasonal(period=4, lags=(1, 7), half_width=0)
    pattern = [5.0, 1.0, 1.0, 1.0]
    det.seed_history(pattern * 7)
    for value in pattern:
        assert det.explain_one(value).expected == value
        assert det.score_one(value) == 0.0
        det.learn_one(value)


def test_gap_keeps_phase() -> None:
    det = Seasonal(period=4, lags=(1, 2), half_width=0)
    det.seed_history([5.0, 1.0, 1.0, 1.0] * 2 + [5.0, math.nan, 1.0, 1.0])
    # Had the NaN been dropped, the next slot would be compared with phase 3 (value 1).
    assert det.explain_one(5.0).expected == 5.0
    assert det.process_one(5.0) == 0.0
    assert det.process_one(5.0) >= 0.9  # phase 1 expects 1


def test_low_volume_is_a_gap_and_keeps_phase() -> None:
    det = Seasonal(period=4, lags=(1, 2), half_width=0, min_volume=10.0)
    xs = np.array([5.0, 1.0, 1.0, 1.0] * 3)
    vols = np.full(12, 100.0)
    xs[9], vols[9] = 50.0, 2.0
    scores = det.process_many(xs, vols)
    assert scores[9] == 0.0
    assert det.explain_one(5.0).expected == 5.0


def test_no_references_scores_zero() -> None:
    det = Seasonal(period=P)
    xs = diurnal(1, seed=7)
    xs[P // 2] += 500.0
    assert (det.process_many(xs[: P - 1]) == 0.0).all()  # nothing a day back yet


def test_seed_history_equals_learning_the_same_values() -> None:
    history, today = diurnal(8, seed=8), diurnal(1, seed=9, start_day=8)
    a, b = Seasonal(period=P), Seasonal(period=P)
    a.seed_history(history)
    b.process_many(history)
    np.testing.assert_array_equal(a.process_many(today), b.process_many(today))


def test_memory_is_one_week_plus_half_width() -> None:
    det = Seasonal(period=P, lags=(1, 7), half_width=2)
    det.process_many(diurnal(20, seed=10))
    assert det.bank.ring.size == 7 * P + 2
