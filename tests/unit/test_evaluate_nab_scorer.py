"""NAB scorer on tiny hand-computed cases, and the vectorised sweep against a row-by-row reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processor.evaluate.nab.baselines import NullDetector, perfect_scores
from processor.evaluate.nab.errors import NabDataError
from processor.evaluate.nab.scorer import (
    PROFILES,
    REWARD_LOW_FN,
    REWARD_LOW_FP,
    STANDARD,
    Profile,
    SeriesLabels,
    label_series,
    normalize,
    null_scores,
    optimize_threshold,
    probation_length,
    scaled_sigmoid,
    score_at,
    score_corpus,
    threshold_curve,
)

UNIT = Profile("unit", tp_weight=1.0, fp_weight=1.0, fn_weight=1.0)


def S(x: float) -> float:
    """NAB's scaled sigmoid written out by hand: 2 * sigmoid(-5x) - 1, and -1 beyond 3."""
    return -1.0 if x > 3.0 else 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def one(n: int, windows: list[tuple[int, int]], hits: dict[int, float],
        probation: float = 0.0) -> tuple[list[SeriesLabels], list[np.ndarray]]:
    scores = np.zeros(n)
    for i, s in hits.items():
        scores[i] = s
    return [label_series("cat/a.csv", n, windows, probation)], [scores]


def test_profiles_match_nab_profiles_json() -> None:
    weights = {p.name: (p.tp_weight, p.fp_weight, p.fn_weight) for p in PROFILES}
    assert weights == {"standard": (1.0, 0.11, 1.0), "reward_low_FP_rate": (1.0, 0.22, 1.0),
                       "reward_low_FN_rate": (1.0, 0.11, 2.0)}


def test_scaled_sigmoid_anchor_values() -> None:
    # The values NAB's docstring quotes: window start, middle, end, one window past, far past.
    got = scaled_sigmoid([-1.0, -0.5, 0.0, 1.0, 3.5])
    assert got == pytest.approx([0.98661, 0.84828, 0.0, -0.98661, -1.0], abs=1e-5)


def test_detection_at_window_start_earns_exactly_tp() -> None:
    labels, scores = one(100, [(40, 49)], {40: 1.0})
    r = score_at(labels, scores, STANDARD, 0.5)
    assert r.score == pytest.approx(1.0, abs=1e-12)
    assert (r.tp, r.fn, r.fp, r.tn) == (1, 9, 0, 90)


def test_detection_at_window_end_earns_the_sigmoid_of_minus_one_over_width() -> None:
    # Last row of a 10-row window: position -(49 - 49 + 1) / 10 = -0.1, divided by S(-1).
    labels, scores = one(100, [(40, 49)], {49: 1.0})
    expected = (2 / (1 + math.exp(-0.5)) - 1) / (2 / (1 + math.exp(-5)) - 1)
    assert expected == pytest.approx(0.2482415, abs=1e-7)
    assert score_at(labels, scores, STANDARD, 0.5).score == pytest.approx(expected, abs=1e-12)


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    # Rows 45, 47, 49 detected: row 45 sits at -(49 - 45 + 1) / 10 = -0.5.
    labels, scores = one(100, [(40, 49)], {45: 1.0, 47: 1.0, 49: 1.0})
    r = score_at(labels, scores, STANDARD, 0.5)
    assert r.score == pytest.approx(S(-0.5) / S(-1.0), abs=1e-12)
    assert r.score == pytest.approx(0.8597926, abs=1e-7)
    assert (r.tp, r.fp) == (3, 0)


def test_false_positive_after_a_window_is_scaled_by_distance() -> None:
    # Window missed (-fn); FP 3 rows past its end, width 10: position 3 / (10 - 1) = 1/3.
    labels, scores = one(100, [(40, 49)], {52: 1.0})
    assert score_at(labels, scores, STANDARD, 0.5).score == pytest.approx(-1 + 0.11 * S(1 / 3), abs=1e-12)
    assert score_at(labels, scores, STANDARD, 0.5).score == pytest.approx(-1.0750488, abs=1e-7)
    assert score_at(labels, scores, REWARD_LOW_FP, 0.5).score == pytest.approx(-1 + 0.22 * S(1 / 3), abs=1e-12)


