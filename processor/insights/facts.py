"""The facts bundle of one incident: everything a narrative may say, measured, with ids.

Built from the incident's anomaly rows (what the detectors published) and the final rows
of its windows (the entities' and their edges' health, as stored). Every number and name
a narrator writes must come from here (`processor.insights.grounding` checks it), so the
bundle holds values as measured and their display forms (`processor.insights.text`).
Names stay raw in the bundle; whoever shows one passes it through `safe_name`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from processor.detect.entity_vector import edge_endpoints
from processor.insights import origin
from processor.insights.text import display, display_ratio

MAX_EDGES = 24  # the edges around the incident a bundle keeps: anomalous first, then busiest
SEVERITY_ORDER = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class MetricFact:
    """One anomalous metric of one entity in one window, as the detectors scored it."""

    id: str
    entity_type: str  # service | edge
    entity: str
    metric: str  # rate | error_ratio | p50_ms | p95_ms | p99_ms
    window_start_ms: int
    observed: float
    expected: float
    score: float
    severity: str

    @property
    def shown(self) -> tuple[str, str, str | None]:
        """(observed, expected, ratio) as displayed."""
        return (display(self.metric, self.observed), display(self.metric, self.expected),
                display_ratio(self.observed, self.expected))


@dataclass(frozen=True)
class EdgeFact:
    """An edge around the incident, summed over the incident's windows."""

    id: str
    client: str
    server: str
    connection_type: str
    requests: int
    failed: int
    peak_p95_ms: float  # the highest p95 of any of its windows (server side, else client)
    anomalous: bool  # the edge itself was flagged

    @property
    def error_ratio(self) -> float:
        return self.failed / self.requests if self.requests else 0.0


@dataclass
class Facts:
    incident_id: str
    window_ms: int
    first_window_ms: int
    last_window_ms: int
    severity: str
    entities: list[tuple[str, str]]  # (entity_type, entity), sorted
    metrics: list[MetricFact]
    edges: list[EdgeFact]
    origin: list[origin.Candidate]
    attributed: list[dict[str, Any]] = field(default_factory=list)  # edges the detectors ranked

    @property
    def windows(self) -> int:
        return (self.last_window_ms - self.first_window_ms) // self.window_ms + 1

    def names(self) -> set[str]:
        """Every entity name the bundle holds (services, edge endpoints, edges)."""
        out = {name for _, name in self.entities}
        for e in self.edges:
            out |= {e.client, e.server, f"{e.client}->{e.server}"}
        for _, name in self.entities:
            ends = edge_endpoints(name)
            if ends:
                out |= set(ends)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "windows": self.windows}

    def key(self) -> str:
        """A digest of the bundle: equal facts give equal keys (the response cache's key)."""
        body = json.dumps(self.to_dict(), sort_keys=True, default=_plain, separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()


def build(incident_id: str, anomalies: Iterable[Mapping[str, Any]], edge_rows: Iterable[Mapping[str, Any]],
          window_ms: int) -> Facts:
    """The facts of one incident from its anomaly rows and the final edge rows of its windows
    (and of the windows around them the caller chose to read)."""
    rows = sorted(anomalies, key=lambda r: (int(r["window_start"]), -float(r["score"]), str(r["entity"])))
    if not rows:
        raise ValueError(f"incident {incident_id!r} has no anomalies")
    metrics = [MetricFact(f"m{i + 1}", str(r["entity_type"]), str(r["entity"]), str(r["metric"]),
                          int(r["window_start"]), float(r["observed"]), float(r["expected"]),
                          float(r["score"]), str(r.get("severity") or "warning"))
               for i, r in enumerate(rows)]
    entities = sorted({(m.entity_type, m.entity) for m in metrics})
    first, last = metrics[0].window_start_ms, max(m.window_start_ms for m in metrics)
    flagged_edges = {m.entity for m in metrics if m.entity_type == "edge"}
    nodes = _nodes(entities)
    edges = _edges(edge_rows, nodes, flagged_edges, first, last + window_ms)
    attributed = []
    for r in rows:
        for a in r.get("attribution") or []:
            attributed.append({"service": str(r["entity"]), **{k: a[k] for k in
                              ("edge", "peer", "role", "metric", "observed", "expected", "deviation") if k in a}})
    severity = max((m.severity for m in metrics), key=lambda s: SEVERITY_ORDER.get(s, 0))
    return Facts(incident_id, window_ms, first, last, severity, entities, metrics, edges,
                 _origin(metrics, edges), attributed[:MAX_EDGES])


def _nodes(entities: list[tuple[str, str]]) -> set[str]:
    out = set()
    for kind, name in entities:
        ends = edge_endpoints(name) if kind == "edge" else None
        out |= set(ends) if ends else {name}
    return out


def _edges(rows: Iterable[Mapping[str, Any]], nodes: set[str], flagged: set[str], since_ms: int,
           until_ms: int) -> list[EdgeFact]:
    acc: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        ws = int(r["window_start"])
        client, server = str(r["client"]), str(r["server"])
        if not since_ms <= ws < until_ms or not ({client, server} & nodes):
            continue
        key = (client, server, str(r.get("connection_type", "")))
        got = acc.setdefault(key, [0, 0, 0.0])
        got[0] += int(r["requests"])
        got[1] += int(r["failed"])
        p95 = float(r.get("server_p95_ms") or 0.0) or float(r.get("client_p95_ms") or 0.0)
        got[2] = max(got[2], p95)
    ordered = sorted(acc.items(), key=lambda kv: (f"{kv[0][0]}->{kv[0][1]}" not in flagged, -kv[1][0], kv[0]))
    return [EdgeFact(f"e{i + 1}", c, s, conn, int(v[0]), int(v[1]), float(v[2]), f"{c}->{s}" in flagged)
            for i, ((c, s, conn), v) in enumerate(ordered[:MAX_EDGES])]


def _origin(metrics: list[MetricFact], edges: list[EdgeFact]) -> list[origin.Candidate]:
    anomalous: dict[str, tuple[float, bool, tuple[str, ...]]] = {}
    for m in metrics:
        ends = edge_endpoints(m.entity) if m.entity_type == "edge" else None
        node = ends[1] if ends else m.entity  # an edge's anomaly is its server's, as its caller sees it
        score, traffic, ids = anomalous.get(node, (0.0, True, ()))
        anomalous[node] = (max(score, m.score), traffic and m.metric == "rate", (*ids, m.id))
    calls = [(e.client, e.server) for e in edges]
    for m in metrics:  # a flagged edge is a call even when its rows fell outside the bundle
        ends = edge_endpoints(m.entity) if m.entity_type == "edge" else None
        if ends:
            calls.append(ends)
    return origin.rank(anomalous, calls)


def _plain(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (set, frozenset, tuple)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")
