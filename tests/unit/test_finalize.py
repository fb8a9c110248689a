"""Stage 2: when a window is final, merging partials of many partitions, and health rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processor.aggregate.finalize import Finalizer
from processor.aggregate.health import classify
from processor.aggregate.messages import EdgeKey, HealthKey, Watermark
from processor.aggregate.partition import PartitionAggregator
from processor.config import HealthConfig, StoreConfig
from processor.otlp.batch import StringTable
from tests.unit.spans import Spans, emit_all, windows_config

MS = 1_000_000
SIZE_MS = 10_000
T0 = 1_700_000_000_000  # ms, start of window W0
W0, W1 = T0, T0 + SIZE_MS

# -- finality --------------------------------------------------------------------------


def _finalizer(*sources: str) -> Finalizer:
    f = Finalizer(windows_config(SIZE_MS), sources)
    f.on_health_key(HealthKey("fe", W0), 5)
    f.on_health_key(HealthKey("fe", W1), 9)
    f.on_edge_key(EdgeKey("user", "fe", "virtual_node", W0), 5)
    return f


def test_window_not_final_while_an_expected_source_is_unheard() -> None:
    f = _finalizer("spans/0", "spans/1")
    f.on_watermark(Watermark("spans/0", W1 + SIZE_MS, False))
    assert f.final_before_ms() is None
    assert f.take_ready() == ([], [])


def test_window_final_once_every_source_watermark_reaches_its_end() -> None:
    f = _finalizer("spans/0", "spans/1")
    f.on_watermark(Watermark("spans/0", W1 + SIZE_MS, False))
    f.on_watermark(Watermark("spans/1", W1 - 1, False))  # one ms short of W0's end
    assert f.take_ready() == ([], [])
    f.on_watermark(Watermark("spans/1", W1, False))
    assert f.take_ready() == ([("fe", W0)], [EdgeKey("user", "fe", "virtual_node", W0)])


def test_idle_source_does_not_hold_windows_back() -> None:
    f = _finalizer("spans/0", "spans/1")
    f.on_watermark(Watermark("spans/0", W1, False))
    f.on_watermark(Watermark("spans/1", 0, True))
    assert f.take_ready()[0] == [("fe", W0)]


def test_every_source_idle_makes_everything_final() -> None:
    f = _finalizer("spans/0")
    f.on_watermark(Watermark("spans/0", 0, True))
    assert sorted(f.take_ready()[0]) == [("fe", W0), ("fe", W1)]


def test_idle_source_that_resumes_holds_windows_again() -> None:
    f = _finalizer("spans/0", "spans/1")
    f.on_watermark(Watermark("spans/0", W1 + SIZE_MS, False))
    f.on_watermark(Watermark("spans/1", W1 - 5, True))
    assert f.take_ready()[0] == [("fe", W0), ("fe", W1)]
    f.on_watermark(Watermark("spans/1", W1 - 5, False))
    assert f.take_ready()[0] == []


def test_source_watermark_never_moves_back() -> None:
    f = _finalizer("spans/0")
    f.on_watermark(Watermark("spans/0", W1, False))
    f.on_watermark(Watermark("spans/0", W0, False))  # e.g. a replayed, older watermark
    assert f.final_before_ms() == W1


def test_done_removes_keys_and_pending_offset_is_the_minimum() -> None:
    f = _finalizer("spans/0")
    f.on_health_key(HealthKey("fe", W0), 7)  # a later partial for the same key keeps the older offset
    assert f.min_pending_offset() == 5
    f.done([("fe", W0)], [EdgeKey("user", "fe", "virtual_node", W0)])
    assert f.min_pending_offset() == 9
    f.done([("fe", W1)], [])
    assert f.min_pending_offset() is None


# -- merging partials of several partitions ----------------------------------------------


def _partials(latencies_ms: list[np.ndarray], errors: list[int], window_ms: int = W0
              ) -> tuple[list[dict], list[dict]]:
    """Per-partition partial rows from real aggregators: root `fe` calls with the given
    latencies, the first `errors[p]` of them failed."""
    strings = StringTable()
    sp = Spans(strings)
    health, edges = [], []
    for p, (lat, n_err) in enumerate(zip(latencies_ms, errors, strict=True)):
        agg = PartitionAggregator("spans", p, strings, StoreConfig(), windows_config(SIZE_MS, 30_000))
        end = window_ms + 5_000
        rows = [sp.span(trace=p * 100_000 + i + 1, id=i + 1, service="fe", kind="server",
                        start_ms=end - float(v), end_ms=end, error=i < n_err)
                for i, v in enumerate(lat)]
        agg.add(sp.batch(*rows, offset=0), 1)
        em = emit_all(agg)
        health += em.health
        edges += em.edges
    return health, edges


def test_final_health_merges_partitions_and_p95_matches_all_latencies() -> None:
    rng = np.random.default_rng(11)
    lat = [rng.lognormal(3.0, 1.0, n) for n in (400, 250, 600)]
    health, _ = _partials(lat, errors=[3, 0, 7])
    assert len(health) == 3 and {r["input_partition"] for r in health} == {0, 1, 2}
    [row] = Finalizer(windows_config(SIZE_MS)).final_health(health)
    assert (row["service"], row["window_start"], row["window_end"]) == ("fe", W0, W1)
    assert row["calls"] == 1250 and row["errors"] == 10
    assert row["error_rate"] == pytest.approx(10 / 1250)
    assert row["partitions"] == 3
    assert sum(row["latency_counts"]) == 1250
    every = np.concatenate(lat)
    for q, col in ((50, "p50_ms"), (95, "p95_ms"), (99, "p99_ms")):
        exact = float(np.percentile(every, q, method="lower"))
        assert abs(row[col] - exact) / exact <= 0.01, (col, row[col], exact)


def test_final_edges_merge_partitions() -> None:
    rng = np.random.default_rng(12)
    lat = [rng.lognormal(2.0, 0.7, n) for n in (300, 500)]
    _, edges = _partials(lat, errors=[10, 20])
    [row] = Finalizer.final_edges(edges)
    assert (row["client"], row["server"], row["connection_type"]) == ("user", "fe",
                                                                      "virtual_node")
    assert row["requests"] == 800 and row["failed"] == 30
    every = np.concatenate(lat)
    exact = float(np.percentile(every, 95, method="lower"))
    assert abs(row["server_p95_ms"] - exact) / exact <= 0.01
    # A user edge has no client side: 0, not NaN, and no client sketch.
    assert row["client_p95_ms"] == 0.0 and row["client_counts"] == []


def test_final_health_below_min_requests_is_insufficient_data() -> None:
    health, _ = _partials([np.full(4, 10.0), np.full(5, 10.0)], errors=[4, 5])
    [row] = Finalizer(windows_config(SIZE_MS)).final_health(health)
    assert row["calls"] == 9 and row["health"] == "insufficient_data"


def test_final_health_compares_p95_with_earlier_windows_baseline() -> None:
    f = Finalizer(windows_config(SIZE_MS))
    for w in range(3):
        h, _ = _partials([np.full(50, 10.0)], errors=[0], window_ms=T0 + w * SIZE_MS)
        assert f.final_health(h)[0]["health"] == "healthy"
    slow, _ = _partials([np.full(50, 20.0)], errors=[0], window_ms=T0 + 3 * SIZE_MS)
    assert f.final_health(slow)[0]["health"] == "degraded"  # 2x the 10 ms baseline
    slower, _ = _partials([np.full(50, 40.0)], errors=[0], window_ms=T0 + 4 * SIZE_MS)
    assert f.final_health(slower)[0]["health"] == "critical"  # still vs the 10 ms median


def test_baseline_uses_only_windows_before_the_one_classified() -> None:
    f = Finalizer(windows_config(SIZE_MS))
    late, _ = _partials([np.full(50, 10.0)], errors=[0], window_ms=T0 + 5 * SIZE_MS)
    f.final_health(late)
    early, _ = _partials([np.full(50, 40.0)], errors=[0], window_ms=T0)
    assert f.final_health(early)[0]["health"] == "healthy"  # no earlier window to compare


# -- health rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("calls", "errors", "p95", "baseline", "health"),
    [
        (9, 0, 10.0, 10.0, "insufficient_data"),
        (9, 9, 100.0, 10.0, "insufficient_data"),  # too few calls to judge, even all failed
        (10, 0, 10.0, None, "healthy"),
        (1000, 9, 10.0, 10.0, "healthy"),  # 0.9% errors
        (1000, 10, 10.0, 10.0, "degraded"),  # 1%
        (1000, 49, 10.0, 10.0, "degraded"),
        (1000, 50, 10.0, 10.0, "critical"),  # 5%
        (1000, 0, 14.9, 10.0, "healthy"),
        (1000, 0, 15.0, 10.0, "degraded"),  # 1.5x baseline
        (1000, 0, 29.9, 10.0, "degraded"),
        (1000, 0, 30.0, 10.0, "critical"),  # 3x baseline
        (1000, 0, 1e6, None, "healthy"),  # no baseline yet: latency cannot degrade
        (1000, 0, math.nan, 10.0, "healthy"),  # no latency data
        (1000, 10, 30.0, 10.0, "critical"),  # the worse of the two rules wins
    ],
)
def test_health_rules_classify(calls: int, errors: int, p95: float, baseline: float | None,
                               health: str) -> None:
    assert classify(HealthConfig(), calls, errors, p95, baseline) == health


def test_health_rules_thresholds_are_configurable() -> None:
    rules = HealthConfig(min_requests=1, error_rate_degraded=0.2, error_rate_critical=0.5,
                         latency_degraded_ratio=2.0, latency_critical_ratio=4.0)
    assert classify(rules, 10, 1, 10.0, 10.0) == "healthy"
    assert classify(rules, 10, 2, 10.0, 10.0) == "degraded"
    assert classify(rules, 10, 5, 10.0, 10.0) == "critical"
    assert classify(rules, 1, 0, 39.0, 10.0) == "degraded"
    assert classify(rules, 1, 0, 40.0, 10.0) == "critical"