def test_false_positive_far_from_or_before_any_window_costs_the_full_fp_weight() -> None:
    far = one(100, [(40, 49)], {90: 1.0})  # (90 - 49) / 9 > 3
    before = one(100, [(40, 49)], {10: 1.0})
    for labels, scores in (far, before):
        assert score_at(labels, scores, STANDARD, 0.5).score == pytest.approx(-1.11, abs=1e-12)
    no_window = one(100, [], {10: 1.0, 20: 1.0})
    assert score_at(*no_window, STANDARD, 0.5).score == pytest.approx(-0.22, abs=1e-12)


def test_missed_window_costs_fn_weight_per_window() -> None:
    labels, scores = one(200, [(40, 49), (120, 139)], {})
    assert score_at(labels, scores, STANDARD, 0.5).score == -2.0
    assert score_at(labels, scores, REWARD_LOW_FN, 0.5).score == -4.0


def test_nab_own_all_metrics_example() -> None:
    # NAB's testScoringAllMetrics: windows rows 30-34 and 65-69, detections at 30, 31, 37,
    # all weights 1: +1 (earliest at the start) - 1 (second window missed) + S(3 / 4).
    labels, scores = one(100, [(30, 34), (65, 69)], {30: 1.0, 31: 1.0, 37: 1.0})
    r = score_at(labels, scores, UNIT, 0.5)
    assert r.score == pytest.approx(-0.9540, abs=5e-5)
    assert r.score == pytest.approx(S(0.75), abs=1e-12)
    assert (r.tn, r.tp, r.fp, r.fn) == (89, 2, 1, 8)


@pytest.mark.parametrize(("n", "expected"), [(100, 15), (1127, 169), (4032, 604), (5000, 750),
                                             (6000, 750), (15858, 750)])
def test_probation_is_15_percent_capped_at_750_rows(n: int, expected: int) -> None:
    assert probation_length(n) == expected


def test_probationary_detections_are_ignored() -> None:
    # n = 100: rows 0-14 are probationary. The FP at row 3 costs nothing; the window (10, 20)
    # is scored from row 15 on, so the detection at row 12 does not count but row 15 does.
    labels, scores = one(100, [(10, 20)], {3: 1.0, 12: 1.0}, probation=0.15)
    assert score_at(labels, scores, STANDARD, 0.5).score == -1.0
    labels, scores = one(100, [(10, 20)], {3: 1.0, 12: 1.0, 15: 1.0}, probation=0.15)
    assert score_at(labels, scores, STANDARD, 0.5).score == pytest.approx(S(-6 / 11) / S(-1), abs=1e-12)
    # A window wholly inside the probation period is not scored at all, as in NAB.
    labels, scores = one(100, [(2, 5)], {}, probation=0.15)
    assert score_at(labels, scores, STANDARD, 0.5).score == 0.0


def _corpus() -> list[SeriesLabels]:
    return [label_series("a/x.csv", 300, [(100, 129), (200, 239)]),
            label_series("a/y.csv", 200, [(150, 169)]),
            label_series("b/z.csv", 250, [])]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_normalisation_null_is_0_and_perfect_is_100(profile: Profile) -> None:
    labels = _corpus()
    null = score_corpus(labels, null_scores(labels), [profile])[profile.name]
    perfect = score_corpus(labels, perfect_scores(labels), [profile])[profile.name]
    assert null.overall.normalized == pytest.approx(0.0, abs=1e-9)
    assert perfect.overall.normalized == pytest.approx(100.0, abs=1e-9)
    assert perfect.overall.perfect_raw == 3 * profile.tp_weight
    # The null detector's best is to detect nothing: -fn per window.
    assert null.overall.null_raw == pytest.approx(-3 * profile.fn_weight)
    assert perfect.categories["a"].normalized == pytest.approx(100.0)
    assert perfect.categories["b"].normalized is None  # no windows: nothing to normalise against


def test_null_detector_streams_a_constant_half() -> None:
    d = NullDetector()
    assert [d.score_one(x) for x in (0.0, 1e9, -3.0)] == [0.5, 0.5, 0.5]


def test_normalize_formula() -> None:
    assert normalize(-1.0, null_raw=-2.0, perfect=2.0) == 25.0
    assert normalize(0.0, null_raw=0.0, perfect=0.0) is None


