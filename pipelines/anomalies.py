"""Detection wiring for stage 2: final windows -> detectors -> incidents -> table and topic."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pipelines.runtime import Runtime
from processor.config.components import AnomalyConfig
from processor.detect.incidents import IncidentTracker
from processor.detect.window import AnomalySettings, WindowDetector

log = logging.getLogger("otel_insights.anomaly")
SCHEMA_VERSION = 1


class AnomalyStage:
    def __init__(self, rt: Runtime, cfg: AnomalyConfig, topic: Any) -> None:
        self.rt = rt
        self.cfg = cfg
        self.topic = topic
        self.window_ms = rt.config.windows.size.ms
        self.detector = WindowDetector(AnomalySettings(
            detectors=tuple(cfg.detectors), window_size_ms=self.window_ms,
            min_requests=cfg.min_requests, threshold=cfg.threshold, warning=cfg.severity_warning,
            critical=cfg.severity_critical, info=min(0.3, cfg.threshold),
            grace_windows=cfg.grace_windows))
        self.tracker = IncidentTracker(self.window_ms, cfg.incident_gap_windows)
        self.last_window_ms = -1
        self.pending: dict[int, float] = {}  # window start -> when it first became final
        self.settle_s = 2.0 + 4 * rt.kafka.max_batch_wait.seconds
        self._warm = False

    async def warm_up(self) -> None:
        """Rebuild detector state from stored final windows, and open incidents."""
        since = int(time.time() * 1000) - self.cfg.history.ms
        health, edges = await self.rt.io_call(self.rt.store.recent_final_rows, since)
        # Replayed window by window, exactly as live: absences count the same way.
        windows = self.detector.replay(health, edges)
        starts = [int(r["window_start"]) for r in (*health, *edges)]
        if starts:
            self.last_window_ms = max(starts)
        horizon = int(time.time() * 1000) - (self.cfg.incident_gap_windows + 2) * self.window_ms
        recent = await self.rt.io_call(self.rt.store.named_query, "anomalies", horizon)
        self.tracker.seed({**r, "window_start": _ms(r["window_start"])} for r in recent)
        self._warm = True
        if windows:
            log.info("anomaly detection warmed up on %d stored windows", windows)

    def on_final(self, window_starts: set[int]) -> None:
        """Windows just made final; judged once they have settled (see `tick`)."""
        now = time.monotonic()
        for ws in window_starts:
            if ws > self.last_window_ms:
                self.pending.setdefault(ws, now)

    async def tick(self) -> None:
        """Judge settled windows, oldest first, from their complete final rows.

        A window's keys can reach stage 2 in pieces (their notifications travel on other
        partitions than the watermark that made the window final), so detection waits
        `settle_s` after a window first became final and then reads every final row of it.
        Judging a subset would make the late entities look absent: a false traffic drop.
        """
        if not self._warm:
            await self.warm_up()
        now = time.monotonic()
        for ws in sorted(self.pending):
            if now - self.pending[ws] < self.settle_s:
                break  # keep windows in order
            del self.pending[ws]
            if ws <= self.last_window_ms:
                continue  # judged already (re-finalised); learning twice would skew
            self.last_window_ms = ws
            h_rows, e_rows = await self.rt.io_call(self.rt.store.window_final_rows, ws)
            verdicts = self.detector.observe_window(ws, h_rows, e_rows)
            rows = [self._row(v, a.incident_id, a.new, e_rows)
                    for v, a in zip(verdicts, self.tracker.assign(verdicts), strict=True)]
            if rows:
                await self._publish(rows)
            self.rt.telemetry.set("otel_insights_anomaly_judged_window_seconds", ws / 1000)

    def _row(self, v: Any, incident_id: str, new: bool, edge_rows: list[dict]) -> dict:
        attribution = (self.detector.attribution(v, edge_rows) if v.entity_type == "service" else [])
        return {
            "detected_at": int(time.time() * 1000), "window_start": v.window_start_ms,
            "window_end": v.window_start_ms + self.window_ms, "entity_type": v.entity_type,
            "entity": v.entity, "incident_id": incident_id, "new_incident": new,
            "metric": v.metric, "observed": float(v.observed), "expected": float(v.expected),
            "score": float(v.score), "severity": v.severity, "detectors": list(v.detectors),
            "factors": list(v.factors), "attribution": attribution,
        }

    async def _publish(self, rows: list[dict]) -> None:
        table_rows = [{**r, "factors": json.dumps({"factors": r["factors"], "attribution": r["attribution"]},
                                                  default=float)} for r in rows]
        await self.rt.io_call(self.rt.store.insert_anomalies, table_rows)
        futs = []
        for r in rows:
            body = json.dumps({"schema_version": SCHEMA_VERSION, **r}, default=float).encode()
            futs.append(await self.topic.send(key=r["entity"].encode(), value=body))
            self.rt.telemetry.inc("otel_insights_anomalies_total", severity=r["severity"],
                                  entity_type=r["entity_type"])
        for f in futs:
            await f
        log.warning("%d anomalous window(s): %s", len(rows),
                    ", ".join(f"{r['entity']} {r['metric']} ({r['severity']})" for r in rows[:5]))


def _ms(value: Any) -> int:
    """Window start from a named-query row (datetime) as epoch ms."""
    if isinstance(value, (int, float)):
        return int(value)
    return int(value.timestamp() * 1000)
