"""Stage 2: merge partials from every input partition into one final row per entity/window.

A window is final once every known input source's watermark has passed its end, or the
source is idle. Final rows are recomputed from the stored partials (not from what this
process happens to hold), so a replayed or corrected partial simply re-finalises the window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

from processor.aggregate.health import LatencyBaselines, classify
from processor.aggregate.messages import Dimensions, EdgeKey, HealthKey, Watermark, dimensions_key
from processor.config.components import WindowsConfig
from processor.windows.arith import END_OF_TIME_MS
from processor.windows.sketch import merged_quantiles


@dataclass
class SourceState:
    watermark_ms: int = 0
    idle: bool = False


def heard(sources: dict[str, SourceState], mark: Watermark) -> None:
    """Take a source's watermark message into ``sources`` (the watermark never moves back)."""
    st = sources.setdefault(mark.source, SourceState())
    st.watermark_ms = max(st.watermark_ms, mark.watermark_ms)
    st.idle = mark.idle


def final_before(expected: set[str], sources: dict[str, SourceState]) -> int | None:
    """Windows ending at or before this are final by ``sources``; None while one is unheard."""
    if expected - set(sources):
        return None
    active = [s.watermark_ms for s in sources.values() if not s.idle]
    if not active:
        return END_OF_TIME_MS  # every source idle: whatever arrived is all there is
    return min(active)


class Finalizer:
    """Tracks source watermarks and the (entity, window) keys waiting to be final."""

    def __init__(self, windows: WindowsConfig, expected_sources: Iterable[str] = ()) -> None:
        self.size_ms = windows.size.ms
        self.rules = windows.health
        self.expected_sources = set(expected_sources)
        self.sources: dict[str, SourceState] = {}
        self.pending_health: dict[HealthKey, int] = {}  # key -> lowest offset announcing it
        self.pending_edges: dict[EdgeKey, int] = {}
        self.baselines = LatencyBaselines(self.rules.baseline_windows)

    def on_watermark(self, mark: Watermark) -> None:
        heard(self.sources, mark)

    def on_health_key(self, key: HealthKey, offset: int) -> None:
        self.pending_health[key] = min(offset, self.pending_health.get(key, offset))

    def on_edge_key(self, key: EdgeKey, offset: int) -> None:
        self.pending_edges[key] = min(offset, self.pending_edges.get(key, offset))

    def is_pending(self, key: HealthKey | EdgeKey) -> bool:
        return key in (self.pending_health if isinstance(key, HealthKey) else self.pending_edges)

    def final_before_ms(self) -> int | None:
        """Windows ending at or before this are final; None while a source is unheard."""
        return final_before(self.expected_sources, self.sources)

    def take_ready(self) -> tuple[list[HealthKey], list[EdgeKey]]:
        limit = self.final_before_ms()
        if limit is None:
            return [], []
        h = [k for k in self.pending_health if k.window_start + self.size_ms <= limit]
        e = [k for k in self.pending_edges if k.window_start + self.size_ms <= limit]
        return h, e

    def done(self, health: list[HealthKey], edges: list[EdgeKey]) -> None:
        for k in health:
            self.pending_health.pop(k, None)
        for ke in edges:
            self.pending_edges.pop(ke, None)

    def min_pending_offset(self) -> int | None:
        vals = list(self.pending_health.values()) + list(self.pending_edges.values())
        return min(vals) if vals else None

    # -- merging -----------------------------------------------------------------------

    def seed_baseline(self, service: str, window_start_ms: int, p95_ms: float) -> None:
        self.baselines.add(service, window_start_ms, p95_ms)

    def final_health(self, partials: list[dict]) -> list[dict]:
        groups: dict[tuple[str, int], list[dict]] = {}
        for r in partials:
            groups.setdefault((r["service"], r["window_start"]), []).append(r)
        out, version = [], time.time_ns()
        for (service, ws), rows in sorted(groups.items(), key=lambda kv: kv[0][1]):
            calls = sum(r["calls"] for r in rows)
            errors = sum(r["errors"] for r in rows)
            keys, counts, (p50, p95, p99) = merged_quantiles(
                [r["latency_keys"] for r in rows], [r["latency_counts"] for r in rows])
            health = classify(self.rules, calls, errors, p95, self.baselines.baseline(service, ws))
            if calls >= self.rules.min_requests:
                self.baselines.add(service, ws, p95)
            out.append({
                "window_start": ws, "window_end": rows[0]["window_end"], "service": service,
                "calls": calls, "errors": errors, "error_rate": errors / calls if calls else 0.0,
                "p50_ms": _finite(p50), "p95_ms": _finite(p95), "p99_ms": _finite(p99),
                "health": health, "latency_keys": keys, "latency_counts": counts,
                # Input partitions that fed the window (a correction is a second row of one).
                "partitions": len({(r["input_topic"], r["input_partition"]) for r in rows}),
                "version": version,
            })
        return out

    @staticmethod
    def final_edges(partials: list[dict]) -> list[dict]:
        groups: dict[tuple[str, str, str, Dimensions, int], list[dict]] = {}
        for r in partials:
            key = (r["client"], r["server"], r["connection_type"],
                   dimensions_key(r.get("dimensions")), r["window_start"])
            groups.setdefault(key, []).append(r)
        out, version = [], time.time_ns()
        for (client, server, conn, dims, ws), rows in groups.items():
            req = sum(r["requests"] for r in rows)
            failed = sum(r["failed"] for r in rows)
            sk, sc, sq = merged_quantiles([r["server_keys"] for r in rows], [r["server_counts"] for r in rows])
            ck, cc, cq = merged_quantiles([r["client_keys"] for r in rows], [r["client_counts"] for r in rows])
            out.append({
                "window_start": ws, "window_end": rows[0]["window_end"], "client": client,
                "server": server, "connection_type": conn, "dimensions": dict(dims),
                "requests": req, "failed": failed,
                "error_rate": failed / req if req else 0.0,
                "server_p50_ms": _finite(sq[0]), "server_p95_ms": _finite(sq[1]),
                "server_p99_ms": _finite(sq[2]), "client_p50_ms": _finite(cq[0]),
                "client_p95_ms": _finite(cq[1]), "client_p99_ms": _finite(cq[2]),
                "server_keys": sk, "server_counts": sc, "client_keys": ck, "client_counts": cc,
                "version": version,
            })
        return out


def _finite(v: float) -> float:
    # ClickHouse Float64 holds NaN fine, but JSON consumers choke on it: 0 means "no side".
    return 0.0 if math.isnan(v) else v
