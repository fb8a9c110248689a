"""An entity window as the detectors see it: its features, and the scales they are scored on."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

SERVICE, EDGE = "service", "edge"
RATE, ERRORS = "rate", "error_ratio"
LATENCY = ("p50_ms", "p95_ms", "p99_ms")
FEATURES = (RATE, *LATENCY, ERRORS)  # the entity vector, in this order


def edge_entity(row: Mapping[str, Any]) -> str:
    """The entity name of an edge row: "client->server" (a FaultSpec target spells edges the same)."""
    return f"{row['client']}->{row['server']}"


def edge_endpoints(entity: str) -> tuple[str, str] | None:
    """(client, server) of an edge entity name; None for a name that is not an edge."""
    client, sep, server = entity.partition("->")
    return (client, server) if sep else None


def features(entity_type: str, row: Mapping[str, Any]) -> tuple[int, int, float, float, float]:
    """(requests, errors, p50, p95, p99) of a final row; latency NaN when absent (stored as 0).

    Edges use server-side latency, client-side when there is no server span (database edges).
    """
    if entity_type == SERVICE:
        n, k = int(row.get("calls", 0)), int(row.get("errors", 0))
        lat = [float(row.get(m, 0.0) or 0.0) for m in LATENCY]
    else:
        n, k = int(row.get("requests", 0)), int(row.get("failed", 0))
        side = "server" if float(row.get("server_p95_ms", 0.0) or 0.0) > 0.0 else "client"
        lat = [float(row.get(f"{side}_{m}", 0.0) or 0.0) for m in LATENCY]
    p50, p95, p99 = (v if v > 0.0 and n > 0 else math.nan for v in lat)
    return n, k, p50, p95, p99


def to_model(metric: str, v: float) -> float:
    """The scale a metric is scored on: log for latency (a slowdown is "x2", and quantiles of
    few requests are right-skewed), Anscombe's square root for the request count (Poisson
    noise of equal size at 50 and at 5,000 requests), the ratio itself for errors."""
    if metric == RATE:
        return 2.0 * math.sqrt(v + 0.375) if v >= 0.0 else math.nan
    if metric in LATENCY:
        return math.log(v) if v > 0.0 else math.nan
    return v


def from_model(metric: str, v: float) -> float:
    if metric == RATE:
        return max(0.0, 0.25 * v * v - 0.375)
    if metric in LATENCY:
        return math.exp(v)
    return v


class Evidence(NamedTuple):
    """One contributing factor of a verdict (a Verdict carries them as dicts)."""

    metric: str
    observed: float
    expected: float
    deviation: float
    detector: str  # robust, ewma, seasonal, autoencoder or binomial
    score: float


def group_by_window(health_rows: Iterable[Mapping[str, Any]], edge_rows: Iterable[Mapping[str, Any]]
                    ) -> Iterator[tuple[int, list[Mapping[str, Any]], list[Mapping[str, Any]]]]:
    """Final rows (``window_start`` in ms) grouped into (window_start, health, edges), oldest first."""
    by: dict[int, tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]] = {}
    for i, rows in enumerate((health_rows, edge_rows)):
        for row in rows:
            by.setdefault(int(row["window_start"]), ([], []))[i].append(row)
    for ws in sorted(by):
        yield ws, by[ws][0], by[ws][1]


def merge_edge_rows(edge_rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One row per edge entity (client->server): a pair seen under two connection types (a
    direct call and a messaging hop) is one entity. Counts add up; quantiles are those of the
    busier row (the stored sketches are not at hand here)."""
    merged: dict[str, Mapping[str, Any]] = {}
    for row in edge_rows:
        name = edge_entity(row)
        held = merged.get(name)
        if held is None:
            merged[name] = row
            continue
        busier = row if int(row.get("requests", 0)) > int(held.get("requests", 0)) else held
        merged[name] = {**busier, "requests": int(row.get("requests", 0)) + int(held.get("requests", 0)),
                        "failed": int(row.get("failed", 0)) + int(held.get("failed", 0))}
    return list(merged.values())
