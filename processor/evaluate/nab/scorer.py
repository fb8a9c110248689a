"""NAB v1.1 scoring (nab/sweeper.py semantics), vectorised: window rewards, FP costs, threshold sweep, normalisation."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from processor.evaluate.nab.errors import NabDataError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

PROBATION_PERCENT = 0.15
# NAB caps the probationary period at probation_percent * 5000 rows (750 at 15%).
PROBATION_CAP_ROWS = 5000
# NAB's sweep starts above every [0, 1] score, so its first row is "no detection at all".
NO_DETECTION_THRESHOLD = 1.1
# Constant score of NAB's null detector; normalisation puts its optimised score at 0.
NULL_SCORE = 0.5


@dataclass(frozen=True)
class Profile:
    """One NAB application profile (config/profiles.json CostMatrix; tnWeight is unused by NAB)."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


STANDARD = Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0)
REWARD_LOW_FP = Profile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0)
REWARD_LOW_FN = Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0)
PROFILES: tuple[Profile, ...] = (STANDARD, REWARD_LOW_FP, REWARD_LOW_FN)


def scaled_sigmoid(position: npt.ArrayLike) -> FloatArray:
    """NAB's reward curve 2*sigmoid(-5x) - 1: +0.9866 at x=-1 (window start), 0 at x=0, -1 beyond x=3."""
    x = np.asarray(position, dtype=np.float64)
    # Clip the exponent so positions far past a window (or +inf) never overflow; they map to -1.
    curve = 2.0 / (1.0 + np.exp(5.0 * np.minimum(x, 3.0))) - 1.0
    return np.where(x > 3.0, -1.0, curve)


_MAX_TP = float(scaled_sigmoid(-1.0))


def probation_length(n_rows: int, probation_percent: float = PROBATION_PERCENT) -> float:
    """Rows at the start of a file whose detections NAB ignores: rows with index < this value."""
    return min(math.floor(probation_percent * n_rows), probation_percent * PROBATION_CAP_ROWS)


@dataclass(frozen=True, eq=False)
class SeriesLabels:
    """Scoring geometry of one series, independent of detector and profile.

    `unit_value[i]` is what a detection at row i is worth before profile weights: inside a
    window the scaled sigmoid of its relative position divided by its value at the window
    start (so the earliest possible detection earns exactly tp_weight); outside, the scaled
    sigmoid of the distance past the preceding window in window lengths (-1 before any window).
    """

    name: str
    n_rows: int
    windows: tuple[tuple[int, int], ...]
    window_id: IntArray
    unit_value: FloatArray
    scorable: BoolArray

    @property
    def category(self) -> str:
        return self.name.split("/", 1)[0] if "/" in self.name else ""


def label_series(name: str, n_rows: int, windows: Sequence[tuple[int, int]],
                 probation_percent: float = PROBATION_PERCENT) -> SeriesLabels:
    """Builds the geometry of a series from its windows as inclusive row-index ranges [start, end]."""
    for a, b in windows:
        if not 0 <= a <= b < n_rows:
            raise NabDataError(f"{name}: window rows [{a}, {b}] are outside 0..{n_rows - 1}")
    members = [np.arange(a, b + 1, dtype=np.int64) for a, b in windows]
    return label_rows(name, n_rows, members, probation_percent)


def label_rows(name: str, n_rows: int, windows: Sequence[npt.ArrayLike],
               probation_percent: float = PROBATION_PERCENT) -> SeriesLabels:
    """Builds the geometry of a series from the rows of each window, scored in file order.

    A window's rows need not be contiguous (a file whose clock steps back has rows of a
    window's time range on either side of rows outside it): positions count the window's own
    rows, so the k-th of m rows sits at -(m - k) / m, and a row outside every window is
    measured from the last row of the most recent window that ended before it. For a
    contiguous window these are NAB's sweeper positions exactly.
    """
    arrays = (np.unique(np.asarray(w, dtype=np.int64)) for w in windows)
    members = sorted((m for m in arrays if m.size), key=lambda m: int(m[0]))
    window_id = np.full(n_rows, -1, dtype=np.int64)
    rank = np.zeros(n_rows, dtype=np.int64)
    for k, m in enumerate(members):
        if m[0] < 0 or m[-1] >= n_rows:
            raise NabDataError(f"{name}: window rows [{m[0]}, {m[-1]}] are outside 0..{n_rows - 1}")
        if (window_id[m] >= 0).any():
            raise NabDataError(f"{name}: windows {int(window_id[m].max())} and {k} overlap; merge them")
        window_id[m] = k
        rank[m] = np.arange(m.size)
    rows = np.arange(n_rows, dtype=np.int64)
    ends = np.array([int(m[-1]) for m in members], dtype=np.int64)
    widths = np.array([m.size for m in members], dtype=np.float64)

    unit = np.full(n_rows, -1.0)
    inside = window_id >= 0
    k_in = window_id[inside]
    # NAB: position = -(right - i + 1) / width, i.e. -1 at the first row, -1/width at the last.
    unit[inside] = scaled_sigmoid(-(widths[k_in] - rank[inside]) / widths[k_in]) / _MAX_TP
    # Outside: the preceding window is the last one whose end is before the row.
    by_end = np.argsort(ends, kind="stable")
    prev = np.searchsorted(ends[by_end], rows, side="left") - 1
    after = ~inside & (prev >= 0)
    k_prev = by_end[prev[after]]
    # A one-row window makes NAB divide by zero; treat its FPs as far from it (-1).
    with np.errstate(divide="ignore"):
        past = (rows[after] - ends[k_prev]) / (widths[k_prev] - 1.0)
    unit[after] = scaled_sigmoid(np.where(widths[k_prev] > 1.0, past, np.inf))

    scorable = rows >= probation_length(n_rows, probation_percent)
    spans = tuple((int(m[0]), int(m[-1])) for m in members)
    return SeriesLabels(name=name, n_rows=n_rows, windows=spans, window_id=window_id,
                        unit_value=unit, scorable=scorable)


