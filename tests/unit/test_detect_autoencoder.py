"""Autoencoder: calibration, explanation, storage."""

from __future__ import annotations

import io

import numpy as np
import pytest

from processor.detect import Autoencoder
from processor.detect.autoencoder import FORMAT_VERSION
from processor.detect.exceptions import ModelFormatError

FEATURES = ("rate", "error_ratio", "p50_ms", "p95_ms", "p99_ms", "fan_in", "fan_out")
THRESHOLD = 0.5


def windows(n: int, seed: int) -> np.ndarray:
    """Window vectors of one service: load drives rate and latency together; very different scales."""
    rng = np.random.default_rng(seed)
    load = rng.uniform(0.2, 1.0, n)
    rate = 1000.0 * load + rng.normal(0, 20, n)
    error_ratio = 0.01 + 0.004 * load + rng.normal(0, 0.001, n)
    p50 = 20.0 + 10.0 * load + rng.normal(0, 0.5, n)
    p95 = 2.5 * p50 + rng.normal(0, 1.0, n)
    p99 = 1.6 * p95 + rng.normal(0, 2.0, n)
    fan_in = 3.0 + rng.normal(0, 0.1, n)
    fan_out = 5.0 + rng.normal(0, 0.1, n)
    return np.c_[rate, error_ratio, p50, p95, p99, fan_in, fan_out]


@pytest.fixture(scope="module")
def model() -> Autoencoder:
    return Autoencoder(hidden=(12, 3), epochs=150, seed=0).fit(windows(1500, seed=1))


def test_normal_windows_rarely_score(model: Autoencoder) -> None:
    scores = model.score(windows(2000, seed=2))
    assert (scores >= THRESHOLD).mean() < 0.01
    assert np.median(scores) == 0.0


@pytest.mark.parametrize(("feature", "factor"), [("error_ratio", 3.0), ("p99_ms", 2.0), ("fan_out", 0.6)])
def test_broken_relationship_is_flagged_and_attributed(model: Autoencoder, feature: str, factor: float) -> None:
    x = windows(1, seed=3)[0]
    j = FEATURES.index(feature)
    assert model.score_one(x) < THRESHOLD
    bad = x.copy()
    bad[j] *= factor  # each value alone is within a plausible range of a scaled feature
    assert model.score_one(bad) >= THRESHOLD
    shares = model.contributions(bad)
    assert int(np.argmax(shares)) == j
    assert shares.sum() == pytest.approx(1.0)
    top = model.explain_features(bad)[0]
    assert top.column == j and top.observed == bad[j]
    assert abs(top.expected - x[j]) < abs(bad[j] - x[j]) / 2  # expected is near the normal value


def test_score_one_equals_batch_score(model: Autoencoder) -> None:
    X = windows(300, seed=11)
    X[::10, 1] *= 2.5
    batch = model.score(X)
    assert (batch > 0).any()
    np.testing.assert_allclose([model.score_one(x) for x in X], batch, rtol=1e-9, atol=1e-12)


def test_standardisation_makes_small_scale_features_count(model: Autoencoder) -> None:
    # error_ratio lives around 0.01 next to rate around 1000: unscaled it would be invisible.
    assert model._std[1] < 0.01 < 100 < model._std[0]


def test_bytes_round_trip_scores_identically(model: Autoencoder) -> None:
    data = model.to_bytes()
    loaded = Autoencoder.from_bytes(data)
    X = windows(50, seed=4)
    X[0, 1] *= 3
    np.testing.assert_array_equal(loaded.score(X), model.score(X))
    np.testing.assert_array_equal(loaded.contributions(X[0]), model.contributions(X[0]))
    assert repr(loaded) == repr(model)


def test_unreadable_or_newer_model_bytes_raise_model_format_error(model: Autoencoder) -> None:
    with pytest.raises(ModelFormatError):
        Autoencoder.from_bytes(b"not a model")
    with np.load(io.BytesIO(model.to_bytes())) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["format_version"] = np.array(FORMAT_VERSION + 1)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    with pytest.raises(ModelFormatError, match="retrain"):
        Autoencoder.from_bytes(buf.getvalue())


def test_training_is_seeded() -> None:
    X = windows(300, seed=5)
    a = Autoencoder(hidden=(6, 2), epochs=10, seed=7).fit(X).to_bytes()
    b = Autoencoder(hidden=(6, 2), epochs=10, seed=7).fit(X).to_bytes()
    c = Autoencoder(hidden=(6, 2), epochs=10, seed=8).fit(X).to_bytes()
    assert a == b and a != c


def test_fit_drops_non_finite_rows_and_does_not_mutate() -> None:
    X = windows(300, seed=6)
    X[5, 2] = np.nan
    keep = X.copy()
    m = Autoencoder(hidden=(6, 2), epochs=5).fit(X)
    np.testing.assert_array_equal(X, keep)
    assert np.isfinite(m._mean).all()


def test_unfitted_model_refuses_to_score() -> None:
    with pytest.raises(ValueError, match="fit"):
        Autoencoder().score_one(np.zeros(3))
