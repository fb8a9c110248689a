"""Detection wiring for stage 2: final windows -> detectors -> incidents -> table and topic.

One worker judges every entity: the one that owns partition 0 of the partials topic. Every
stage-2 worker hears every input watermark, so the owner knows which windows are final
everywhere and reads their rows from ClickHouse, whoever wrote them. One judge sees a
service and its edges together (one incident), and no entity is judged twice. Detection
is a few percent of stage 2, so it does not need to be spread.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pipelines.runtime import Runtime
from pipelines.training import ModelTrainer
from processor.config.components import AnomalyConfig
from processor.detect.autoencoder import Autoencoder
from processor.detect.entity_vector import group_by_window
from processor.detect.incidents import IncidentTracker
from processor.detect.window import AnomalySettings, WindowDetector

log = logging.getLogger("otel_insights.anomaly")
SCHEMA_VERSION = 1
PROGRESS_PARTITION = 0  # progress is kept in pipeline_watermarks under (group, anomaly topic, 0)
REPLAY_CHUNK_WINDOWS = 60  # stored windows per ClickHouse read during warm-up
DISCOVER_EVERY_S = 2.0  # look for newly final windows at least this often


class AnomalyStage:
    def __init__(self, rt: Runtime, cfg: AnomalyConfig, topic: Any) -> None:
        self.rt = rt
        self.cfg = cfg
        self.topic = topic
        self.window_ms = rt.config.windows.size.ms
        self.settings = AnomalySettings(
            detectors=tuple(cfg.detectors), window_size_ms=self.window_ms,
            min_requests=cfg.min_requests, threshold=cfg.threshold, warning=cfg.severity_warning,
            critical=cfg.severity_critical, info=min(0.3, cfg.threshold),
            grace_windows=cfg.grace_windows)
        self.trainer = (ModelTrainer(rt, cfg.autoencoder, cfg.min_requests, self.window_ms)
                        if "autoencoder" in cfg.detectors else None)
        self.settle_s = 2.0 + 4 * rt.kafka.max_batch_wait.seconds
        self.owner = False
        self._reset()

    def _reset(self) -> None:
        self.detector = WindowDetector(self.settings)
        self.tracker = IncidentTracker(self.window_ms, self.cfg.incident_gap_windows)
        self.last_window_ms = -1  # newest window judged (or replayed as judged)
        self.pending: dict[int, float] = {}  # final window start -> when it was first seen final
        self._warm = False
        self._discovered: tuple[int | None, float] = (None, 0.0)  # (final_before_ms, monotonic)

    async def warm_up(self) -> None:
        """Rebuild detector state from stored final windows, and open incidents.

        Windows up to the stored progress mark were judged before: they are replayed
        silently. Later stored windows (finalised, but not judged when the last owner
        stopped) are left to be found and judged like new ones.
        """
        now_ms = int(time.time() * 1000)
        if self.trainer is not None:
            self.detector.load_models(await self.trainer.load_stored())
        marks = await self.rt.io_call(self.rt.store.load_watermarks, self.rt.kafka.group_id, self.cfg.topic)
        judged = marks.get(PROGRESS_PARTITION)
        since = now_ms - self.cfg.history.ms
        until = judged + 1 if judged is not None else now_ms + self.window_ms
        chunk = REPLAY_CHUNK_WINDOWS * self.window_ms
        windows = 0
        # Read and replayed a chunk at a time: a day of windows never sits in memory at once.
        first = await self.rt.io_call(self.rt.store.first_final_window, since)
        for lo in range(until if first is None else first, until, chunk):
            health, edges = await self.rt.io_call(self.rt.store.final_rows_between, lo, min(lo + chunk, until))
            for ws, h, e in group_by_window(health, edges):
                self.detector.observe_window(ws, h, e)
                self.last_window_ms = max(self.last_window_ms, ws)
                windows += 1
        if judged is not None:  # windows older than `history` are not judged late
            self.last_window_ms = max(self.last_window_ms, judged, since - self.window_ms)
        horizon = now_ms - (self.cfg.incident_gap_windows + 2) * self.window_ms
        recent = await self.rt.io_call(self.rt.store.named_query, "anomalies", horizon)
        self.tracker.seed({**r, "window_start": _ms(r["window_start"])} for r in recent)
        self._warm = True
        log.info("anomaly detection warmed up on %d stored window(s)%s", windows,
                 f"; judging from {judged + self.window_ms} on" if judged is not None else "")

    async def tick(self, owner: bool) -> None:
        """Judge settled final windows, oldest first, from their complete final rows.

        A window's rows can be written by several workers, a little apart, so detection
        waits `settle_s` after a window was first seen final, then reads every final row of
        it. Judging a subset would make the late entities look absent: a false traffic drop.
        """
        if not owner:
            if self.owner:
                log.info("anomaly detection moved to the worker that now owns partials partition 0")
                self._reset()
            self.owner = False
            return
        self.owner = True
        if not self._warm:
            await self.warm_up()
        if self.trainer is not None and self.trainer.due():
            self.trainer.start(self._use_models)
        await self._discover()
        now = time.monotonic()
        for ws in sorted(self.pending):
            if now - self.pending[ws] < self.settle_s:
                break  # keep windows in order
            del self.pending[ws]
            if ws <= self.last_window_ms:
                continue  # judged already (re-finalised); learning twice would skew
            await self._judge(ws)

    async def _discover(self) -> None:
        """Queue the windows that are final on every input partition and have stored rows."""
        final_before = self.rt.finalizer.final_before_ms()
        if final_before is None:
            return
        last, at = self._discovered
        now = time.monotonic()
        if final_before == last and now - at < DISCOVER_EVERY_S:
            return
        self._discovered = (final_before, now)
        after = max(self.last_window_ms, max(self.pending, default=-1))
        # A window is final once its end is at or before the watermark: start < final_before - size + 1.
        before = min(final_before - self.window_ms + 1, int(time.time() * 1000) + self.window_ms)
        if before <= after + 1:
            return
        starts = await self.rt.io_call(self.rt.store.final_window_starts, after, before)
        for ws in starts:
            self.pending.setdefault(ws, now)
        if self.cfg.judge_empty_windows and self.last_window_ms >= 0:
            self._queue_silence(final_before, now)

    def _queue_silence(self, final_before: int, now: float) -> None:
        """Queue windows with no rows at all that no input can still fill.

        Such a window must be final (its end at or before the watermark; with every input
        idle that bound is open) and end an idle timeout before the wall clock, after which
        an input that has sent nothing is taken to have nothing to send. Only windows after
        one already judged: silence before the first data is not an outage.
        """
        now_ms = int(time.time() * 1000)
        bound = min(final_before, now_ms - self.rt.config.windows.idle_timeout.ms)
        first = max(self.last_window_ms, max(self.pending, default=-1)) + self.window_ms
        first = max(first, now_ms - self.cfg.history.ms - (now_ms - self.cfg.history.ms) % self.window_ms)
        for ws in range(first, bound - self.window_ms + 1, self.window_ms):
            self.pending.setdefault(ws, now)

    async def _judge(self, ws: int) -> None:
        h_rows, e_rows = await self.rt.io_call(self.rt.store.window_final_rows, ws)
        verdicts = self.detector.observe_window(ws, h_rows, e_rows)
        rows = [self._row(v, a.incident_id, a.new, e_rows)
                for v, a in zip(verdicts, self.tracker.assign(verdicts), strict=True)]
        if rows:
            await self._publish(rows)
        self.last_window_ms = ws
        # After the outputs: a crash before this line re-judges the window (at least once).
        await self.rt.io_call(self.rt.store.save_watermarks, self.rt.kafka.group_id, self.cfg.topic,
                              {PROGRESS_PARTITION: ws})
        self.rt.telemetry.set("otel_insights_anomaly_judged_window_seconds", ws / 1000)

    def _use_models(self, models: dict[tuple[str, str], Autoencoder]) -> None:
        self.detector.load_models(models)
        self.rt.telemetry.set("otel_insights_anomaly_models", len(self.detector.models()))

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.close()

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
