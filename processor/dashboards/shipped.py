"""The dashboards shipped for Grafana (config/grafana/dashboards/), written as specs so they go
through the same checks and the same export as generated ones.

`otel-insights dashboards provision --out config/grafana/dashboards` writes them; a test
holds the committed files to what this module produces.
"""

from __future__ import annotations

from typing import Any

from processor.config.components import HealthConfig
from processor.dashboards.layout import flow
from processor.dashboards.rules import error_thresholds
from processor.dashboards.spec import SCHEMA_VERSION

SERVICE = {"var": "service"}
SERVICE_VARIABLE = {"name": "service", "label": "Service", "query": "service_names", "default": "frontend"}
GENERATED_AT = "2026-01-01T00:00:00.000Z"  # fixed: the files are compared byte for byte


def _q(name: str, ref: str = "A", **params: Any) -> dict[str, Any]:
    return {"ref": ref, "name": name, "params": params}


def _spec(did: str, title: str, description: str, panels: list, variables: list | None = None,
          time_from: str = "now-3h") -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "id": did, "version": 1,
            "kind": "service" if variables else "overview", "title": title, "description": description,
            "audience": "sre", "incident_id": None, "service": None,
            "time_range": {"from": time_from, "to": "now"}, "refresh": "1m", "variables": variables or [],
            "panels": flow(panels), "generator": {"kind": "rules", "model": None}, "generated_at": GENERATED_AT}


def specs(health: HealthConfig | None = None) -> dict[str, dict[str, Any]]:
    """File name (without .json) -> spec."""
    h = health or HealthConfig()
    edge_fields = ["client", "server", "connection_type", "dimensions", "requests_per_s", "error_rate",
                   "server_p95_ms", "client_p95_ms", "health"]
    red = [_q("service_red", service=SERVICE)]
    vitals = [_q("topology_nodes", service=SERVICE)]
    return {
        "service-graph": _spec("otel-insights-service-graph", "otel-insights: service graph",
                               "The service map from the final edge windows, coloured by health.", [
            ({"type": "topology", "title": "Service graph",
              "queries": [_q("topology_nodes", "A"), _q("topology", "B")]}, 24, 14),
            ({"type": "table", "title": "Edges over the range", "queries": [_q("topology")],
              "fields": edge_fields}, 24, 10)], time_from="now-1h"),
        "service-red": _spec("otel-insights-service-red", "otel-insights: service RED",
                             "Rate, errors and duration of one service, from its final windows.", [
            ({"type": "stat", "title": "Requests/s", "queries": vitals, "fields": ["requests_per_s"],
              "unit": "reqps"}, 8, 4),
            ({"type": "stat", "title": "Error rate", "queries": vitals, "fields": ["error_rate"],
              "unit": "percentunit", "thresholds": error_thresholds(h)}, 8, 4),
            ({"type": "stat", "title": "p95 latency", "queries": vitals, "fields": ["p95_ms"], "unit": "ms"}, 8, 4),
            ({"type": "timeseries", "title": "Requests/s", "queries": red, "fields": ["requests_per_s", "errors_per_s"],
              "unit": "reqps"}, 12, 8),
            ({"type": "timeseries", "title": "Error rate", "queries": red, "fields": ["error_rate"],
              "unit": "percentunit", "thresholds": error_thresholds(h)}, 12, 8),
            ({"type": "timeseries", "title": "Latency percentiles", "queries": red,
              "fields": ["p50_ms", "p95_ms", "p99_ms"], "unit": "ms"}, 12, 8),
            ({"type": "heatmap", "title": "Latency distribution", "queries": [_q("latency_heatmap", service=SERVICE)],
              "unit": "ms"}, 12, 8),
            ({"type": "table", "title": "Callers and callees", "queries": [_q("service_edges", service=SERVICE)],
              "fields": ["direction", "peer", "connection_type", "requests", "error_rate", "server_p95_ms",
                         "client_p95_ms", "health"]}, 24, 8)],
            variables=[SERVICE_VARIABLE]),
        "edges": _spec("otel-insights-edges", "otel-insights: edges",
                       "Every edge over the range, and the ones that moved most.", [
            ({"type": "bar", "title": "Edges by error rate", "queries": [_q("top_edges", order_by="error_rate", limit=15)],
              "fields": ["error_rate"], "unit": "percentunit", "thresholds": error_thresholds(h)}, 12, 9),
            ({"type": "table", "title": "Edges whose p95 moved most",
              "queries": [_q("top_edges", order_by="latency_change", limit=15)],
              "fields": ["client", "server", "p95_ms", "prev_p95_ms", "p95_change", "requests"]}, 12, 9),
            ({"type": "table", "title": "All edges", "queries": [_q("topology")], "fields": edge_fields}, 24, 12)]),
        "anomalies": _spec("otel-insights-anomalies", "otel-insights: anomalies",
                           "What the detectors flagged, and every service's health over time.", [
            ({"type": "timeseries", "title": "Health", "queries": [_q("health_timeline")], "fields": ["health"]},
             24, 9),
            ({"type": "table", "title": "Anomalous windows", "queries": [_q("anomalies")],
              "fields": ["window_start", "entity_type", "entity", "metric", "observed", "expected", "score",
                         "severity", "incident_id"]}, 24, 12)], time_from="now-24h"),
        "insights": _spec("otel-insights-insights", "otel-insights: insights",
                          "One insight per incident: the newest version of each.", [
            ({"type": "table", "title": "Insights", "queries": [_q("insights")],
              "fields": ["window_start", "last_window", "severity", "status", "suspected_origin", "narrator",
                         "grounded", "summary"]}, 24, 16)], time_from="now-24h"),
    }
