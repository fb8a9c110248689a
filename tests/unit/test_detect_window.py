"""WindowDetector on crafted final-window rows: each fault kind flagged with the right metric, noise quiet."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from processor.config.components import AnomalyConfig, DetectorTuning
from processor.detect.counts import ErrorBank, beta_binomial_log_sf
from processor.detect.entity_vector import features
from processor.detect.window import Verdict, WindowDetector

W = 60_000  # window size, ms
P50, P95, P99 = 20.0, 60.0, 100.0


class Traffic:
    """Seeded rows of one service (or edge): Poisson calls, binomial errors, lognormal quantiles."""

    def __init__(self, seed: int, calls: float = 500.0, error_p: float = 0.002) -> None:
        self.rng = np.random.default_rng(seed)
        self.calls, self.error_p = calls, error_p

    def row(self, calls_factor: float = 1.0, latency_factor: float = 1.0,
            error_p: float | None = None) -> dict[str, Any]:
        n = int(self.rng.poisson(self.calls * calls_factor))
        k = int(self.rng.binomial(n, self.error_p if error_p is None else error_p)) if n else 0
        wobble = np.exp(self.rng.normal(0.0, [0.03, 0.05, 0.08]))
        p50, p95, p99 = (float(v) * latency_factor for v in (P50, P95, P99) * wobble)
        return {"calls": n, "errors": k, "p50_ms": p50, "p95_ms": p95, "p99_ms": p99}

    def edge_row(self, client: str, server: str, **kw: float) -> dict[str, Any]:
        r = self.row(**kw)
        return {"client": client, "server": server, "connection_type": "", "requests": r["calls"],
                "failed": r["errors"], "server_p50_ms": r["p50_ms"], "server_p95_ms": r["p95_ms"],
                "server_p99_ms": r["p99_ms"], "client_p50_ms": r["p50_ms"] * 1.02,
                "client_p95_ms": r["p95_ms"] * 1.02, "client_p99_ms": r["p99_ms"] * 1.02}


def feed(det: WindowDetector, traffic: Traffic, windows: int, start: int = 0, entity: str = "cart",
         **kw: float) -> list[Verdict]:
    out = []
    for i in range(start, start + windows):
        v = det.observe("service", entity, i * W, traffic.row(**kw))
        if v is not None:
            out.append(v)
    return out


def settings_of(**kw: Any) -> AnomalyConfig:
    """processors.anomaly with ``kw`` set, tuning knobs (DetectorTuning fields) included."""
    tuning = {k: kw.pop(k) for k in list(kw) if k in DetectorTuning.model_fields}
    return AnomalyConfig(**kw, tuning=DetectorTuning(**tuning))


def baseline(seed: int = 1, windows: int = 200, **settings: Any) -> tuple[WindowDetector, Traffic]:
    det = WindowDetector(settings_of(**settings))
    traffic = Traffic(seed)
    assert feed(det, traffic, windows) == []
    return det, traffic


def test_latency_step_is_flagged_on_a_latency_quantile_with_the_old_level_expected() -> None:
    det, traffic = baseline()
    verdicts = feed(det, traffic, 3, start=200, latency_factor=3.0)
    assert verdicts, "a 3x latency step must be flagged within 2 windows"
    v = verdicts[0]
    assert v.window_start_ms == 200 * W
    assert v.metric in ("p50_ms", "p95_ms", "p99_ms") and v.severity == "critical"
    level = {"p50_ms": P50, "p95_ms": P95, "p99_ms": P99}[v.metric]
    assert v.expected == pytest.approx(level, rel=0.1)
    assert v.observed == pytest.approx(3 * level, rel=0.3)
    assert v.deviation > 0 and v.score >= 0.8
    assert set(v.detectors) <= {"robust", "ewma"} and v.detectors
    assert {f["metric"] for f in v.factors} >= {v.metric}


def test_error_burst_is_flagged_as_error_ratio_against_the_baseline_ratio() -> None:
    det, traffic = baseline()
    verdicts = feed(det, traffic, 2, start=200, error_p=0.08)
    assert verdicts and verdicts[0].window_start_ms == 200 * W
    v = verdicts[0]
    assert v.metric == "error_ratio" and "binomial" in v.detectors
    assert v.expected == pytest.approx(0.002, abs=0.002)
    assert v.observed == pytest.approx(0.08, abs=0.03)


def test_traffic_drop_is_flagged_and_a_surge_is_not() -> None:
    det, traffic = baseline()
    assert feed(det, traffic, 20, start=200, calls_factor=3.0) == []  # more traffic: not an incident
    det, traffic = baseline()
    v = feed(det, traffic, 2, start=200, calls_factor=0.2)[0]
    assert v.metric == "rate" and v.window_start_ms == 200 * W
    assert v.expected == pytest.approx(500, rel=0.1) and v.observed < 150 and v.deviation < 0
    both, traffic = baseline(traffic_direction="both")
    assert [v.metric for v in feed(both, traffic, 2, start=200, calls_factor=3.0)][:1] == ["rate"]


@pytest.mark.parametrize("seed", [4, 7])
def test_a_lasting_halving_of_low_traffic_is_caught_by_the_multi_window_sum(seed: int) -> None:
    def run(history: int = 200, **settings: Any) -> list[Verdict]:
        det = WindowDetector(settings_of(**settings))
        traffic = Traffic(seed, calls=40.0)
        assert feed(det, traffic, history) == []
        return feed(det, traffic, 3, start=history, calls_factor=0.45)

    verdicts = run()
    assert verdicts and verdicts[0].window_start_ms <= 202 * W
    assert "sustained" in verdicts[0].detectors and verdicts[0].metric == "rate"
    assert verdicts[0].expected == pytest.approx(40, rel=0.15)
    assert run(rate_span_windows=1) == []  # one window at a time it stays in the noise
    # The sum waits for a full baseline (robust_windows): 40 windows are not enough.
    assert not [v for v in run(history=40) if "sustained" in v.detectors]
    assert [v for v in run(history=60) if "sustained" in v.detectors]


def test_a_service_that_disappears_is_flagged_through_observe_window() -> None:
    det = WindowDetector()
    cart, ad = Traffic(1), Traffic(2)
    for i in range(200):
        rows = [{"service": "cart", **cart.row()}, {"service": "ad", **ad.row()}]
        assert det.observe_window(i * W, rows, []) == []
    # cart sends nothing at all: no row, only ad's
    verdicts = det.observe_window(200 * W, [{"service": "ad", **ad.row()}], [])
    assert [(v.entity, v.metric, v.observed) for v in verdicts] == [("cart", "rate", 0.0)]
    assert verdicts[0].severity == "critical"


def test_an_entity_without_rows_for_forget_after_windows_is_forgotten_and_starts_afresh() -> None:
    det = WindowDetector(settings_of(forget_after_windows=50))
    cart, ad = Traffic(1), Traffic(2)
    for i in range(100):
        det.observe_window(i * W, [{"service": "cart", **cart.row()}, {"service": "ad", **ad.row()}], [])
    gone = [v.entity for i in range(100, 150) for v in det.observe_window(i * W, [{"service": "ad", **ad.row()}], [])]
    assert gone and set(gone) == {"cart"}  # its absence is a traffic drop while it is tracked
    assert det.entities() == [("service", "ad"), ("service", "cart")]
    det.observe_window(150 * W, [{"service": "ad", **ad.row()}], [])  # 51 windows without a row
    assert det.entities() == [("service", "ad")]
    # Back: a new entity in its grace period (no traffic baseline yet, where the old state had
    # one), in the freed row rather than a new one.
    rows_before = len(det._state.last_ms)
    back = Traffic(3, calls=50.0)
    for i in range(151, 158):
        det.observe_window(i * W, [{"service": "ad", **ad.row()}, {"service": "cart", **back.row()}], [])
    assert "rate" not in det.baseline("service", "cart") and "rate" in det.baseline("service", "ad")
    assert len(det._state.last_ms) == rows_before and det.entities() == [("service", "ad"), ("service", "cart")]


def test_low_volume_windows_do_not_alarm_on_errors_or_latency() -> None:
    det = WindowDetector()
    traffic = Traffic(3, calls=6.0, error_p=0.02)
    assert feed(det, traffic, 300) == []
    # A handful of requests, all failing and slow: still not evidence.
    assert feed(det, traffic, 5, start=300, error_p=1.0, latency_factor=10.0) == []


def test_a_drop_to_a_handful_of_requests_is_judged_by_the_baseline_volume() -> None:
    det, traffic = baseline()
    v = det.observe("service", "cart", 200 * W,
                    {"calls": 3, "errors": 3, "p50_ms": 900.0, "p95_ms": 900.0, "p99_ms": 900.0})
    assert v is not None and v.metric == "rate"  # the drop, not the 3 slow failures
    assert {f["metric"] for f in v.factors} == {"rate"}


@pytest.mark.parametrize("seed", [1, 2])
def test_an_80_percent_drop_of_a_service_at_15_calls_a_minute_is_caught_and_a_trickle_is_not_watched(
        seed: int) -> None:
    det = WindowDetector()
    usual, trickle = Traffic(seed, calls=15.0), Traffic(seed + 10, calls=5.0)
    for i in range(200):
        assert det.observe_window(i * W, [{"service": "a", **usual.row()}, {"service": "b", **trickle.row()}], []) == []
    found = [v for i in range(200, 203) for v in det.observe_window(
        i * W, [{"service": "a", **usual.row(calls_factor=0.2)}, {"service": "b", **trickle.row(calls_factor=0.0)}], [])]
    assert [v.entity for v in found][:1] == ["a"] and found[0].metric == "rate"
    assert "b" not in {v.entity for v in found}  # 5 calls a minute is below min_baseline_requests


def test_fault_free_noise_gives_no_verdict_over_500_windows() -> None:
    det = WindowDetector()
    svc, edge = Traffic(11), Traffic(12, calls=60.0, error_p=0.01)
    verdicts: list[Verdict] = []
    for i in range(500):
        verdicts += det.observe_window(i * W, [{"service": "cart", **svc.row()}],
                                       [edge.edge_row("frontend", "cart")])
    assert verdicts == []


def test_warm_up_then_a_fault_still_flags_and_matches_live_observation() -> None:
    traffic = Traffic(5)
    rows = [{"window_start": i * W, "service": "cart", **traffic.row()} for i in range(200)]
    fault = Traffic(6).row(latency_factor=4.0)
    warmed = WindowDetector()
    assert warmed.warm_up("service", "cart", rows) == 200
    live = WindowDetector()
    assert [live.observe("service", "cart", r["window_start"], r) for r in rows] == [None] * 200
    a = warmed.observe("service", "cart", 200 * W, fault)
    b = live.observe("service", "cart", 200 * W, fault)
    assert a is not None and a.metric.endswith("_ms") and a == b


def test_replay_of_stored_rows_equals_live_observation_gaps_included() -> None:
    cart, ad = Traffic(13), Traffic(14)
    windows = []
    for i in range(200):
        health = [{"window_start": i * W, "service": "ad", **ad.row()}]
        if not 150 <= i < 153:  # cart sent nothing for three windows
            health.append({"window_start": i * W, "service": "cart", **cart.row()})
        windows.append(health)
    live = WindowDetector()
    live_verdicts = [v for i, h in enumerate(windows) for v in live.observe_window(i * W, h, [])]
    assert {(v.entity, v.metric, v.window_start_ms // W) for v in live_verdicts} >= {("cart", "rate", 150)}
    replayed = WindowDetector()
    assert replayed.replay([r for h in windows for r in h], []) == 200
    fault = [{"window_start": 200 * W, "service": "cart", **cart.row(latency_factor=4.0)},
             {"window_start": 200 * W, "service": "ad", **ad.row()}]
    assert replayed.observe_window(200 * W, fault, []) == live.observe_window(200 * W, fault, [])
    assert replayed.state_bytes() == live.state_bytes()


def test_state_bytes_round_trip_continues_identically() -> None:
    det, traffic = baseline(seed=7)
    copy = WindowDetector.from_bytes(det.state_bytes())
    later = [traffic.row(latency_factor=f) for f in [1.0] * 20 + [3.0] * 3]
    ours = [det.observe("service", "cart", (200 + i) * W, r) for i, r in enumerate(later)]
    theirs = [copy.observe("service", "cart", (200 + i) * W, r) for i, r in enumerate(later)]
    assert ours == theirs and any(v is not None for v in ours)


def test_a_replayed_window_is_ignored() -> None:
    det, traffic = baseline(seed=8)
    twin = WindowDetector.from_bytes(det.state_bytes())
    spike = traffic.row(latency_factor=5.0)
    assert det.observe("service", "cart", 199 * W, spike) is None  # at or before the last: ignored
    nxt = traffic.row(latency_factor=5.0)
    assert det.observe("service", "cart", 200 * W, nxt) == twin.observe("service", "cart", 200 * W, nxt)


def test_a_lasting_shift_becomes_the_new_normal() -> None:
    det, traffic = baseline(seed=9, adapt_after_windows=10)
    verdicts = feed(det, traffic, 120, start=200, latency_factor=2.0)
    assert verdicts and verdicts[0].window_start_ms <= 201 * W
    assert all(v.window_start_ms < 300 * W for v in verdicts)  # adopted well before the end


def test_a_flagged_window_is_not_learned() -> None:
    det, traffic = baseline(seed=10, adapt_after_windows=1000)
    verdicts = feed(det, traffic, 100, start=200, latency_factor=2.0)
    assert len(verdicts) >= 95  # the outage stays anomalous: it never entered the baseline
    assert verdicts[-1].expected == pytest.approx(verdicts[0].expected, rel=0.05)


def test_attribution_ranks_the_injected_edge_first() -> None:
    det = WindowDetector()
    svc = Traffic(20)
    peers = {"payment": Traffic(21, calls=100.0), "cart": Traffic(22, calls=300.0),
             "currency": Traffic(23, calls=400.0)}
    caller = Traffic(24)

    def edges(**slow: float) -> list[dict[str, Any]]:
        rows = [t.edge_row("checkout", p, latency_factor=slow.get(p, 1.0)) for p, t in peers.items()]
        return rows + [caller.edge_row("frontend", "checkout", latency_factor=slow.get("frontend", 1.0))]

    for i in range(200):
        det.observe_window(i * W, [{"service": "checkout", **svc.row()}], edges())
    bad = edges(payment=4.0, frontend=1.3)
    verdicts = det.observe_window(200 * W, [{"service": "checkout", **svc.row(latency_factor=1.6)}], bad)
    v = next(v for v in verdicts if v.entity == "checkout")
    ranked = det.attribution(v, bad)
    assert [r["edge"] for r in ranked][0] == "checkout->payment"
    assert ranked[0]["peer"] == "payment" and ranked[0]["role"] == "client"
    assert ranked[0]["metric"].endswith("_ms") and ranked[0]["deviation"] > ranked[1]["deviation"]
    assert len(ranked) == 4  # every edge touching checkout, no other


def test_edge_features_fall_back_to_client_latency_without_a_server_span() -> None:
    db = {"client": "cart", "server": "redis-cart", "connection_type": "database", "requests": 40,
          "failed": 1, "server_p50_ms": 0.0, "server_p95_ms": 0.0, "server_p99_ms": 0.0,
          "client_p50_ms": 1.0, "client_p95_ms": 2.0, "client_p99_ms": 3.0}
    assert features("edge", db) == (40, 1, 1.0, 2.0, 3.0)
    n, k, *lat = features("service", {"calls": 0, "errors": 0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0})
    assert (n, k) == (0, 0) and all(math.isnan(v) for v in lat)


def test_error_test_needs_evidence_and_effect() -> None:
    bank = ErrorBank(window=60, grace_period=5, unit=0.003, span=1)
    bank.grow(4)
    rows = np.arange(4)
    for _ in range(60):  # 0.2% on every row
        bank.push(rows, np.full(4, 2), np.full(4, 1000), np.ones(4, dtype=bool))
    scores = bank.score(rows, np.array([1, 1, 30, 50]), np.array([3, 3, 10_000, 1000]))
    assert scores[0] == 0.0  # 33% of 3 requests: not evidence
    assert bank.score(rows[1:2], np.array([1]), np.array([3]), min_requests=20)[0] == 0.0
    assert scores[2] == 0.0  # 0.3% of 10k: significant, but a tiny effect
    assert scores[3] > 0.9


def test_error_bank_pools_the_last_window_and_sums_recent_windows() -> None:
    bank = ErrorBank(window=3, grace_period=0, unit=0.003, span=3)
    bank.grow(1)
    row, yes = np.array([0]), np.ones(1, dtype=bool)
    for k, n in ((0, 100), (1, 100), (2, 100), (3, 100)):
        bank.push(row, np.array([k]), np.array([n]), yes)
    # The pool holds the last 3 learned windows only: 6 errors in 300 requests.
    assert bank.expected(row)[0] == pytest.approx(6.5 / 301)
    assert bank.recent(0) == [(2, 100), (3, 100)]
    bank.push(row, np.array([50]), np.array([100]), np.zeros(1, dtype=bool))  # recorded, not learned
    assert bank.expected(row)[0] == pytest.approx(6.5 / 301) and bank.recent(0) == [(3, 100), (50, 100)]
    # 4 errors in 40, summed with the recent 53 in 200: a clear rise over 2.2%.
    assert bank.score(row, np.array([4]), np.array([40]), min_requests=20)[0] > 0.9


@pytest.mark.parametrize(("k", "n", "a", "b"), [(1, 10, 0.5, 9.5), (4, 30, 2.0, 50.0), (12, 40, 1.5, 300.0)])
def test_beta_binomial_tail_matches_brute_force(k: int, n: int, a: float, b: float) -> None:
    lg = math.lgamma

    def pmf(j: int) -> float:
        return math.exp(lg(n + 1) - lg(j + 1) - lg(n - j + 1) + lg(j + a) + lg(n - j + b)
                        - lg(n + a + b) + lg(a + b) - lg(a) - lg(b))

    assert math.isclose(sum(pmf(j) for j in range(n + 1)), 1.0, rel_tol=1e-9)
    brute = sum(pmf(j) for j in range(k, n + 1))
    assert math.exp(beta_binomial_log_sf(k, n, a, b)) == pytest.approx(brute, rel=1e-9)


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="detectors"):
        settings_of(detectors=("robust", "lstm"))
    with pytest.raises(ValueError):
        settings_of(threshold=0.2, info=0.3)
    assert settings_of().period_windows(60_000) == 1440


def _fan_window(det: WindowDetector, i: int, traffic: Traffic, callers: tuple[str, ...]) -> list[Verdict]:
    """cart called by ``callers`` (the same total traffic whoever calls it)."""
    cart = traffic.row()
    share = {"calls_factor": 1.0 / len(callers)}
    edges = [traffic.edge_row(c, "cart", **share) for c in callers]
    return det.observe_window(i * W, [{"service": "cart", **cart}], edges)


def test_stored_autoencoder_flags_a_lost_caller_that_no_single_metric_shows() -> None:
    from processor.detect.autoencoder import Autoencoder
    from processor.detect.entity_models import ModelSpec, TrainingSet, train_models

    settings = settings_of(detectors=("robust", "ewma", "autoencoder"))
    traffic = Traffic(30)
    history = TrainingSet(settings.min_requests, 1000)
    det = WindowDetector(settings)
    for i in range(300):
        cart = traffic.row()
        edges = [traffic.edge_row(c, "cart", calls_factor=0.5) for c in ("web", "api")]
        assert det.observe_window(i * W, [{"service": "cart", **cart}], edges) == []
        history.add_window([{"service": "cart", **cart}], edges)
    spec = ModelSpec(hidden=(6, 3), epochs=40, min_windows=200, max_windows=1000)
    models = {k: Autoencoder.from_bytes(b) for k, b in train_models(history.matrices(), spec).items()}
    assert ("service", "cart") in models and ("edge", "web->cart") in models
    plain = WindowDetector.from_bytes(det.state_bytes())  # the same state, no models
    det.load_models(models)
    with_model: list[Verdict] = []
    without: list[Verdict] = []
    for i in range(300, 302):  # api stops calling; web carries all of cart's traffic
        with_model += _fan_window(det, i, traffic, ("web",))
        without += _fan_window(plain, i, traffic, ("web",))
    assert not [v for v in without if v.entity == "cart"]  # no single metric of cart moved
    flagged = [v for v in with_model if v.entity == "cart"]
    assert flagged and flagged[0].metric == "fan_in" and "autoencoder" in flagged[0].detectors
    assert flagged[0].observed == 1 and flagged[0].expected == pytest.approx(2, abs=0.5)


def test_models_are_ignored_unless_the_autoencoder_is_chosen() -> None:
    from processor.detect.autoencoder import Autoencoder

    det = WindowDetector(settings_of(detectors=("robust",)))
    det.load_models({("service", "cart"): Autoencoder()})
    assert det.models() == {}


def test_an_edge_under_two_connection_types_is_one_entity_with_summed_counts() -> None:
    det = WindowDetector(settings_of(grace_windows=5))
    traffic = Traffic(4, calls=200.0)
    for i in range(40):
        direct = traffic.edge_row("checkout", "email")
        queued = {**traffic.edge_row("checkout", "email"), "connection_type": "messaging_system"}
        assert det.observe_window(i * W, [], [direct, queued]) == []
    # The queue path stops: half the pair's traffic is gone. Dropping the second row (as a
    # repeat of the window) would have hidden it, and summing shows it.
    verdicts = []
    for i in range(40, 43):
        verdicts += det.observe_window(i * W, [], [traffic.edge_row("checkout", "email")])
    assert det.entities() == [("edge", "checkout->email")]
    assert verdicts and verdicts[0].metric == "rate" and verdicts[0].expected > 300
