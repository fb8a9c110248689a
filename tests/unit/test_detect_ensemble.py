"""Ensemble (score, severity, factors) and Thresholded (flags, refusing to learn anomalies)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processor.detect import (
    EWMA,
    Autoencoder,
    Ensemble,
    RobustBaseline,
    StreamingAutoencoder,
    Thresholded,
)

FEATURES = ("requests", "error_ratio", "p95_ms", "rate")


def history(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    requests = rng.poisson(600, n).astype(np.float64)
    return np.c_[requests, np.clip(rng.normal(0.01, 0.002, n), 0, None),
                 120 + rng.normal(0, 4, n), requests / 60.0]


def service_ensemble(combine: str = "max", with_autoencoder: bool = False) -> Ensemble:
    members: list[tuple[str, str | None, object]] = [
        ("errors_robust", "error_ratio", RobustBaseline(direction="up", min_volume=50.0)),
        ("latency_robust", "p95_ms", RobustBaseline(direction="up")),
        ("latency_ewma", "p95_ms", EWMA(direction="up")),
        ("traffic_robust", "rate", RobustBaseline(direction="down")),
    ]
    if with_autoencoder:
        ae = StreamingAutoencoder(Autoencoder(hidden=(6, 2), epochs=60, seed=0), grace_period=300)
        members.append(("autoencoder", None, ae))
    return Ensemble(features=FEATURES, members=tuple(members), combine=combine,  # type: ignore[arg-type]
                    volume_feature="requests")


def normal_window(seed: int = 99) -> np.ndarray:
    return history(1, seed)[0]


@pytest.fixture
def trained() -> Ensemble:
    ens = service_ensemble()
    ens.process_many(history(200, seed=1))
    return ens


def test_latency_step_gives_critical_with_latency_factors(trained: Ensemble) -> None:
    x = normal_window()
    x[2] = 200.0  # p95 from 120 to 200 ms
    a = trained.assess(x)
    assert a.severity == "critical" and a.score >= 0.8
    assert {f.detector for f in a.factors} == {"latency_robust", "latency_ewma"}
    top = a.factors[0]
    assert top.metric == "p95_ms" and top.observed == 200.0
    assert abs(top.expected - 120.0) < 3.0 and top.deviation > 10
    assert list(a.factors) == sorted(a.factors, key=lambda f: -f.score)
    assert a.score == trained.score_one(x)


def test_traffic_drop_is_anomalous_but_traffic_rise_is_not(trained: Ensemble) -> None:
    drop, rise = normal_window(), normal_window()
    drop[3] *= 0.3
    rise[3] *= 3.0
    a = trained.assess(drop)
    assert a.severity is not None and a.factors[0].metric == "rate"
    assert trained.assess(rise).severity is None


def test_volume_feature_guards_error_ratio_on_few_requests(trained: Ensemble) -> None:
    x = normal_window()
    x[1] = 0.5  # half the requests failed ...
    assert trained.assess(x).factors[0].metric == "error_ratio"
    x[0] = 4.0  # ... but there were four of them
    assert trained.assess(x).severity is None
    assert trained.score_one(x, volume=600.0) > 0.8  # an explicit volume wins


def test_severity_thresholds() -> None:
    ens = Ensemble(features=("a",), members=(("r", "a", RobustBaseline()),), info=0.2, warning=0.5,
                   critical=0.9)
    assert [ens.severity(s) for s in (0.1, 0.2, 0.5, 0.89, 0.9)] == [
        None, "info", "warning", "warning", "critical"]


def test_max_versus_noisy_or(trained: Ensemble) -> None:
    x = normal_window()
    x[2] = 140.0  # moderate latency rise: both latency members score, neither saturates
    member_scores = [det.score_one(x[FEATURES.index(f)], x[0]) for _, f, det in trained.members]
    assert sum(s > 0 for s in member_scores) >= 2
    assert trained.score_one(x) == max(member_scores)
    noisy = trained.clone(combine="noisy_or")
    noisy.process_many(history(200, seed=1))
    assert noisy.score_one(x) == pytest.approx(1 - math.prod(1 - s for s in member_scores))
    assert noisy.score_one(x) > trained.score_one(x)


def test_nan_feature_silences_only_its_members(trained: Ensemble) -> None:
    x = normal_window()
    x[2] = np.nan  # no latency this window
    x[3] *= 0.2
    a = trained.assess(x)
    assert a.severity is not None and {f.metric for f in a.factors} == {"rate"}
    before = trained.members[1][2].n_learned
    trained.learn_one(x)
    assert trained.members[1][2].n_learned == before  # latency member did not learn the NaN


def test_autoencoder_member_names_the_broken_feature() -> None:
    ens = service_ensemble(with_autoencoder=True)
    ens.process_many(history(400, seed=2))
    x = normal_window()
    x[0] *= 1.6  # requests up without the rate following: inconsistent window
    a = ens.assess(x)
    ae_factors = [f for f in a.factors if f.detector == "autoencoder"]
    assert ae_factors and ae_factors[0].metric in ("requests", "rate")


def test_invalid_members_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown feature"):
        Ensemble(features=("a",), members=(("r", "b", RobustBaseline()),))
    with pytest.raises(ValueError, match="vector detector"):
        Ensemble(features=("a",), members=(("r", None, RobustBaseline()),))
    with pytest.raises(ValueError, match="unique"):
        Ensemble(features=("a",), members=(("r", "a", EWMA()), ("r", "a", EWMA())))


def step_series() -> np.ndarray:
    xs = 100 + np.random.default_rng(3).normal(0, 2, 400)
    xs[200:] += 30.0
    return xs


def test_thresholded_refusing_anomalies_keeps_flagging_an_outage() -> None:
    xs = step_series()
    refusing = Thresholded(RobustBaseline(direction="up"))
    learning = Thresholded(RobustBaseline(direction="up"), learn_from_anomalies=True)
    s_ref, s_learn = refusing.process_many(xs), learning.process_many(xs)
    assert (s_ref[200:] >= 0.5).all()  # the outage never becomes the baseline
    assert (s_learn[260:] < 0.5).all()  # learning from it: the new level is normal
    assert refusing.detector.n_learned == 200
    assert refusing.flag_one(130.0) and not learning.flag_one(130.0)


def test_thresholded_adapt_after_accepts_a_lasting_change() -> None:
    det = Thresholded(RobustBaseline(direction="up"), adapt_after=20)
    flags = det.process_many(step_series()) >= 0.5
    assert flags[200:220].all()
    assert not flags[300:].any()


def test_thresholded_ensemble_skips_members_on_flagged_windows(trained: Ensemble) -> None:
    det = Thresholded(trained)
    before = [d.n_learned for _, _, d in trained.members]
    x = normal_window()
    x[2] = 300.0
    assert det.process_one(x) >= 0.5
    assert [d.n_learned for _, _, d in trained.members] == before
    det.process_one(normal_window(5))
    assert [d.n_learned for _, _, d in trained.members] == [n + 1 for n in before]
