"""NabDetector on crafted series (spike, step, seasonal break, noise, refractory) and on real NAB files."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from processor.evaluate.nab.corpus import load_corpus
from processor.evaluate.nab.harness import evaluate
from processor.evaluate.nab_detector import NabDetector, detect_period

NAB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "nab"
SMALL_FILES = (  # short real series with windows, plus an anomaly-free artificial one
    "realTraffic/speed_7578.csv",
    "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
    "realTraffic/TravelTime_451.csv",
    "artificialNoAnomaly/art_flatline.csv",
)


def _noise(seed: int, n: int = 1000) -> np.ndarray:
    return 100.0 + np.random.default_rng(seed).normal(0.0, 2.0, n)


def _reports(scores: np.ndarray, level: float = 0.25) -> list[int]:
    return np.flatnonzero(scores >= level).tolist()


@pytest.mark.parametrize("seed", range(3))
def test_spike_scores_highest_at_its_row_and_only_there(seed: int) -> None:
    xs = _noise(seed)
    xs[800] += 30.0  # 15 sigma
    s = NabDetector().process_many(xs)
    assert s[800] >= 0.45
    assert s[800] == s.max()
    assert (s[801:811] == 0.0).all()  # its aftermath (the step back down) stays quiet


@pytest.mark.parametrize("seed", range(3))
def test_step_is_flagged_at_onset_then_stays_quiet(seed: int) -> None:
    xs = _noise(seed, 1400)
    xs[800:] += 15.0
    s = NabDetector().process_many(xs)
    first = next(i for i in _reports(s, 0.45) if i >= 700)
    assert 800 <= first <= 803
    assert s[700:800].max() < s[first]
    # The new level persists, but NAB charges every extra alarm: the continuation is silent.
    assert s[first + 10: first + 150].max() < 0.3


@pytest.mark.parametrize("seed", range(3))
def test_seasonal_break_within_the_normal_range_is_flagged(seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(1600)
    xs = 50.0 + 30.0 * np.sin(2 * np.pi * t / 60) + rng.normal(0.0, 1.0, t.size)
    xs[1200:1230] = 50.0 + rng.normal(0.0, 1.0, 30)  # half a cycle stays at the mean level
    det = NabDetector()
    s = det.process_many(xs)
    assert det.period == 60
    assert s[1200:1206].max() >= 0.45
    assert s[1200:1206].max() > s[400:1200].max()
    # Without the seasonal reference every value of the break is ordinary.
    flat = NabDetector(seasonal=False).process_many(xs)
    assert flat[1200:1235].max() <= flat[400:1200].max()


@pytest.mark.parametrize("kind", ["normal", "student_t3", "lognormal", "poisson", "uniform"])
def test_noise_alone_stays_below_half(kind: str) -> None:
    rng = np.random.default_rng(11)
    n = 3000
    xs = {
        "normal": lambda: 100.0 + rng.normal(0.0, 2.0, n),
        "student_t3": lambda: 100.0 + rng.standard_t(3, n),
        "lognormal": lambda: rng.lognormal(0.0, 1.0, n),
        "poisson": lambda: rng.poisson(5, n).astype(np.float64),
        "uniform": lambda: rng.uniform(0.0, 1.0, n),
    }[kind]()
    s = NabDetector().process_many(xs)
    assert s.max() < 0.5
    # Sparse: a handful of reports over 3000 rows, not a score on every row.
    assert (s > 0.0).mean() < 0.02


def test_repeat_within_refractory_is_suppressed_and_after_it_reported() -> None:
    xs = _noise(3, 1200)
    xs[700] += 30.0
    xs[730] += 30.0  # same size, 30 rows later: nothing new
    xs[900] += 30.0  # same size, past the 100-row refractory period: a new anomaly
    s = NabDetector(refractory=100).process_many(xs)
    assert s[700] >= 0.45
    assert s[730] == 0.0
    assert s[900] >= 0.45


def test_much_larger_anomaly_within_refractory_still_reports() -> None:
    xs = _noise(4, 1000)
    xs[700] += 12.0  # 6 sigma
    xs[720] += 400.0  # far larger: escalation, not a repeat
    s = NabDetector().process_many(xs)
    assert s[700] > 0.3
    assert s[720] > s[700]


def test_refractory_zero_reports_every_record() -> None:
    xs = _noise(5, 900)
    xs[700] += 30.0
    xs[730] += 30.0
    s = NabDetector(refractory=0).process_many(xs)
    assert s[700] >= 0.45 and s[730] >= 0.45


def test_warm_up_scores_zero_and_score_one_learns_nothing() -> None:
    det = NabDetector()
    xs = _noise(6, 400)
    s = det.process_many(xs)
    assert (s[: det.grace_period] == 0.0).all()
    before = det.score_one(160.0)
    for _ in range(5):
        assert det.score_one(160.0) == before
    assert det.n_learned == 400
    assert before > 0.3


def test_explain_one_gives_level_and_signed_deviation() -> None:
    det = NabDetector()
    assert math.isnan(det.explain_one(100.0).expected)
    det.process_many(_noise(7, 500))
    exp = det.explain_one(90.0)
    assert exp.expected == pytest.approx(100.0, abs=0.5)
    assert exp.deviation < -3.0
    assert det.explain_one(110.0).deviation > 3.0


def test_detect_period_finds_the_base_period_not_a_multiple() -> None:
    t = np.arange(900)
    rng = np.random.default_rng(0)
    square = np.where((t % 90) < 45, 20.0, 80.0) + rng.normal(0.0, 1.0, t.size)
    assert detect_period(square, 10, 400, 0.6, 0.3) == 90
    walk = np.cumsum(rng.normal(size=900))  # no drop below 0.2: no period
    assert detect_period(walk, 10, 400, 0.6, 0.3) == 0
    # Hysteresis: a weakened period is kept once known, not adopted from scratch.
    weak = np.sin(2 * np.pi * t / 50) + rng.normal(0.0, 0.9, t.size)  # ACF(50) ~ 0.38
    assert detect_period(weak, 10, 400, 0.6, 0.3) == 0
    assert detect_period(weak, 10, 400, 0.6, 0.3, current=50) == 50


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        NabDetector(escalation=0.5)
    with pytest.raises(ValueError):
        NabDetector(min_period=50, max_period=10)


@pytest.mark.skipif(not (NAB / "combined_windows.json").exists(), reason=f"NAB subset not at {NAB}")
def test_harness_runs_on_small_nab_files(tmp_path: Path) -> None:
    windows = json.loads((NAB / "combined_windows.json").read_text())
    data = tmp_path / "data"
    for name in SMALL_FILES:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / name, data / name)
    (tmp_path / "windows.json").write_text(json.dumps({n: windows[n] for n in SMALL_FILES}))
    corpus = load_corpus(data, tmp_path / "windows.json")
    run = evaluate(corpus, {"candidate": NabDetector}).runs[0]
    assert len(run.scores) == len(SMALL_FILES)
    for series, scores in zip(corpus.series, run.scores, strict=True):
        assert scores.shape == series.values.shape
        assert np.isfinite(scores).all()
        assert ((scores >= 0.0) & (scores <= 1.0)).all()
    assert all(math.isfinite(r.overall.raw.score) for r in run.results.values())
    # A constant series has nothing to report.
    flat = next(s for s, x in zip(corpus.series, run.scores, strict=True) if "flatline" in s.name)
    assert not run.scores[corpus.series.index(flat)].any()