@dataclass(frozen=True)
class ThresholdScore:
    """Raw NAB score and point counts when every score >= threshold is a detection."""

    threshold: float
    score: float
    tp: int
    tn: int
    fp: int
    fn: int

    @property
    def total(self) -> int:
        return self.tp + self.tn + self.fp + self.fn


@dataclass(frozen=True, eq=False)
class ThresholdCurve:
    """NAB's calcScoreByThreshold over a set of series: one row per distinct score, highest first."""

    thresholds: FloatArray
    scores: FloatArray
    tp: IntArray
    tn: IntArray
    fp: IntArray
    fn: IntArray

    def at_index(self, j: int) -> ThresholdScore:
        return ThresholdScore(float(self.thresholds[j]), float(self.scores[j]), int(self.tp[j]),
                              int(self.tn[j]), int(self.fp[j]), int(self.fn[j]))

    def best(self) -> ThresholdScore:
        """The highest score; on ties the highest threshold, as NAB's stable sort picks."""
        return self.at_index(int(np.argmax(self.scores)))


@dataclass(frozen=True, eq=False)
class _Points:
    """Scorable rows of several series, flattened: score, weighted value, global window id."""

    score: FloatArray
    value: FloatArray
    window: IntArray
    n_windows: int  # windows with at least one scorable row: each starts at -fn_weight


def _gather(labels: Sequence[SeriesLabels], scores: Sequence[npt.ArrayLike],
            profile: Profile) -> _Points:
    if len(labels) != len(scores):
        raise NabDataError(f"{len(labels)} labelled series but {len(scores)} score arrays")
    parts_s, parts_v, parts_w = [], [], []
    offset = 0
    for lab, raw in zip(labels, scores, strict=True):
        s = np.asarray(raw, dtype=np.float64)
        if s.shape != (lab.n_rows,):
            raise NabDataError(f"{lab.name}: {s.shape[0] if s.ndim else 0} scores for {lab.n_rows} rows")
        if not np.all(np.isfinite(s)):
            raise NabDataError(f"{lab.name}: anomaly scores must be finite (row {int(np.argmin(np.isfinite(s)))})")
        keep = lab.scorable
        w = lab.window_id[keep]
        weight = np.where(w >= 0, profile.tp_weight, profile.fp_weight)
        parts_s.append(s[keep])
        parts_v.append(lab.unit_value[keep] * weight)
        parts_w.append(np.where(w >= 0, w + offset, -1))
        offset += len(lab.windows)
    window = np.concatenate(parts_w) if parts_w else np.zeros(0, np.int64)
    return _Points(score=np.concatenate(parts_s) if parts_s else np.zeros(0),
                   value=np.concatenate(parts_v) if parts_v else np.zeros(0),
                   window=window, n_windows=int(np.unique(window[window >= 0]).size))


def threshold_curve(labels: Sequence[SeriesLabels], scores: Sequence[npt.ArrayLike],
                    profile: Profile) -> ThresholdCurve:
    """Score at every distinct threshold in one pass: sort all scorable rows once, then prefix sums."""
    p = _gather(labels, scores, profile)
    order = np.argsort(-p.score, kind="stable")
    s, v, w = p.score[order], p.value[order], p.window[order]
    in_win = w >= 0
    # Each row, once its threshold is reached, changes the total by its FP value, or by how much
    # it raises its window's best (earliest) detection above the current best (initially -fn).
    delta = np.where(in_win, 0.0, v)
    idx = np.flatnonzero(in_win)
    if idx.size:
        grouped = idx[np.argsort(w[idx], kind="stable")]  # by window, each in sweep order
        bounds = np.flatnonzero(np.diff(w[grouped])) + 1
        for rows in np.split(grouped, bounds):
            best = np.maximum.accumulate(np.maximum(v[rows], -profile.fn_weight))
            delta[rows] = np.diff(best, prepend=-profile.fn_weight)
    total = -profile.fn_weight * p.n_windows + np.cumsum(delta)
    # A threshold's row is the state after all rows with that score are in (score >= threshold).
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True)) if s.size else np.zeros(0, np.int64)
    tp = np.cumsum(in_win)[last]
    fp = np.cumsum(~in_win)[last]
    n_in, n_out = int(in_win.sum()), int((~in_win).sum())
    first = max(NO_DETECTION_THRESHOLD, float(np.nextafter(s[0], np.inf))) if s.size else NO_DETECTION_THRESHOLD
    return ThresholdCurve(
        thresholds=np.concatenate([[first], s[last]]),
        scores=np.concatenate([[-profile.fn_weight * p.n_windows], total[last]]),
        tp=np.concatenate([[0], tp]).astype(np.int64),
        tn=np.concatenate([[n_out], n_out - fp]).astype(np.int64),
        fp=np.concatenate([[0], fp]).astype(np.int64),
        fn=np.concatenate([[n_in], n_in - tp]).astype(np.int64),
    )


