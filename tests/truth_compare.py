"""Compare final rows (query API rows or the runner's) with the generator's independent ground truth."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from processor.generate import GroundTruth


def iso_to_ns(text: str | int) -> int:
    """A window start as ns: the query API's ISO string, or the store's epoch ms."""
    if isinstance(text, int):
        return text * 1_000_000
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000) * 1_000_000


def health_by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["service"], iso_to_ns(r["window_start"])): r for r in rows}


def edges_by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str, str, int], dict[str, Any]]:
    return {(r["client"], r["server"], r["connection_type"], iso_to_ns(r["window_start"])): r for r in rows}


def _truth(truth: GroundTruth, before_ns: int | None) -> tuple[dict, dict]:
    ts, te = truth.service_windows(), truth.edge_windows()
    if before_ns is None:
        return ts, te
    return ({k: v for k, v in ts.items() if k[-1] < before_ns},
            {k: v for k, v in te.items() if k[-1] < before_ns})


def _rows(rows: dict, before_ns: int | None) -> dict:
    return rows if before_ns is None else {k: v for k, v in rows.items() if k[-1] < before_ns}


def counts_match(truth: GroundTruth, health: list[dict], edges: list[dict],
                 before_ns: int | None = None) -> bool:
    """Final rows equal the truth (only windows starting before ``before_ns``, if given)."""
    h, e = _rows(health_by_key(health), before_ns), _rows(edges_by_key(edges), before_ns)
    ts, te = _truth(truth, before_ns)
    if set(h) != set(ts) or set(e) != set(te):
        return False
    return (all(h[k]["calls"] == v["calls"] and h[k]["errors"] == v["errors"] for k, v in ts.items())
            and all(e[k]["requests"] == v["requests"] and e[k]["failed"] == v["failed"]
                    for k, v in te.items()))


def assert_exact(truth: GroundTruth, health: list[dict], edges: list[dict],
                 before_ns: int | None = None) -> None:
    h, e = _rows(health_by_key(health), before_ns), _rows(edges_by_key(edges), before_ns)
    ts, te = _truth(truth, before_ns)
    assert set(h) == set(ts), (sorted(set(h) ^ set(ts))[:10])
    assert set(e) == set(te), (sorted(set(e) ^ set(te))[:10])
    for k, v in ts.items():
        assert (h[k]["calls"], h[k]["errors"]) == (v["calls"], v["errors"]), k
        _close(h[k], v["latencies_ms"], "")
    for k, v in te.items():
        assert (e[k]["requests"], e[k]["failed"]) == (v["requests"], v["failed"]), k
        _close(e[k], v["server_latencies_ms"], "server_")
        _close(e[k], v["client_latencies_ms"], "client_")


def _close(row: dict[str, Any], lat: list[float], prefix: str) -> None:
    if not lat:
        return
    arr = np.asarray(lat)
    for q in (50, 95, 99):
        exact = float(np.percentile(arr, q, method="lower"))
        got = row[f"{prefix}p{q}_ms"]
        assert abs(got - exact) <= 0.01 * exact + 1e-9, (row, q, got, exact)
