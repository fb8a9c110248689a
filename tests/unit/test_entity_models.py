"""Per-entity autoencoder models: fan counts, window vectors, training sets, training, scoring."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from processor.detect.autoencoder import Autoencoder
from processor.detect.entity_models import (
    EDGE_FEATURES,
    SERVICE_FEATURES,
    ModelSpec,
    TrainingSet,
    entity_seed,
    fan_counts,
    score_vector,
    train_models,
    vector_features,
    window_vector,
    window_vectors,
)
from processor.detect.entity_vector import EDGE, SERVICE, to_model

INFO = 0.3
# The model the tests build: the default network, history bounds for short series.
SPEC = ModelSpec(hidden=(8, 3), epochs=60, min_windows=240, max_windows=2880)
HIGH = 0.5


def service_row(load: float, rng: np.random.Generator, service: str = "cart") -> dict[str, Any]:
    """A service window where load drives traffic and latency together."""
    calls = int(rng.poisson(1000.0 * load))
    p50 = (20.0 + 10.0 * load) * math.exp(rng.normal(0, 0.02))
    return {"service": service, "calls": calls, "errors": int(rng.binomial(calls, 0.01)),
            "p50_ms": p50, "p95_ms": 2.5 * p50 * math.exp(rng.normal(0, 0.02)),
            "p99_ms": 4.0 * p50 * math.exp(rng.normal(0, 0.03))}


def edge_row(load: float, rng: np.random.Generator) -> dict[str, Any]:
    row = service_row(load, rng)
    return {"client": "web", "server": "cart", "connection_type": "", "requests": row["calls"],
            "failed": row["errors"], "server_p50_ms": row["p50_ms"], "server_p95_ms": row["p95_ms"],
            "server_p99_ms": row["p99_ms"]}


def service_matrix(n: int, seed: int, fan: tuple[int, int] = (3, 2)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vs = [window_vector(SERVICE, service_row(rng.uniform(0.2, 1.0), rng), fan, 20) for _ in range(n)]
    return np.array(vs)


@pytest.fixture(scope="module")
def service_model() -> Autoencoder:
    data = train_models({(SERVICE, "cart"): service_matrix(800, seed=1)}, SPEC)
    return Autoencoder.from_bytes(data[(SERVICE, "cart")])


def normal_vector(load: float = 0.5) -> np.ndarray:
    rng = np.random.default_rng(7)
    v = window_vector(SERVICE, service_row(load, rng), (3, 2), 20)
    assert v is not None
    return v


# -- fan counts and window vectors -----------------------------------------------------------

def test_fan_counts_distinct_peers_with_traffic() -> None:
    edges = [
        {"client": "web", "server": "cart", "connection_type": "", "requests": 10},
        {"client": "web", "server": "cart", "connection_type": "messaging_system", "requests": 3},
        {"client": "api", "server": "cart", "connection_type": "", "requests": 1},
        {"client": "cart", "server": "redis", "connection_type": "database", "requests": 8},
        {"client": "batch", "server": "cart", "connection_type": "", "requests": 0},  # idle edge
    ]
    fans = fan_counts(edges)
    assert fans["cart"] == (2, 1)  # web once despite two connection types; batch sent nothing
    assert fans["web"] == (0, 1)
    assert fans["redis"] == (1, 0)
    assert "batch" not in fans
    assert fan_counts([]) == {}


def test_window_vector_scales() -> None:
    row = {"calls": 400, "errors": 8, "p50_ms": 10.0, "p95_ms": 50.0, "p99_ms": 200.0}
    v = window_vector(SERVICE, row, (4, 1), min_requests=20)
    assert v is not None and v.shape == (7,) and v.dtype == np.float64
    assert v[0] == pytest.approx(to_model("rate", 400))
    assert v[1:4] == pytest.approx([math.log(10.0), math.log(50.0), math.log(200.0)])
    assert v[4] == pytest.approx(0.02)
    assert v[5:].tolist() == [4.0, 1.0]
    no_fan = window_vector(SERVICE, row, None, min_requests=20)
    assert no_fan is not None and no_fan[5:].tolist() == [0.0, 0.0]


def test_edge_vector_uses_server_latency_then_client() -> None:
    row = {"client": "web", "server": "cart", "requests": 50, "failed": 0, "server_p50_ms": 5.0,
           "server_p95_ms": 9.0, "server_p99_ms": 12.0, "client_p50_ms": 7.0, "client_p95_ms": 11.0,
           "client_p99_ms": 15.0}
    v = window_vector(EDGE, row, (9, 9), min_requests=20)  # fan is ignored for edges
    assert v is not None and v.shape == (5,)
    assert math.exp(v[1]) == pytest.approx(5.0)
    db = {**row, "server_p50_ms": 0.0, "server_p95_ms": 0.0, "server_p99_ms": 0.0}
    v = window_vector(EDGE, db, None, min_requests=20)
    assert v is not None and math.exp(v[3]) == pytest.approx(15.0)


@pytest.mark.parametrize(("change", "min_requests"), [
    ({"calls": 19}, 20),  # too few requests
    ({"calls": 0, "errors": 0}, 0),  # no requests at all, even with no minimum
    ({"p95_ms": 0.0}, 20),  # a quantile stored as 0 = missing
    ({"p99_ms": float("nan")}, 20),
    ({"p50_ms": None}, 20),
])
def test_window_vector_none_when_not_judgeable(change: dict[str, Any], min_requests: int) -> None:
    row = {"calls": 400, "errors": 8, "p50_ms": 10.0, "p95_ms": 50.0, "p99_ms": 200.0, **change}
    assert window_vector(SERVICE, row, (1, 1), min_requests) is None


def test_vector_widths() -> None:
    assert vector_features(SERVICE) == SERVICE_FEATURES and len(SERVICE_FEATURES) == 7
    assert vector_features(EDGE) == EDGE_FEATURES and len(EDGE_FEATURES) == 5
    with pytest.raises(ValueError):
        vector_features("host")


def test_window_vectors_count_a_duplicate_edge_once_with_summed_requests() -> None:
    base = {"client": "web", "server": "cart", "failed": 0, "server_p50_ms": 5.0,
            "server_p95_ms": 9.0, "server_p99_ms": 12.0}
    edges = [{**base, "connection_type": "messaging_system", "requests": 300},
             {**base, "connection_type": "", "requests": 30}]
    health = [{"service": "cart", "calls": 330, "errors": 0, "p50_ms": 5.0, "p95_ms": 9.0, "p99_ms": 12.0}]
    out = window_vectors(health, edges, 20)
    assert set(out) == {(SERVICE, "cart"), (EDGE, "web->cart")}
    # As the univariate detectors see it (WindowDetector merges the same way): 300 + 30.
    assert out[(EDGE, "web->cart")][0] == pytest.approx(to_model("rate", 330))
    assert out[(SERVICE, "cart")][5:].tolist() == [1.0, 0.0]


# -- training sets -------------------------------------------------------------------------

def test_training_set_keeps_newest_windows_oldest_first() -> None:
    ts = TrainingSet(min_requests=20, max_windows=100)  # > the first allocation, so it grows
    for i in range(250):
        health = [{"service": "cart", "calls": 100 + i, "errors": 0, "p50_ms": 1.0, "p95_ms": 2.0,
                   "p99_ms": 3.0}]
        if i % 2 == 0:  # checkout only in even windows, and too quiet in windows 0..9
            health.append({"service": "checkout", "calls": 5 if i < 10 else 50, "errors": 0,
                           "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0})
        edges = [{"client": "checkout", "server": "cart", "requests": 3, "failed": 0,
                  "server_p50_ms": 1.0, "server_p95_ms": 2.0, "server_p99_ms": 3.0}]
        ts.add_window(health, edges)
    assert len(ts) == 250
    m = ts.matrices()
    assert set(m) == {(SERVICE, "cart"), (SERVICE, "checkout")}  # the edge never had 20 requests
    cart = m[(SERVICE, "cart")]
    assert cart.shape == (100, 7)
    calls = np.round(0.25 * cart[:, 0] ** 2 - 0.375)  # back from the square-root scale
    assert calls.tolist() == list(range(250, 350))  # the newest 100, oldest first
    assert cart[:, 5:].tolist() == [[1.0, 0.0]] * 100  # fan counts from each window's edges
    assert m[(SERVICE, "checkout")].shape == (100, 7)
    assert m[(SERVICE, "checkout")][:, 5:].tolist() == [[0.0, 1.0]] * 100


def test_training_set_exact_capacity_and_copies() -> None:
    ts = TrainingSet(min_requests=0, max_windows=64)
    row = {"service": "a", "calls": 1, "errors": 0, "p50_ms": 1.0, "p95_ms": 1.0, "p99_ms": 1.0}
    for calls in range(128):  # exactly two laps of the ring: its start is slot 0 again
        ts.add_window([{**row, "calls": calls + 1}], [])
    first = ts.matrices()[(SERVICE, "a")]
    assert np.round(0.25 * first[:, 0] ** 2 - 0.375).tolist() == list(range(65, 129))
    first[:] = 0.0  # callers own what they get
    assert ts.matrices()[(SERVICE, "a")][0, 0] == pytest.approx(to_model("rate", 65))


# -- training ------------------------------------------------------------------------------

def test_train_models_deterministic_and_skips_short_histories() -> None:
    spec = ModelSpec(hidden=(4, 2), epochs=5, min_windows=50, max_windows=120)
    matrices = {(SERVICE, "cart"): service_matrix(200, seed=2), (SERVICE, "tiny"): service_matrix(49, seed=3),
                (SERVICE, "gappy"): np.vstack([service_matrix(49, seed=4), np.full((10, 7), np.nan)])}
    a = train_models(matrices, spec)
    b = train_models(matrices, spec)
    assert set(a) == {(SERVICE, "cart")}  # 49 rows, and 49 finite rows + 10 NaN rows, are too few
    assert a == b
    other = train_models(matrices, ModelSpec(hidden=(4, 2), epochs=5, min_windows=50, max_windows=120, seed=1))
    assert other[(SERVICE, "cart")] != a[(SERVICE, "cart")]
    # Only the newest max_windows rows are trained on: older rows cannot change the model.
    older = {(SERVICE, "cart"): np.vstack([service_matrix(30, seed=9) * 3.0, matrices[(SERVICE, "cart")]])}
    assert train_models(older, spec) == a


def test_entity_seeds_differ_per_entity_and_are_stable() -> None:
    assert entity_seed(0, SERVICE, "cart") == entity_seed(0, SERVICE, "cart")
    assert len({entity_seed(0, SERVICE, "cart"), entity_seed(0, SERVICE, "checkout"),
                entity_seed(0, EDGE, "cart"), entity_seed(1, SERVICE, "cart")}) == 4


# -- scoring ---------------------------------------------------------------------------------

def test_normal_windows_score_low(service_model: Autoencoder) -> None:
    X = service_matrix(400, seed=5)
    scores = [score_vector(service_model, x, SERVICE_FEATURES, INFO)[0] for x in X]
    assert np.mean(np.array(scores) >= HIGH) < 0.02
    assert np.median(scores) == 0.0


def test_broken_correlation_scores_high_and_names_the_feature(service_model: Autoencoder) -> None:
    x = normal_vector(load=0.3)
    assert score_vector(service_model, x, SERVICE_FEATURES, INFO)[0] < INFO
    bad = x.copy()
    bad[2] += math.log(2.0)  # p95 doubles while traffic, p50 and p99 stay: nothing else explains it
    score, evidence = score_vector(service_model, bad, SERVICE_FEATURES, INFO)
    assert score >= HIGH
    top = evidence[0]
    assert top.metric == "p95_ms" and top.detector == "autoencoder" and top.score == score
    assert top.observed == pytest.approx(math.exp(bad[2]))  # natural units: ms
    assert top.expected == pytest.approx(math.exp(x[2]), rel=0.25)  # near the normal p95
    assert top.deviation > 3.0
    assert 1 <= len(evidence) <= 3
    assert len({e.metric for e in evidence}) == len(evidence)


def test_got_faster_scores_zero_but_slower_does_not(service_model: Autoencoder) -> None:
    x = normal_vector(load=0.8)
    faster, slower = x.copy(), x.copy()
    faster[1:4] -= math.log(2.0)  # every quantile halves at the same traffic
    slower[1:4] += math.log(2.0)
    assert service_model.score_one(faster) >= HIGH  # the model alone would alarm
    assert score_vector(service_model, faster, SERVICE_FEATURES, INFO) == (0.0, [])
    score, evidence = score_vector(service_model, slower, SERVICE_FEATURES, INFO)
    assert score >= HIGH and evidence[0].metric in ("p50_ms", "p95_ms", "p99_ms")


def test_traffic_direction_decides_whether_a_surge_is_benign(service_model: Autoencoder) -> None:
    x = normal_vector(load=0.5)
    surge = x.copy()
    surge[0] = to_model("rate", 4 * 500)  # four times the traffic at mid-load latency
    assert score_vector(service_model, surge, SERVICE_FEATURES, INFO, traffic_direction="down") == (0.0, [])
    score, evidence = score_vector(service_model, surge, SERVICE_FEATURES, INFO, traffic_direction="both")
    assert score >= HIGH and evidence[0].metric == "rate"
    assert evidence[0].observed == pytest.approx(2000.0)
    assert evidence[0].observed > evidence[0].expected


def mixed(x: np.ndarray, p50_factor: float, p99_factor: float, error_ratio: float) -> np.ndarray:
    v = x.copy()
    v[1] -= math.log(p50_factor)  # faster at the median...
    v[3] += math.log(p99_factor)  # ...slower in the tail
    v[4] = error_ratio
    return v


def shares(model: Autoencoder, v: np.ndarray) -> dict[str, float]:
    return {SERVICE_FEATURES[f.column]: f.share for f in model.explain_features(v)}


def test_benign_majority_of_the_error_is_quiet(service_model: Autoencoder) -> None:
    v = mixed(normal_vector(load=0.5), 2.0, 1.5, 0.02)
    assert shares(service_model, v)["p50_ms"] > 0.5 and service_model.score_one(v) >= HIGH
    assert score_vector(service_model, v, SERVICE_FEATURES, INFO) == (0.0, [])


def test_benign_top_feature_under_half_does_not_silence(service_model: Autoencoder) -> None:
    v = mixed(normal_vector(load=0.5), 1.6, 1.5, 0.05)
    sh = shares(service_model, v)
    assert max(sh, key=sh.__getitem__) == "p50_ms" and sh["p50_ms"] < 0.5  # the case under test
    score, evidence = score_vector(service_model, v, SERVICE_FEATURES, INFO)
    assert score >= HIGH
    assert [e.metric for e in evidence] == ["p50_ms", "p99_ms", "error_ratio"]  # largest share first
    assert evidence[0].deviation < 0 < evidence[1].deviation
    assert len(score_vector(service_model, v, SERVICE_FEATURES, INFO, max_factors=1)[1]) == 1


def test_minor_features_are_not_named(service_model: Autoencoder) -> None:
    v = mixed(normal_vector(load=0.5), 1.2, 2.0, 0.02)
    assert shares(service_model, v)["error_ratio"] < 0.1
    score, evidence = score_vector(service_model, v, SERVICE_FEATURES, INFO)
    assert score >= HIGH and [e.metric for e in evidence] == ["p99_ms", "p50_ms"]


@pytest.mark.parametrize("fan_in", [2.0, 4.0])
def test_fan_in_change_is_flagged(service_model: Autoencoder, fan_in: float) -> None:
    x = normal_vector(load=0.5)
    changed = x.copy()
    changed[5] = fan_in  # a caller disappeared (or a new one appeared): never benign
    score, evidence = score_vector(service_model, changed, SERVICE_FEATURES, INFO)
    assert score >= HIGH
    assert [e.metric for e in evidence] == ["fan_in"]  # it alone explains the error
    assert evidence[0].observed == fan_in and evidence[0].expected == pytest.approx(3.0, abs=0.5)


def test_edge_model_width_five() -> None:
    rng = np.random.default_rng(3)
    X = np.array([window_vector(EDGE, edge_row(rng.uniform(0.2, 1.0), rng), None, 20) for _ in range(300)])
    assert X.shape == (300, 5)
    spec = replace(SPEC, epochs=30)
    model = Autoencoder.from_bytes(train_models({(EDGE, "web->cart"): X}, spec)[(EDGE, "web->cart")])
    assert model.n_features == 5
    bad = X[0].copy()
    bad[4] = 0.3  # 30% failed requests against a steady 1%
    score, evidence = score_vector(model, bad, EDGE_FEATURES, INFO)
    assert score >= HIGH and evidence[0].metric == "error_ratio"
    assert evidence[0].observed == pytest.approx(0.3)
    with pytest.raises(ValueError, match="5 features"):
        score_vector(model, np.r_[bad, 1.0, 1.0], EDGE_FEATURES, INFO)


def test_non_finite_vector_scores_zero(service_model: Autoencoder) -> None:
    x = normal_vector()
    x[2] = math.nan
    assert score_vector(service_model, x, SERVICE_FEATURES, INFO) == (0.0, [])
