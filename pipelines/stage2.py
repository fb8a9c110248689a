"""Stage 2 agent body: merge partials of every input partition into final rows."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from pipelines.runtime import Runtime

log = logging.getLogger("otel_insights.stage2")


class Stage2:
    def __init__(self, rt: Runtime, on_final: Callable[[list[dict], list[dict]], None] | None = None) -> None:
        self.rt = rt
        self.on_final = on_final  # sees every final row written (the anomaly judge keeps them)
        self.held: list[tuple[Any, list[tuple]]] = []  # (event, keys it announced)
        self._seeded = False

    async def process(self, events: list[Any]) -> None:
        fin = self.rt.finalizer
        for ev in events:
            try:
                msg = json.loads(ev.value)
                kind = msg["t"]
            except (ValueError, KeyError, TypeError):
                log.error("ignoring malformed partials message at offset %d", ev.message.offset)
                continue
            if kind == "w":
                fin.on_watermark(msg["s"], int(msg["wm"]), bool(msg["idle"]))
                continue
            key = tuple(msg["k"])
            ev.message.incref()  # released once the key's final row is written
            if kind == "h":
                fin.on_health_key(key, ev.message.offset)  # type: ignore[arg-type]
            else:
                fin.on_edge_key(key, ev.message.offset)  # type: ignore[arg-type]
            self.held.append((ev, [(kind, key)]))
        await self.finalize_ready()

    async def _seed_baselines(self) -> None:
        """Latency baselines survive restarts: start from the stored final windows."""
        fin = self.rt.finalizer
        history = await self.rt.io_call(self.rt.store.recent_health_p95, None,
                                        int(time.time() * 1000), fin.rules.baseline_windows)
        for service, values in history.items():
            # Stored windows predate anything this process finalises: number them below zero.
            for i, p95 in enumerate(values):
                fin.seed_baseline(service, i - len(values), p95)
        self._seeded = True

    async def finalize_ready(self) -> None:
        fin = self.rt.finalizer
        health_keys, edge_keys = fin.take_ready()
        if not health_keys and not edge_keys:
            return
        store = self.rt.store
        if not self._seeded:
            await self._seed_baselines()
        health_rows: list[dict] = []
        edge_rows: list[dict] = []
        if health_keys:
            partials = await self.rt.io_call(store.read_health_partials, health_keys)
            health_rows = fin.final_health(partials)
        if edge_keys:
            partials = await self.rt.io_call(store.read_edge_partials, edge_keys)
            edge_rows = fin.final_edges(partials)
        if health_rows:
            await self.rt.io_call(store.insert_health_final, health_rows)
            self.rt.telemetry.inc("otel_insights_windows_finalized_total", len(health_rows),
                                  table="service_health")
        if edge_rows:
            await self.rt.io_call(store.insert_edges_final, edge_rows)
            self.rt.telemetry.inc("otel_insights_windows_finalized_total", len(edge_rows),
                                  table="service_edges")
        if self.on_final is not None:
            self.on_final(health_rows, edge_rows)
        newest_end = max([k[1] for k in health_keys] + [k[3] for k in edge_keys]) + fin.size_ms
        self.rt.telemetry.set("otel_insights_window_close_lag_seconds", time.time() - newest_end / 1000)
        fin.done(health_keys, edge_keys)
        pending_h, pending_e = fin.pending_health, fin.pending_edges
        keep = []
        for ev, keys in self.held:
            if any((k in pending_h) if kind == "h" else (k in pending_e) for kind, k in keys):
                keep.append((ev, keys))
            else:
                ev.ack()
        self.held = keep