def score_at(labels: Sequence[SeriesLabels], scores: Sequence[npt.ArrayLike], profile: Profile,
             threshold: float) -> ThresholdScore:
    """Raw score of a set of series at one threshold (NAB's scoreDataSet summed over the set)."""
    p = _gather(labels, scores, profile)
    hit = p.score >= threshold
    in_win = p.window >= 0
    fp_total = float(p.value[hit & ~in_win].sum())
    best = np.full(int(p.window.max(initial=-1)) + 1, -profile.fn_weight)
    np.maximum.at(best, p.window[hit & in_win], p.value[hit & in_win])
    counted = np.unique(p.window[in_win])
    tp, fp = int((hit & in_win).sum()), int((hit & ~in_win).sum())
    return ThresholdScore(threshold=threshold, score=fp_total + float(best[counted].sum()), tp=tp,
                          tn=int((~in_win).sum()) - fp, fp=fp, fn=int(in_win.sum()) - tp)


def optimize_threshold(labels: Sequence[SeriesLabels], scores: Sequence[npt.ArrayLike],
                       profile: Profile) -> ThresholdScore:
    """NAB's optimiser: the threshold with the best raw score over all the series together."""
    return threshold_curve(labels, scores, profile).best()


def perfect_raw(labels: Sequence[SeriesLabels], profile: Profile) -> float:
    """NAB's perfect score: every window detected at its first row, i.e. tp_weight per window."""
    return profile.tp_weight * sum(len(lab.windows) for lab in labels)


def null_scores(labels: Sequence[SeriesLabels]) -> list[FloatArray]:
    """What NAB's null detector outputs: a constant 0.5 on every row."""
    return [np.full(lab.n_rows, NULL_SCORE) for lab in labels]


def normalize(raw: float, null_raw: float, perfect: float) -> float | None:
    """100 * (raw - null) / (perfect - null); None where undefined (no windows and no null cost)."""
    if math.isclose(perfect, null_raw, abs_tol=1e-12):
        return None
    return 100.0 * (raw - null_raw) / (perfect - null_raw)


@dataclass(frozen=True)
class GroupScore:
    """A detector's score on a group of series (a category, or all) at its corpus threshold."""

    raw: ThresholdScore
    null_raw: float
    perfect_raw: float
    normalized: float | None
    n_series: int
    n_windows: int


@dataclass(frozen=True)
class ProfileResult:
    """One profile: the corpus-optimised threshold, the overall score and the per-category split."""

    profile: Profile
    threshold: float
    overall: GroupScore
    categories: Mapping[str, GroupScore]


def _group(labels: Sequence[SeriesLabels], scores: Sequence[npt.ArrayLike], profile: Profile,
           threshold: float, null_threshold: float) -> GroupScore:
    raw = score_at(labels, scores, profile, threshold)
    null_raw = score_at(labels, null_scores(labels), profile, null_threshold).score
    perfect = perfect_raw(labels, profile)
    return GroupScore(raw=raw, null_raw=null_raw, perfect_raw=perfect,
                      normalized=normalize(raw.score, null_raw, perfect), n_series=len(labels),
                      n_windows=sum(len(lab.windows) for lab in labels))


def score_corpus(labels: Sequence[SeriesLabels], scores: Sequence[npt.ArrayLike],
                 profiles: Sequence[Profile] = PROFILES) -> dict[str, ProfileResult]:
    """Scores a detector the NAB way: one threshold per profile over the whole corpus, normalised
    so the null detector (itself threshold-optimised) is 0 and a perfect detector is 100.

    Categories are scored at the corpus threshold; NAB itself reports only the overall figure.
    """
    if not labels:
        raise NabDataError("no series to score")
    results: dict[str, ProfileResult] = {}
    by_cat: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_cat.setdefault(lab.category, []).append(i)
    for profile in profiles:
        best = optimize_threshold(labels, scores, profile)
        null_best = optimize_threshold(labels, null_scores(labels), profile)
        overall = _group(labels, scores, profile, best.threshold, null_best.threshold)
        categories = {
            cat: _group([labels[i] for i in idx], [scores[i] for i in idx], profile,
                        best.threshold, null_best.threshold)
            for cat, idx in sorted(by_cat.items())
        }
        results[profile.name] = ProfileResult(profile=profile, threshold=best.threshold,
                                              overall=overall, categories=categories)
    return results
