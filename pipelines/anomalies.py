"""Detection wiring for stage 2: final windows -> detectors -> incidents -> table and topic.

One worker judges every entity: the one that owns partition 0 of the partials topic. Each
stage-2 worker stores, per partials partition it owns, the window end through which every
final row is written (`Stage2.finalized_through`); the judge takes a window once every
partition has passed it and reads its rows from ClickHouse, whoever wrote them (or, owning
every partials partition, keeps the rows it wrote itself). One judge sees a service and its
edges together (one incident), and no entity is judged twice. Detection costs a fraction
of what stage 2 does per window (see the README's figures), so one judge keeps up with
the stage-2 workers of a deployment of modest width.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pipelines.store_io import StoreIO
from pipelines.training import ModelTrainer
from processor.config import Config
from processor.config.components import AnomalyConfig
from processor.detect.autoencoder import Autoencoder
from processor.detect.incidents import IncidentTracker
from processor.detect.window import WindowDetector
from processor.storage.store import END_OF_TIME_MS
from processor.telemetry import Metrics
from processor.windows.arith import window_start

log = logging.getLogger("otel_insights.anomaly")
SCHEMA_VERSION = 1
PROGRESS_PARTITION = 0  # progress is kept in pipeline_watermarks under (group, anomaly topic, 0)
SAVE_PROGRESS_EVERY_S = 5.0  # a crash re-judges at most this much (one window at 60 s windows)
DISCOVER_EVERY_S = 2.0  # how often to look for the first stored window, before any
# Windows judged per tick: catching up after downtime comes in slices, so progress is
# saved as it goes and the event loop serves the stages in between.
JUDGE_PER_TICK = 20


class AnomalyStage:
    def __init__(self, config: Config, io: StoreIO, metrics: Metrics, topic: Any, partials_partitions: int) -> None:
        """``partials_partitions``: how many stage-2 partitions must vouch for a window."""
        assert config.kafka is not None and config.anomaly is not None
        self.cfg: AnomalyConfig = config.anomaly
        self.io = io
        self.store = io.store
        self.metrics = metrics
        self.topic = topic
        self.group_id = config.kafka.group_id
        self.idle_timeout_ms = config.windows.idle_timeout.ms
        self.window_ms = config.windows.size.ms
        self.partials_topic = config.kafka.partials_topic
        self.partials_partitions = partials_partitions
        self.trainer = (ModelTrainer(io, metrics, self.cfg.autoencoder, self.cfg.min_requests, self.window_ms)
                        if "autoencoder" in self.cfg.detectors else None)
        self.owner = False
        self._compute_s = 0.0  # judging time within the current tick
        self._io_s = 0.0  # and time of its store calls on the ClickHouse thread
        self._reset()

    def _reset(self) -> None:
        self.detector = WindowDetector(self.cfg, self.window_ms)
        self.tracker = IncidentTracker(self.window_ms, self.cfg.incident_gap_windows)
        self.last_window_ms = -1  # newest window judged (or replayed as judged)
        self.pending: set[int] = set()  # starts of complete windows not judged yet
        self._warm = False
        self._first_query_at = 0.0
        self._saved_ms, self._saved_at = -1, 0.0  # progress mark last stored, and when
        self.all_local = False
        # Rows stage 2 wrote here, by window; trusted only for windows after local_after (the
        # newest window that had rows before this worker started judging with every partition).
        self.local: dict[int, tuple[dict[str, dict], dict[tuple[str, str, str], dict]]] = {}
        self.local_after = -1

    async def warm_up(self) -> None:
        """Rebuild detector state from stored final windows, and open incidents.

        Windows up to the stored progress mark were judged before: they are replayed
        silently. Later stored windows (finalised, but not judged when the last owner
        stopped) are left to be found and judged like new ones.
        """
        now_ms = int(time.time() * 1000)
        if self.trainer is not None:
            self.detector.load_models(await self.trainer.load_stored())
        marks = await self._io(self.store.load_watermarks, self.group_id, self.cfg.topic)
        judged = marks.get(PROGRESS_PARTITION)
        since = now_ms - self.cfg.history.ms
        until = judged + 1 if judged is not None else now_ms + self.window_ms
        windows = 0
        async for ws, h, e in self.io.final_windows(since, until):
            t0 = time.perf_counter()
            self.detector.observe_window(ws, h, e)
            self._compute_s += time.perf_counter() - t0
            self.last_window_ms = ws
            windows += 1
        if judged is not None:  # windows older than `history` are not judged late
            self.last_window_ms = max(self.last_window_ms, judged, since - self.window_ms)
        # Windows with rows stored before this start are read back when judged, never taken
        # from the rows this process writes (it may not write all of theirs).
        unjudged = await self._io(self.store.final_window_starts, self.last_window_ms, END_OF_TIME_MS)
        self.local_after = max(self.local_after, self.last_window_ms, *unjudged)
        horizon = now_ms - (self.cfg.incident_gap_windows + 2) * self.window_ms
        recent = await self._io(self.store.named_query, "anomalies", horizon)
        self.tracker.seed({**r, "window_start": _ms(r["window_start"])} for r in recent)
        self._warm = True
        resume = ""
        if judged is not None:
            resume = "; judging from " + time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime((self.last_window_ms + self.window_ms) / 1000)) + " on"
        log.info("anomaly detection warmed up on %d stored window(s)%s", windows, resume)

    async def tick(self, owner: bool, all_local: bool = False) -> None:
        """:meth:`_tick`, its time counted in two steps: "detection" for judging (the detectors,
        incidents, attribution: CPU in this process) and "detection_io" for the time the
        ClickHouse thread spends on detection's reads and writes (rows, history, anomalies,
        progress). Not the wall time of the awaits: the ClickHouse thread is shared, and
        waiting behind stage 2's inserts is not a cost of detection."""
        self._compute_s = self._io_s = 0.0
        try:
            await self._tick(owner, all_local)
        finally:
            metrics = self.metrics
            metrics.inc("otel_insights_stage_busy_seconds_total", self._compute_s, step="detection")
            metrics.inc("otel_insights_stage_busy_seconds_total", self._io_s, step="detection_io")

    async def _io(self, fn: Any, *args: Any) -> Any:
        """``StoreIO.call``, timing the call itself on the ClickHouse thread."""
        def timed(*a: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a)
            finally:
                self._io_s += time.perf_counter() - t0

        return await self.io.call(timed, *args)

    async def _tick(self, owner: bool, all_local: bool) -> None:
        """Judge settled final windows, oldest first, from their complete final rows.

        ``owner``: this worker owns partials partition 0 (it judges). ``all_local``: it owns
        every partials partition, so it finalises every row itself and can judge from the
        rows it wrote instead of reading them back.

        A window's rows can be written by several workers, a little apart, so detection
        takes a window only once every partials partition has reported it written (see
        `_discover`). Judging a subset would make the late entities look absent: a false
        traffic drop. At most JUDGE_PER_TICK windows are judged per call.
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
        if all_local and not self.all_local:
            # Rows finalised before now may have been written elsewhere: read those back.
            self.local_after = max(self.local_after, self.last_window_ms, max(self.local, default=-1),
                                   max(self.pending, default=-1))
        self.all_local = all_local
        if self.trainer is not None and self.trainer.due():
            self.trainer.start(self._use_models)
        await self._discover()
        now = time.monotonic()
        judged = False
        for ws in sorted(self.pending)[:JUDGE_PER_TICK]:
            self.pending.discard(ws)
            if ws <= self.last_window_ms:
                continue  # judged already (re-finalised); learning twice would skew
            await self._judge(ws)
            judged = True
        if judged:
            self.metrics.set("otel_insights_anomaly_judged_window_seconds", self.last_window_ms / 1000)
        if self.last_window_ms > self._saved_ms and now - self._saved_at >= SAVE_PROGRESS_EVERY_S:
            # After the outputs: a crash before this re-judges those windows (at least once).
            await self._io(self.store.save_watermarks, self.group_id, self.cfg.topic,
                                  {PROGRESS_PARTITION: self.last_window_ms})
            self._saved_ms, self._saved_at = self.last_window_ms, now

    def remember(self, health_rows: list[dict], edge_rows: list[dict]) -> None:
        """Final rows stage 2 just wrote: the judge's own copy, so it need not read them back."""
        if not self.owner:
            return
        corrected = sorted({int(r["window_start"]) for r in (*health_rows, *edge_rows)
                            if int(r["window_start"]) <= self.last_window_ms})
        if corrected:
            # Late spans re-finalised windows already judged. The detectors have learnt past
            # them, so their verdicts stand; the final rows (what users query) are corrected.
            self.metrics.inc("otel_insights_anomaly_corrected_windows_total", len(corrected))
            log.info("%d judged window(s) corrected by late spans, from %s; verdicts not re-run",
                     len(corrected), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(corrected[0] / 1000)))
        # A re-finalised row replaces the earlier one.
        for r in health_rows:
            if int(r["window_start"]) > self.last_window_ms:
                self.local.setdefault(int(r["window_start"]), ({}, {}))[0][r["service"]] = r
        for r in edge_rows:
            if int(r["window_start"]) > self.last_window_ms:
                key = (r["client"], r["server"], r["connection_type"])
                self.local.setdefault(int(r["window_start"]), ({}, {}))[1][key] = r

    async def complete_before(self) -> int | None:
        """Windows ending at or before this have every final row written, by the reports of
        every partials partition's stage-2 owner; None while a partition has not reported."""
        marks = await self._io(self.store.load_watermarks, self.group_id, self.partials_topic)
        reports = [marks.get(q) for q in range(self.partials_partitions)]
        if any(m is None for m in reports):
            return None
        return min(m for m in reports if m is not None)

    async def _discover(self) -> None:
        """Queue every window that is complete and can no longer fill.

        Complete: every partials partition reported its final rows written (`complete_before`;
        with every input idle that bound is open). Can no longer fill: it also ends an idle
        timeout before the wall clock, after which an input that sent nothing has nothing to
        send. Whether the window has rows is found when it is judged.
        """
        final_before = await self.complete_before()
        if final_before is None:
            return
        now_ms = int(time.time() * 1000)
        bound = min(final_before, now_ms - self.idle_timeout_ms)
        start = max(self.last_window_ms, max(self.pending, default=-1))
        if start < 0:  # nothing judged yet: start at the first window with data
            first = min(self.local, default=None)
            if first is None and time.monotonic() - self._first_query_at >= DISCOVER_EVERY_S:
                self._first_query_at = time.monotonic()
                first = await self._io(self.store.first_final_window, now_ms - self.cfg.history.ms)
            if first is None:
                return
            start = first - self.window_ms
        oldest = now_ms - self.cfg.history.ms
        start = max(start, window_start(oldest, self.window_ms) - self.window_ms)
        self.pending.update(range(start + self.window_ms, bound - self.window_ms + 1, self.window_ms))

    async def _judge(self, ws: int) -> None:
        held = self.local.pop(ws, None)
        for old in [w for w in self.local if w < ws]:
            del self.local[old]
        if self.all_local and ws > self.local_after:
            h_rows, e_rows = (list(held[0].values()), list(held[1].values())) if held else ([], [])
        else:
            h_rows, e_rows = await self._io(self.store.window_final_rows, ws)
        self.last_window_ms = ws
        if not h_rows and not e_rows and not self.cfg.judge_empty_windows:
            return  # no data: a gap for the detectors, not zero traffic
        t0 = time.perf_counter()
        verdicts = self.detector.observe_window(ws, h_rows, e_rows)
        rows = [self._row(v, a.incident_id, a.new, e_rows)
                for v, a in zip(verdicts, self.tracker.assign(verdicts), strict=True)]
        self._compute_s += time.perf_counter() - t0
        if rows:
            await self._publish(rows)

    def _use_models(self, models: dict[tuple[str, str], Autoencoder]) -> None:
        self.detector.load_models(models)
        self.metrics.set("otel_insights_anomaly_models", len(self.detector.models()))

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
        await self._io(self.store.insert_anomalies, table_rows)
        futs = []
        for r in rows:
            body = json.dumps({"schema_version": SCHEMA_VERSION, **r}, default=float).encode()
            futs.append(await self.topic.send(key=r["entity"].encode(), value=body))
            self.metrics.inc("otel_insights_anomalies_total", severity=r["severity"],
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
