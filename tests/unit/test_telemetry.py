"""Metric declarations agree with the README and with what prometheus-client exposes."""

from pathlib import Path

import numpy as np
from prometheus_client import generate_latest

from processor.telemetry import METRICS, SERVICE_GRAPH_BUCKETS_S, Metrics, Namespaced, metrics_table


def test_readme_metrics_table_is_generated_from_the_declarations() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert metrics_table() in readme


def test_every_declared_metric_is_exposed() -> None:
    t = Metrics()
    Metrics(t.registry, component="gateway")  # a worker that runs the gateway serves both
    t.service_graph.observe([("a", "b", "")], np.array([0, 0]), np.array([True, False]),
                            np.array([0.003, np.nan]), np.array([0.005, 0.02]))
    text = generate_latest(t.registry).decode()
    for spec in METRICS:
        # The TYPE line names counters with or without _total depending on the client version.
        names = {spec.name, spec.name.removesuffix("_total")}
        assert any(f"# TYPE {n} {spec.kind}\n" in text for n in names), spec.name


def test_service_graph_series_count_and_bucket_like_the_connector() -> None:
    t = Metrics()
    t.service_graph.observe([("a", "b", ""), ("a", "db", "database")], np.array([0, 0, 1]),
                            np.array([True, False, False]), np.array([0.003, 0.5, np.nan]),
                            np.array([0.005, 0.6, 0.001]))
    text = generate_latest(t.registry).decode()
    assert 'traces_service_graph_request_total{client="a",connection_type="",server="b"} 2.0' in text
    assert 'traces_service_graph_request_failed_total{client="a",connection_type="",server="b"} 1.0' in text
    # 3 ms falls in the 4 ms bucket, not the 2 ms one; the database edge has no server side.
    assert 'traces_service_graph_request_server_seconds_bucket{client="a",connection_type="",le="0.002",server="b"} 0.0' in text
    assert 'traces_service_graph_request_server_seconds_bucket{client="a",connection_type="",le="0.004",server="b"} 1.0' in text
    assert 'traces_service_graph_request_server_seconds_count{client="a",connection_type="database",server="db"} 0.0' in text
    assert len(SERVICE_GRAPH_BUCKETS_S) == 16


def test_namespace_prefixes_every_metric_name() -> None:
    """exporters.prometheus.namespace, as the collector's prometheus exporter applies it."""
    t = Metrics()
    Metrics(t.registry, component="gateway")
    t.inc("otel_insights_spans_total", 3)
    t.service_graph.observe([("a", "b", "")], np.array([0]), np.array([False]),
                            np.array([0.003]), np.array([0.005]))
    text = generate_latest(Namespaced(t.registry, "acme")).decode()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert names and all(n.startswith("acme_") for n in names), names
    assert "acme_otel_insights_spans_total 3.0" in text
    assert 'acme_traces_service_graph_request_total{client="a",connection_type="",server="b"} 1.0' in text
    assert "# TYPE acme_otel_insights_gateway_requests_total counter" in text
    assert generate_latest(Namespaced(t.registry)).decode() == generate_latest(t.registry).decode()
