"""Metric declarations agree with the README and with what prometheus-client exposes."""

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import generate_latest

from processor.graph.edges import EdgeBatch
from processor.telemetry import METRICS, SERVICE_GRAPH_BUCKETS_S, Metrics, Namespaced, metrics_table


def test_readme_metrics_table_is_generated_from_the_declarations() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert metrics_table() in readme


def _edges(server_ms: list[float], client_ms: list[float], failed: list[bool]) -> EdgeBatch:
    n = len(failed)
    z = np.zeros(n, np.int64)
    return EdgeBatch(client=np.zeros(n, np.int32), server=np.zeros(n, np.int32),
                     conn=np.zeros(n, np.int8), failed=np.array(failed),
                     client_ms=np.array(client_ms, float), server_ms=np.array(server_ms, float),
                     time_ns=z, client_end_ns=z, server_end_ns=z, hold_offset=z, offset=z,
                     client_dims=np.zeros((n, 0), np.int32), server_dims=np.zeros((n, 0), np.int32))


AB = (("client", "a"), ("connection_type", ""), ("server", "b"))
AB_OK, AB_FAILED = (*AB, ("failed", "false")), (*AB, ("failed", "true"))


def test_every_declared_metric_is_exposed() -> None:
    t = Metrics()
    Metrics(t.registry, component="gateway")  # a worker that runs the gateway serves both
    t.service_graph.observe(([AB_FAILED, AB_OK], np.array([0, 1])),
                            _edges([3, np.nan], [5, 20], [True, False]))
    text = generate_latest(t.registry).decode()
    for spec in METRICS:
        # The TYPE line names counters with or without _total depending on the client version.
        names = {spec.name, spec.name.removesuffix("_total")}
        assert any(f"# TYPE {n} {spec.kind}\n" in text for n in names), spec.name


def test_service_graph_series_count_and_bucket_like_the_connector() -> None:
    t = Metrics()
    db = (("client", "a"), ("connection_type", "virtual_node"), ("failed", "false"), ("server", "x"))
    t.service_graph.observe(([AB_FAILED, AB_OK, db], np.array([0, 1, 2, 1])),
                            _edges([3, 500, np.nan, 4], [5, 600, 1, 4], [True, False, False, False]))
    text = generate_latest(t.registry).decode()
    ok, bad = 'client="a",connection_type="",failed="false"', 'client="a",connection_type="",failed="true"'
    # The connector keys series by `failed` too; failed_total lists only series that failed.
    assert f'traces_service_graph_request_total{{{ok},server="b"}} 2.0' in text
    assert f'traces_service_graph_request_total{{{bad},server="b"}} 1.0' in text
    assert f'traces_service_graph_request_failed_total{{{bad},server="b"}} 1.0' in text
    assert f'traces_service_graph_request_failed_total{{{ok}' not in text
    # 3 ms falls in the 4 ms bucket, not the 2 ms one; 4 ms is in its own bound's bucket (le).
    assert f'traces_service_graph_request_server_seconds_bucket{{{bad},le="0.002",server="b"}} 0.0' in text
    assert f'traces_service_graph_request_server_seconds_bucket{{{bad},le="0.004",server="b"}} 1.0' in text
    assert f'traces_service_graph_request_server_seconds_bucket{{{ok},le="0.004",server="b"}} 1.0' in text
    # A side with no span observes 0 s: counted in the first bucket, adds nothing to the sum.
    virtual = 'client="a",connection_type="virtual_node",failed="false"'
    assert f'traces_service_graph_request_server_seconds_bucket{{{virtual},le="0.002",server="x"}} 1.0' in text
    assert f'traces_service_graph_request_server_seconds_sum{{{virtual},server="x"}} 0.0' in text
    assert f'traces_service_graph_request_server_seconds_count{{{virtual},server="x"}} 1.0' in text
    assert len(SERVICE_GRAPH_BUCKETS_S) == 16


def test_namespace_prefixes_every_metric_name() -> None:
    """exporters.prometheus.namespace, as the collector's prometheus exporter applies it."""
    t = Metrics()
    Metrics(t.registry, component="gateway")
    t.inc("otel_insights_spans_total", 3)
    t.service_graph.observe(([AB_OK], np.array([0])), _edges([3], [5], [False]))
    text = generate_latest(Namespaced(t.registry, "acme")).decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert names and all(n.startswith("acme_") for n in names), names
    assert "acme_otel_insights_spans_total 3.0" in text
    assert 'acme_traces_service_graph_request_total{client="a",connection_type="",failed="false",server="b"} 1.0' in text
    assert "# TYPE acme_otel_insights_gateway_requests_total counter" in text
    assert generate_latest(Namespaced(t.registry)).decode() == generate_latest(t.registry).decode()


def test_service_graph_buckets_are_configurable() -> None:
    t = Metrics()
    t.service_graph.configure((0.1, 1.0, 10.0))
    t.service_graph.observe(([AB_OK], np.array([0, 0, 0])), _edges([1000, 50, 20_000], [1, 1, 1],
                                                                     [False] * 3))
    text = generate_latest(t.registry).decode()
    buckets = [ln for ln in text.splitlines()
               if ln.startswith("traces_service_graph_request_server_seconds_bucket")]
    assert [ln.rsplit(" ", 1)[1] for ln in buckets] == ["1.0", "2.0", "2.0", "3.0"]
    assert ['le="0.1"' in buckets[0], 'le="+Inf"' in buckets[3]] == [True, True]
    with pytest.raises(ValueError, match="cannot change"):
        t.service_graph.configure((1.0,))
