"""The rule-based generator: deterministic dashboard specs for an incident, a service, or the overview.

It is the default and the fallback of the model generator. An incident's dashboard is built
from its published insight (entities, the metrics that moved against their baselines, the
edges around it, the suspected origin, the narrative) and the reader's role:
- `sre`: the narrative, the origin's vital signs, the map with the incident highlighted,
  each anomalous metric against its thresholds, the origin's callers and callees, the
  latency distribution, the anomaly timeline and the edges that moved most;
- `developer`: the narrative, the origin's latency percentiles and distribution, the
  anomalous edges over time, its callers and callees and the anomaly timeline;
- `manager`: the narrative, a plain summary, headline numbers and health over time.
Thresholds come from the one health definition (`processors.windows.health`): error rate
at its degraded and critical rates, latency at its ratios of the baseline.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from processor.config.components import HealthConfig
from processor.dashboards.layout import flow
from processor.dashboards.spec import SCHEMA_VERSION, dashboard_id
from processor.insights.message import iso, iso_ms
from processor.insights.text import safe_name

Panel = dict[str, Any]
SERVICE_METRIC_FIELDS = {"rate": ("requests_per_s", "reqps"), "error_ratio": ("error_rate", "percentunit"),
                         "p50_ms": ("p50_ms", "ms"), "p95_ms": ("p95_ms", "ms"), "p99_ms": ("p99_ms", "ms")}


def _name(text: str, n: int = 60) -> str:
    return safe_name(text, n)


def _q(name: str, ref: str = "A", **params: Any) -> dict[str, Any]:
    return {"ref": ref, "name": name, "params": params}


def error_thresholds(h: HealthConfig) -> list[dict[str, Any]]:
    return [{"value": None, "color": "green", "health": "healthy"},
            {"value": h.error_rate_degraded, "color": "yellow", "health": "degraded"},
            {"value": h.error_rate_critical, "color": "red", "health": "critical"}]


def latency_thresholds(h: HealthConfig, baseline_ms: float | None) -> list[dict[str, Any]]:
    if not baseline_ms or baseline_ms <= 0:
        return []
    return [{"value": None, "color": "green", "health": "healthy"},
            {"value": round(baseline_ms * h.latency_degraded_ratio, 3), "color": "yellow", "health": "degraded"},
            {"value": round(baseline_ms * h.latency_critical_ratio, 3), "color": "red", "health": "critical"}]


def _vitals(service: str, h: HealthConfig, baseline_ms: float | None, w: int = 8) -> list[tuple[Panel, int, int]]:
    q = [_q("topology_nodes", service=service)]
    label = _name(service, 50)
    return [({"type": "stat", "title": f"{label}: error rate", "queries": q, "fields": ["error_rate"],
              "unit": "percentunit", "thresholds": error_thresholds(h)}, w, 4),
            ({"type": "stat", "title": f"{label}: p95 latency", "queries": q, "fields": ["p95_ms"], "unit": "ms",
              "thresholds": latency_thresholds(h, baseline_ms)}, w, 4),
            ({"type": "stat", "title": f"{label}: requests/s", "queries": q, "fields": ["requests_per_s"],
              "unit": "reqps"}, w, 4)]


def _map(highlight: Iterable[str] = ()) -> tuple[Panel, int, int]:
    return ({"type": "topology", "title": "Service map", "highlight": sorted(set(highlight))[:40],
             "queries": [_q("topology_nodes", "A"), _q("topology", "B")]}, 24, 11)


def _heatmap(service: str) -> tuple[Panel, int, int]:
    return ({"type": "heatmap", "title": f"{_name(service)}: latency distribution",
             "queries": [_q("latency_heatmap", service=service)], "unit": "ms"}, 12, 8)


def _neighbours(service: str) -> tuple[Panel, int, int]:
    return ({"type": "table", "title": f"{_name(service)}: callers and callees",
             "queries": [_q("service_edges", service=service)],
             "fields": ["direction", "peer", "connection_type", "requests", "error_rate", "server_p95_ms",
                        "client_p95_ms", "health"]}, 12, 8)


def _metric_panel(entity_type: str, entity: str, metric: str, expected: float | None,
                  h: HealthConfig) -> tuple[Panel, int, int] | None:
    field, unit = SERVICE_METRIC_FIELDS.get(metric, ("", ""))
    if not field:
        return None
    thresholds = (error_thresholds(h) if metric == "error_ratio"
                  else latency_thresholds(h, expected) if unit == "ms" else [])
    if entity_type == "service":
        query = _q("service_red", service=entity)
    else:
        client, _, server = entity.partition("->")
        if not server:
            return None
        query = _q("edge_series", client=client, server=server)
        # The detectors judge an edge's latency on its server side (the callee's own time).
        field = {"requests_per_s": "requests_per_s", "error_rate": "error_rate"}.get(field, f"server_{field}")
    title = f"{_name(entity)}: {metric.replace('_', ' ')} against its baseline"
    return ({"type": "timeseries", "title": title, "queries": [query], "fields": [field], "unit": unit,
             "thresholds": thresholds}, 12, 8)


def incident(insight: Mapping[str, Any], audience: str, health: HealthConfig, *, version: int = 1,
             now_ms: int | None = None) -> dict[str, Any]:
    """The dashboard of an incident, from its insight message."""
    incident_id = str(insight["incident_id"])
    origin = (insight.get("suspected_origin") or {}).get("entity") or ""
    metrics = list(insight.get("metrics", ()))
    expected = {(m["entity_type"], m["entity"], m["metric"]): m.get("expected") for m in metrics}
    services = [e["entity"] for e in insight.get("entities", ()) if e["entity_type"] == "service"]
    origin = origin or (services[0] if services else "")
    baseline = expected.get(("service", origin, "p95_ms"))
    panels: list[tuple[Panel, int, int]] = [
        ({"type": "insight", "title": "What happened", "incident_id": incident_id}, 24, 7)]
    if audience == "manager":
        panels.append(({"type": "text", "title": "In short", "text": str(insight["narrative"]["summary"])}, 24, 3))
        if origin:
            panels += _vitals(origin, health, baseline, w=12)[0::2]
        panels.append(({"type": "timeseries", "title": "Health of the services involved",
                        "queries": [_q("health_timeline", service=origin)], "fields": ["health"]}, 24, 6))
    else:
        if origin:
            panels += _vitals(origin, health, baseline)
        if audience == "sre":
            panels.append(_map([e["entity"] for e in insight.get("entities", ())] + ([origin] if origin else [])))
        moved = sorted({(m["entity_type"], m["entity"], m["metric"]) for m in metrics},
                       key=lambda k: (k[1] != origin, k))
        for entity_type, entity, metric in moved[:4 if audience == "sre" else 3]:
            p = _metric_panel(entity_type, entity, metric, expected.get((entity_type, entity, metric)), health)
            if p is not None:
                panels.append(p)
        if origin:
            panels.append(_neighbours(origin))
            panels.append(_heatmap(origin))
        if audience == "developer" and origin:
            panels.append(({"type": "timeseries", "title": f"{_name(origin)}: latency percentiles",
                            "queries": [_q("service_red", service=origin)], "fields": ["p50_ms", "p95_ms", "p99_ms"],
                            "unit": "ms", "thresholds": latency_thresholds(health, baseline)}, 24, 8))
        panels.append(({"type": "table", "title": "Anomaly timeline",
                        "queries": [_q("anomalies", incident_id=incident_id)],
                        "fields": ["window_start", "entity_type", "entity", "metric", "observed", "expected",
                                   "score", "severity"]}, 24, 8))
        if audience == "sre":
            latency = any(m["metric"].endswith("_ms") for m in metrics)
            order = "latency_change" if latency else "error_rate"
            panels.append(({"type": "bar", "title": "Edges that moved most" if latency else "Edges by error rate",
                            "queries": [_q("top_edges", order_by=order, limit=10)],
                            "fields": ["p95_change" if latency else "error_rate"],
                            "unit": "none" if latency else "percentunit"}, 24, 8))
    window_ms = int(float(insight["window_seconds"]) * 1000)
    first = iso_ms(insight["first_window"])
    last = iso_ms(insight["last_window"])
    lead = max(30 * 60_000, 10 * window_ms)
    time_range = {"from": iso(first - lead),
                  "to": "now" if insight["status"] == "open" else iso(last + window_ms + 15 * 60_000)}
    title = f"Incident {incident_id}: {_name(origin, 80) if origin else 'anomaly'} ({insight['severity']})"
    return _spec(dashboard_id("incident", incident_id), "incident", title,
                 f"Generated for the {audience} reading incident {incident_id}.", audience, time_range,
                 "30s" if insight["status"] == "open" else "off", panels, version, now_ms,
                 incident_id=incident_id, service=origin or None)


def service(name: str, audience: str, health: HealthConfig, *, baseline_ms: float | None = None,
            version: int = 1, now_ms: int | None = None) -> dict[str, Any]:
    """The dashboard of one service, on demand."""
    panels = _vitals(name, health, baseline_ms)
    red = [_q("service_red", service=name)]
    panels += [
        ({"type": "timeseries", "title": f"{_name(name)}: requests/s", "queries": red,
          "fields": ["requests_per_s", "errors_per_s"], "unit": "reqps"}, 12, 8),
        ({"type": "timeseries", "title": f"{_name(name)}: error rate", "queries": red, "fields": ["error_rate"],
          "unit": "percentunit", "thresholds": error_thresholds(health)}, 12, 8),
        ({"type": "timeseries", "title": f"{_name(name)}: latency", "queries": red,
          "fields": ["p50_ms", "p95_ms", "p99_ms"], "unit": "ms",
          "thresholds": latency_thresholds(health, baseline_ms)}, 12, 8),
        _heatmap(name),
    ]
    if audience != "manager":
        panels.append(_neighbours(name))
        panels.append(({"type": "table", "title": f"{_name(name)}: anomalies",
                        "queries": [_q("anomalies", service=name)],
                        "fields": ["window_start", "entity", "metric", "observed", "expected", "severity",
                                   "incident_id"]}, 12, 8))
    panels.append(({"type": "table", "title": f"{_name(name)}: insights", "queries": [_q("insights", service=name)],
                    "fields": ["window_start", "severity", "status", "suspected_origin", "summary"]}, 24, 7))
    panels.append(({"type": "timeseries", "title": f"{_name(name)}: health",
                    "queries": [_q("health_timeline", service=name)], "fields": ["health"]}, 24, 5))
    return _spec(dashboard_id("service", f"{name}\x00{audience}"), "service", f"Service {_name(name, 120)}",
                 f"Rate, errors and duration of {_name(name, 120)}, its edges, anomalies and insights.",
                 audience, {"from": "now-6h", "to": "now"}, "30s", panels, version, now_ms, service=name)


def overview(audience: str, health: HealthConfig, *, version: int = 1, now_ms: int | None = None) -> dict[str, Any]:
    """One dashboard over every service."""
    panels = [
        _map(),
        ({"type": "timeseries", "title": "Health of every service", "queries": [_q("health_timeline")],
          "fields": ["health"]}, 24, 8),
        ({"type": "bar", "title": "Edges by error rate", "queries": [_q("top_edges", order_by="error_rate", limit=10)],
          "fields": ["error_rate"], "unit": "percentunit", "thresholds": error_thresholds(health)}, 12, 8),
        ({"type": "table", "title": "Edges whose p95 moved most",
          "queries": [_q("top_edges", order_by="latency_change", limit=10)],
          "fields": ["client", "server", "p95_ms", "prev_p95_ms", "p95_change", "requests"]}, 12, 8),
        ({"type": "table", "title": "Insights", "queries": [_q("insights")],
          "fields": ["window_start", "severity", "status", "suspected_origin", "summary"]}, 24, 8),
    ]
    return _spec(f"overview-{audience}", "overview", "Overview", "Every service: the map, health, the edges that "
                 "moved and the latest insights.", audience, {"from": "now-3h", "to": "now"}, "30s", panels,
                 version, now_ms)


def _spec(did: str, kind: str, title: str, description: str, audience: str, time_range: dict[str, str],
          refresh: str, panels: list[tuple[Panel, int, int]], version: int, now_ms: int | None,
          incident_id: str | None = None, service: str | None = None) -> dict[str, Any]:
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return {"schema_version": SCHEMA_VERSION, "id": did, "version": version, "kind": kind, "title": title[:300],
            "description": description[:4000], "audience": audience, "incident_id": incident_id,
            "service": service, "time_range": time_range, "refresh": refresh, "variables": [],
            "panels": flow(panels), "generator": {"kind": "rules", "model": None}, "generated_at": iso(now)}
