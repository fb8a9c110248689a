"""Stage 3: incidents on the anomaly topic -> one grounded insight each on the insights topic.

The anomaly topic wakes this stage; the anomalies table is what it reads. An incident's
facts are rebuilt from its stored anomaly rows and final edge rows each time it is
narrated, and an incident has ended once the anomaly judge's stored progress passed it
(`processor.insights.lifecycle`), so nothing depends on which records this consumer saw.

Exactly one message per insight version: a version is stored unpublished, sent, then
stored as published. A restart resumes open incidents from the insights table and, for a
version stored but not marked, reads the tail of the insights topic to learn whether it
went out before sending it (never twice, never lost).

It runs where the anomaly judge runs (the owner of partials partition 0), with its own
consumer in the group `<group_id>.insights`, and only ever awaits: narrating (a model
call can take seconds) never holds a lock of stage 1 or 2.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import jsonschema
from aiokafka import AIOKafkaConsumer, TopicPartition

from pipelines.dashboards import DashboardPublisher
from pipelines.store_io import StoreIO
from pipelines.topic_tail import sent_versions
from processor.config import Config
from processor.insights import facts as facts_mod
from processor.insights import lifecycle, message
from processor.insights.facts import Facts
from processor.insights.lifecycle import Published
from processor.insights.message import Narration, iso_ms, template_narration
from processor.insights.notify import Notifications
from processor.insights.text import safe_name
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.insights")
PROGRESS_PARTITION = 0  # where the anomaly judge keeps its progress (pipelines.anomalies)
NARRATE_PER_TICK = 20  # incidents narrated per tick at most; the rest wait for the next
EDGE_WINDOWS = 30  # the newest windows of an incident whose edges a facts bundle sums

Narrator = Callable[[Facts], Any]  # async: facts -> Narration


class InsightStage:
    def __init__(self, config: Config, io: StoreIO, metrics: Metrics, topic: Any,
                 narrator: Narrator | None = None, dashboards: DashboardPublisher | None = None) -> None:
        assert config.kafka is not None and config.anomaly is not None and config.narrator is not None
        self.cfg = config.narrator
        self.anomaly_topic = config.anomaly.topic
        self.gap_windows = config.anomaly.incident_gap_windows
        self.window_ms = config.windows.size.ms
        self.brokers = list(config.kafka.brokers)
        self.security = config.kafka.client_options()  # tls and auth.sasl of receivers.kafka
        self.judge_group = config.kafka.group_id
        self.group_id = f"{config.kafka.group_id}.insights"
        self.io = io
        self.metrics = metrics
        self.topic = topic
        self.narrator = narrator
        self.dashboards = dashboards  # the incident's dashboard, one version with each insight version
        self.notifications = Notifications(self.cfg.notifications, metrics)
        self.consumer: AIOKafkaConsumer | None = None
        self._clear()

    def _clear(self) -> None:
        self.published: dict[str, Published] = {}
        self.last_window: dict[str, int] = {}  # incident -> newest anomalous window known
        self.first_window: dict[str, int] = {}
        self.severity: dict[str, str] = {}  # incident -> highest severity known
        self.dirty: set[str] = set()  # incidents with news since their last version

    # ------------------------------------------------------------------ ownership

    async def tick(self, owner: bool) -> None:
        """One step: follow ownership, take new anomaly records, publish what is due."""
        if not owner:
            if self.consumer is not None:
                log.info("insights moved to the worker that now owns partials partition 0")
                await self.stop()
            return
        if self.consumer is None:
            await self._start()
        assert self.consumer is not None
        batches = await self.consumer.getmany(timeout_ms=0, max_records=2000)
        for records in batches.values():
            for r in records:
                self._take(r.value)
        if batches:
            await self.consumer.commit()  # lag visibility only: the table is what is read
        judged = (await self.io.call(self.io.store.load_watermarks, self.judge_group, self.anomaly_topic)
                  ).get(PROGRESS_PARTITION)
        await self._publish_due(judged)

    async def _start(self) -> None:
        consumer = AIOKafkaConsumer(bootstrap_servers=self.brokers, group_id=self.group_id,
                                    enable_auto_commit=False, auto_offset_reset="latest",
                                    **self.security)
        await consumer.start()
        parts = consumer.partitions_for_topic(self.anomaly_topic) or set()
        tps = [TopicPartition(self.anomaly_topic, p) for p in sorted(parts)]
        consumer.assign(tps)  # every partition: one stage sees each incident whole
        for tp in tps:
            # Fix where reading starts before the tables are read: a record sent after this
            # is consumed, and one sent before has its row stored already (the judge stores,
            # then sends), so resuming from the tables misses nothing.
            await consumer.position(tp)
        self.consumer = consumer
        await self._resume()

    async def close(self, drain_s: float = 5.0) -> None:
        """At shutdown: stop consuming, give queued notifications a moment to go out."""
        await self.stop()
        await self.notifications.drain(drain_s)
        await self.notifications.stop()

    async def stop(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await consumer.stop()
        self._clear()

    async def _resume(self) -> None:
        """Open incidents and unpublished versions from the insights table; incidents from the
        anomalies table that never got an insight (stage 3 was down or crashed first)."""
        since = int(time.time() * 1000) - self.cfg.history.ms
        stored = await self.io.call(self.io.store.latest_insights, since)
        unsent = []
        for row in stored:
            body = json.loads(row["message"])
            self.published[row["insight_id"]] = _published(row, body)
            if not row["published"]:
                unsent.append((row, body))
        if unsent:
            await self._settle_unsent(unsent)
        if self.dashboards is not None:
            await self.dashboards.settle_unsent(self.cfg.history.ms)
        rows = await self.io.call(self.io.store.incident_anomalies, None, since)
        for r in rows:
            self._note(str(r["incident_id"]), int(r["window_start"]), str(r["severity"]))
        self.dirty = {i for i in self.last_window
                      if i not in self.published or self.published[i].status != "resolved"}
        open_n = sum(1 for p in self.published.values() if p.status == "open")
        self.metrics.set("otel_insights_insights_open", open_n)
        log.info("insights resumed: %d open, %d incident(s) to look at", open_n, len(self.dirty))

    async def _settle_unsent(self, unsent: list[tuple[dict, dict]]) -> None:
        """Versions stored but not marked published: mark the ones the topic already holds,
        send the others."""
        wanted = {(row["insight_id"], int(row["version"])) for row, _ in unsent}
        seen = await sent_versions(self.brokers, self.cfg.topic, wanted, "insight_id", self.security)
        for row, body in unsent:
            key = (row["insight_id"], int(row["version"]))
            if key not in seen:
                await self._send(body)
                log.info("insight %s version %d was stored but not sent before a stop: sent now", *key)
            await self.io.call(self.io.store.insert_insights, [_row(body, published=1)])

    # ------------------------------------------------------------------ intake

    def _take(self, value: bytes | None) -> None:
        try:
            body = json.loads(value or b"")
            incident, ws, severity = str(body["incident_id"]), int(body["window_start"]), str(body["severity"])
        except (ValueError, KeyError, TypeError):
            log.error("anomaly topic: skipping a record that is not an otel-insights anomaly")
            return
        self._note(incident, ws, severity)
        self.dirty.add(incident)

    def _note(self, incident: str, window_ms: int, severity: str) -> None:
        self.last_window[incident] = max(window_ms, self.last_window.get(incident, window_ms))
        self.first_window[incident] = min(window_ms, self.first_window.get(incident, window_ms))
        if facts_mod.SEVERITY_ORDER.get(severity, 0) >= facts_mod.SEVERITY_ORDER.get(
                self.severity.get(incident, "info"), 0):
            self.severity[incident] = severity

    # ------------------------------------------------------------------ publishing

    def _ended(self, incident: str, judged: int | None) -> bool:
        return lifecycle.ended(self.last_window[incident], judged, self.window_ms, self.gap_windows)

    def _maybe_due(self, incident: str, judged: int | None, now_s: float) -> bool:
        """Whether reading the incident's facts could lead to a publish (saves the reads)."""
        last = self.published.get(incident)
        if last is None or self._ended(incident, judged):
            return last is None or last.status != "resolved"
        if last.status == "resolved":
            return False
        rises = facts_mod.SEVERITY_ORDER.get(self.severity.get(incident, ""), 0) > \
            facts_mod.SEVERITY_ORDER.get(last.severity, 0)
        return incident in self.dirty and (rises or now_s - last.published_at_s >= self.cfg.cooldown.seconds)

    async def _publish_due(self, judged: int | None) -> None:
        now_s = time.time()
        ending = {i for i, p in self.published.items() if p.status == "open" and i in self.last_window
                  and self._ended(i, judged)}
        due = sorted((i for i in self.dirty | ending if self._maybe_due(i, judged, now_s)),
                     key=lambda i: self.last_window.get(i, 0))
        for incident in due[:NARRATE_PER_TICK]:
            try:
                await self._consider(incident, judged)
            except (ValueError, KeyError, TypeError, jsonschema.ValidationError) as exc:
                # A bug or an input we did not foresee in one incident's facts: one line, and
                # the other incidents go on; it is tried again when it has news.
                self.dirty.discard(incident)
                self.metrics.inc("otel_insights_insight_errors_total")
                log.error("insight of %s not published: %s: %s", incident, type(exc).__name__,
                          safe_name(str(exc), 300))
        for incident in [i for i in self.dirty if (p := self.published.get(i)) is not None and p.status == "resolved"]:
            self.dirty.discard(incident)

    async def _consider(self, incident: str, judged: int | None) -> None:
        facts = await self._facts(incident)
        if facts is None:
            self.dirty.discard(incident)
            return
        self.last_window[incident] = max(self.last_window[incident], facts.last_window_ms)
        over = self._ended(incident, judged)
        last = self.published.get(incident)
        key = facts.key()
        change = lifecycle.decide(last, key, facts.severity, over, time.time(), self.cfg.cooldown.seconds)
        if change is None:
            if last is not None and key == last.facts_key:
                self.dirty.discard(incident)  # nothing new; in cooldown it stays dirty
            return
        narration = await self._narrate(facts)
        version = 1 if last is None else last.version + 1
        body = message.build(facts, narration, insight_id=incident, version=version,
                             status="resolved" if over else "open", change=change)
        message.validate(body)
        # Stored unmarked, sent, then marked: a restart knows what may be missing on the topic.
        # The dashboard's version is stored after its insight's, so a restart never sends a
        # dashboard whose insight version does not exist.
        await self.io.call(self.io.store.insert_insights, [_row(body, published=0)])
        dashboard = await self.dashboards.for_insight(body) if self.dashboards is not None else None
        await self._send(body)
        if dashboard is not None and self.dashboards is not None:
            await self.dashboards.send(dashboard)
        await self.io.call(self.io.store.insert_insights, [_row(body, published=1)])
        if dashboard is not None and self.dashboards is not None:
            await self.dashboards.mark(dashboard)
        self.notifications.submit(body)  # queued: a slow receiver never holds the stage
        self.published[incident] = _published({"insight_id": incident, "version": version,
                                                "last_window_ms": facts.last_window_ms}, body)
        self.dirty.discard(incident)
        self.metrics.inc("otel_insights_insights_total", narrator=narration.narrator, change=change)
        self.metrics.observe("otel_insights_insight_publish_lag_seconds",
                             max(0.0, time.time() - (facts.last_window_ms + self.window_ms) / 1000))
        self.metrics.set("otel_insights_insights_open",
                         sum(1 for p in self.published.values() if p.status == "open"))
        log.warning("insight %s v%d %s (%s): %s", incident, version, change, narration.narrator,
                    body["narrative"]["summary"][:300])

    async def _facts(self, incident: str) -> Facts | None:
        first = self.first_window.get(incident, self.last_window[incident])
        rows = await self.io.call(self.io.store.incident_anomalies, [incident], first)
        if not rows:
            return None
        last = max(int(r["window_start"]) for r in rows)
        since = max(min(int(r["window_start"]) for r in rows), last - (EDGE_WINDOWS - 1) * self.window_ms)
        _, edges = await self.io.call(self.io.store.final_rows_between, since, last + self.window_ms)
        return facts_mod.build(incident, rows, edges, self.window_ms)

    async def _narrate(self, facts: Facts) -> Narration:
        if self.narrator is not None:
            try:
                return await self.narrator(facts)
            except Exception as exc:  # the model path failed unexpectedly: the template still narrates
                log.error("narrator failed (%s: %s); the template narrates", type(exc).__name__,
                          safe_name(str(exc), 200))
        return template_narration(facts)

    async def _send(self, body: dict[str, Any]) -> None:
        fut = await self.topic.send(key=str(body["incident_id"]).encode(), value=message.encode(body))
        await fut


def _row(body: dict[str, Any], published: int) -> dict[str, Any]:
    return {"insight_id": body["insight_id"], "incident_id": body["incident_id"], "version": body["version"],
            "status": body["status"], "severity": body["severity"],
            "window_start": iso_ms(body["first_window"]), "last_window": iso_ms(body["last_window"]),
            "updated_at": iso_ms(body["updated_at"]), "narrator": body["narrator"], "grounded": body["grounded"],
            "published": published, "facts_key": body["facts_key"], "message": message.encode(body).decode()}


def _published(row: dict[str, Any], body: dict[str, Any]) -> Published:
    return Published(str(row["insight_id"]), int(row["version"]), str(body["status"]), str(body["severity"]),
                     str(body["facts_key"]), int(row["last_window_ms"]), iso_ms(body["updated_at"]) / 1000)