def test_threshold_sweep_picks_the_best_threshold() -> None:
    # One window (50-59). 0.95 is an FP before the window, 0.9 an early hit at row 52,
    # 0.6 ten FPs at rows 70-79, everything else 0.0.
    hits = {20: 0.95, 52: 0.9} | {i: 0.6 for i in range(70, 80)}
    labels, scores = one(100, [(50, 59)], hits)
    tp52 = S(-(59 - 52 + 1) / 10) / S(-1)
    fp_after = 0.11 * sum(S((i - 59) / 9) for i in range(70, 80))
    curve = threshold_curve(labels, scores, STANDARD)
    assert curve.thresholds.tolist() == [1.1, 0.95, 0.9, 0.6, 0.0]
    # At 0.0 every row is a detection: row 50 earns the full tp, rows 0-49 cost 0.11 each.
    everything = 1.0 - 50 * 0.11 + 0.11 * sum(S((i - 59) / 9) for i in range(60, 100))
    assert curve.scores == pytest.approx([-1.0, -1.11, tp52 - 0.11, tp52 - 0.11 + fp_after, everything])
    best = optimize_threshold(labels, scores, STANDARD)
    assert best.threshold == 0.9
    assert best.score == pytest.approx(tp52 - 0.11)
    assert (best.tp, best.fp) == (1, 1)


def test_sweep_breaks_ties_towards_the_higher_threshold() -> None:
    # Row 55 at 0.8 adds nothing once row 52 (0.9) is in: both thresholds score the same.
    labels, scores = one(100, [(50, 59)], {52: 0.9, 55: 0.8})
    best = optimize_threshold(labels, scores, STANDARD)
    assert best.threshold == 0.9


def _reference_score(labels: list[SeriesLabels], scores: list[np.ndarray], p: Profile,
                     t: float) -> float:
    """NAB's rules row by row: earliest detection per window, FPs by distance past the last window."""
    total = 0.0
    for lab, s in zip(labels, scores, strict=True):
        prob = probation_length(lab.n_rows)
        wins = list(lab.windows)
        for a, b in wins:
            rows = [i for i in range(a, b + 1) if i >= prob]
            if not rows:
                continue
            hit = [i for i in rows if s[i] >= t]
            total += p.tp_weight * S(-(b - hit[0] + 1) / (b - a + 1)) / S(-1) if hit else -p.fn_weight
        for i in range(lab.n_rows):
            if i < prob or s[i] < t or any(a <= i <= b for a, b in wins):
                continue
            before = [(a, b) for a, b in wins if b < i]
            if not before:
                total -= p.fp_weight
            else:
                a, b = before[-1]
                total += p.fp_weight * S((i - b) / (b - a))
    return total


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_sweep_matches_row_by_row_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = [label_series(f"c{k % 2}/f{k}.csv", n, w, 0.15) for k, (n, w) in enumerate(
        [(120, [(30, 39), (70, 84)]), (90, [(50, 52)]), (150, []), (80, [(5, 20), (60, 79)])])]
    # Coarse scores so many rows tie, as real detectors' outputs do.
    scores = [np.round(rng.random(lab.n_rows) ** 3, 2) for lab in labels]
    for profile in PROFILES:
        curve = threshold_curve(labels, scores, profile)
        for j in range(curve.thresholds.size):
            t = float(curve.thresholds[j])
            expected = _reference_score(labels, scores, profile, t)
            assert curve.scores[j] == pytest.approx(expected, abs=1e-9)
            assert score_at(labels, scores, profile, t).score == pytest.approx(expected, abs=1e-9)
        best = curve.best()
        assert best.score == pytest.approx(max(curve.scores))
        result = score_corpus(labels, scores, [profile])[profile.name]
        assert result.overall.raw.score == pytest.approx(best.score, abs=1e-9)
        cats = sum(g.raw.score for g in result.categories.values())
        assert cats == pytest.approx(best.score, abs=1e-9)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(NabDataError, match="overlap"):
        label_series("a/x.csv", 100, [(10, 20), (20, 30)])
    with pytest.raises(NabDataError, match="outside"):
        label_series("a/x.csv", 100, [(90, 100)])
    labels, scores = one(100, [(10, 20)], {5: float("nan")})
    with pytest.raises(NabDataError, match="finite"):
        threshold_curve(labels, scores, STANDARD)
