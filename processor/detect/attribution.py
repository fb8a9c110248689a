"""Attribution: which edges of an anomalous service moved most, against their own baselines."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from processor.config.components import AnomalyConfig
from processor.detect import stats
from processor.detect.entity_vector import EDGE, ERRORS, RATE, edge_entity, features, to_model


def rank_edges(service: str, edge_rows: Iterable[Mapping[str, Any]],
               baselines: Mapping[str, Mapping[str, tuple[float, float]]],
               cfg: AnomalyConfig | None = None) -> list[dict[str, Any]]:
    """Edges with ``service`` as client or server, ranked by their largest directed deviation.

    ``baselines``: edge -> metric -> (expected, sigma). Deviation is in sigmas, counted in the
    bad direction only (latency/errors up, traffic down). Returns [{edge, peer, role, metric,
    observed, expected, deviation}], largest deviation first; edges with no baseline are left out.
    """
    s = cfg or AnomalyConfig()
    out: list[dict[str, Any]] = []
    for row in edge_rows:
        client, server = str(row["client"]), str(row["server"])
        if service not in (client, server):
            continue
        name = edge_entity(row)
        base = baselines.get(name) or {}
        n, k, p50, p95, p99 = features(EDGE, row)
        observed = {RATE: float(n), "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                    ERRORS: k / n if n else math.nan}
        best: dict[str, Any] | None = None
        for metric, value in observed.items():
            if metric not in base or math.isnan(value):
                continue
            if metric != RATE and n < s.min_requests:
                continue
            expected, sigma = base[metric]
            diff = to_model(metric, value) - to_model(metric, expected)
            dev = diff / sigma if sigma > 0 else 0.0
            bad = stats.directed(dev, s.tuning.traffic_direction if metric == RATE else "up")
            if best is None or bad > best["deviation"]:
                best = {"edge": name, "peer": server if client == service else client,
                        "role": "client" if client == service else "server", "metric": metric,
                        "observed": value, "expected": expected, "deviation": bad}
        if best is not None:
            out.append(best)
    out.sort(key=lambda d: -d["deviation"])
    return out
