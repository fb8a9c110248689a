"""The template narrator: plain English from the facts alone, deterministic, always there.

It is the narrator when no model is configured, and the fallback when the budget is spent,
every model failed, or a model's text could not be grounded. Its narrative has the shape
every narrator returns (see `Narrative`): observed facts and possible causes kept apart,
each pointing at the facts it rests on.
"""

from __future__ import annotations

from typing import TypedDict

from processor.detect.entity_vector import edge_endpoints
from processor.insights.facts import EdgeFact, Facts, MetricFact
from processor.insights.text import display, quote, utc

METRIC_WORDS = {"rate": "requests per window", "error_ratio": "error rate", "p50_ms": "median latency",
                "p95_ms": "p95 latency", "p99_ms": "p99 latency"}
MAX_OBSERVED = 8


class Point(TypedDict):
    text: str
    facts: list[str]  # ids of the facts it rests on (m1, e2, ...)


class Narrative(TypedDict):
    summary: str
    observed: list[Point]
    possible_causes: list[Point]
    suggested_checks: list[str]


def narrate(facts: Facts) -> Narrative:
    strongest = sorted(facts.metrics, key=lambda m: (-m.score, m.id))
    observed: list[Point] = [{"text": _metric_sentence(m), "facts": [m.id]} for m in strongest[:MAX_OBSERVED]]
    edges: list[Point] = [{"text": _edge_sentence(e), "facts": [e.id]} for e in facts.edges if e.anomalous]
    observed += edges[:4]
    return {
        "summary": _summary(facts, strongest[0]),
        "observed": observed,
        "possible_causes": _causes(facts),
        "suggested_checks": _checks(facts),
    }


def _summary(facts: Facts, top: MetricFact) -> str:
    obs, exp, ratio = top.shown
    ends = edge_endpoints(top.entity) if top.entity_type == "edge" else None
    of = f"calls from {quote(ends[0])} to {quote(ends[1])}" if ends else quote(top.entity)
    lead = (f"{facts.severity.capitalize()}: {METRIC_WORDS.get(top.metric, top.metric)} of {of} "
            f"at {obs}, expected {exp}" + (f" ({ratio})" if ratio else ""))
    span = f"since {utc(facts.first_window_ms)}"
    if facts.windows > 1:
        span += f", {facts.windows} windows"
    n = len(facts.entities)
    tail = f"; {n} entities affected" if n > 1 else ""
    origin = f". Suspected origin: {quote(facts.origin[0].entity)}." if facts.origin else "."
    return f"{lead}, {span}{tail}{origin}"


def _metric_sentence(m: MetricFact) -> str:
    obs, exp, ratio = m.shown
    return (f"{_entity(m)} {METRIC_WORDS.get(m.metric, m.metric)} was {obs} in the window from "
            f"{utc(m.window_start_ms)}, expected {exp}" + (f", {ratio}" if ratio else "") + f" ({m.severity}).")


def _entity(m: MetricFact) -> str:
    ends = edge_endpoints(m.entity) if m.entity_type == "edge" else None
    return f"Calls from {quote(ends[0])} to {quote(ends[1])}:" if ends else quote(m.entity)


def _edge_sentence(e: EdgeFact) -> str:
    return (f"Calls from {quote(e.client)} to {quote(e.server)}: {e.requests} requests, "
            f"{display('error_ratio', e.error_ratio)} failed, peak p95 {display('p95_ms', e.peak_p95_ms)}.")


def _causes(facts: Facts) -> list[Point]:
    out: list[Point] = []
    for c in facts.origin[:3]:
        hedge = "Likely" if c.rank == 1 else "Possibly"
        why = "; ".join(c.reasons())
        kind = "a drop in the traffic it receives" if c.traffic_only else "a problem in"
        text = (f"{hedge} {kind} {quote(c.entity)} itself: {why}." if not c.traffic_only
                else f"{hedge} {kind} {quote(c.entity)}: {why}.")
        out.append({"text": text, "facts": list(c.facts)})
    return out


def _checks(facts: Facts) -> list[str]:
    if not facts.origin:
        return []
    top = facts.origin[0]
    name = quote(top.entity)
    metrics = {m.metric for m in facts.metrics if m.id in top.facts}
    database = any(e.server == top.entity and e.connection_type == "database" for e in facts.edges)
    checks = []
    if database:
        checks.append(f"Check the database {name}: slow queries, locks, and its connection pools.")
    elif metrics & {"p50_ms", "p95_ms", "p99_ms"}:
        checks.append(f"Look at the slowest traces through {name} in the incident windows, and at its "
                      "saturation (CPU, memory, pools, queues).")
    if "error_ratio" in metrics:
        checks.append(f"Read {name}'s error logs and the status of its failing spans in the incident windows.")
    if "rate" in metrics:
        checks.append(f"Check whether the callers of {name}, or the collector exporting them, stopped sending.")
    checks.append(f"Check recent deploys and configuration changes of {name}.")
    if top.anomalous_callees:
        checks.append("Then its anomalous callees: " + ", ".join(quote(c) for c in top.anomalous_callees) + ".")
    return checks
