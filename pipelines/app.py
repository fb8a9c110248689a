"""The faust app: topics, stage 1's consumer task, the stage-2 agent, timers (pages: api.py).

Stream topology (read this file to see all of it):

  <traces.topics> ──stage1──▶ partials (ClickHouse *_partial) ──▶ <partials_topic> keyed by entity
        │  └─ not keyed by trace id ─▶ <rekey_topic> ─▶ stage1
        └─ undecodable ─▶ <dlq topic>
  <partials_topic> ──stage2──▶ final rows (ClickHouse service_health / service_edges)
                        └─ processors.anomaly (on the owner of partials partition 0)
                               ─▶ anomalies table + <anomaly topic> (incidents)
  <anomaly topic> ──stage3 (processors.narrator, same worker as the judge)──▶
        insights table + <narrator topic> (enriched-insights: one insight per incident)

What each stage does is in processor/aggregate/stage1.py and stage2.py. Stage 1 reads its
partitions in batches on its own consumer (pipelines/intake.py); stage 2 gets faust events
here, and each is acknowledged once its results are durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping
from typing import Any

import faust

from pipelines.acks import KeyHolds
from pipelines.api import install_pages
from pipelines.intake import Intake
from pipelines.outbox import DeadLetterProducer, KafkaOutbox
from pipelines.ready import WorkerReadiness
from pipelines.store_io import StoreIO
from pipelines.topics import separate_dlq
from processor.aggregate.messages import Watermark, source_name
from processor.aggregate.stage1 import Stage1, input_partitions
from processor.aggregate.stage2 import Stage2
from processor.auth import BearerAuth
from processor.config import Config
from processor.config.components import KafkaReceiver, PrometheusExporter
from processor.errors import OtelInsightsError
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.app")


class AgentState:
    """What the agents of one worker share; `failed` stops every agent after an internal error."""

    def __init__(self) -> None:
        self.failed = False
        # Timers and agents interleave at awaits: each stage's state has its own lock.
        self.stage2_lock = asyncio.Lock()
        self.held2 = KeyHolds()


def faust_credentials(kafka: KafkaReceiver) -> faust.types.auth.CredentialsT | None:
    """receivers.kafka's tls and auth.sasl for faust's own clients (partials, DLQ, re-key)."""
    opts = kafka.client_options()
    if opts["security_protocol"].startswith("SASL"):
        return faust.SASLCredentials(username=opts["sasl_plain_username"],
                                     password=opts["sasl_plain_password"],
                                     ssl_context=opts["ssl_context"],
                                     mechanism=opts["sasl_mechanism"])
    if opts["ssl_context"] is not None:
        return faust.SSLCredentials(opts["ssl_context"])
    return None


def create_app(cfg: Config, io: StoreIO, metrics: Metrics, partitions: Mapping[str, int],
               auth: BearerAuth | None = None) -> faust.App:
    """``partitions``: each topic's partition count (see pipelines.topics.ensure_topics);
    ``auth``: the query API's token check (pipelines.api.api_auth)."""
    kafka = cfg.kafka
    assert kafka is not None
    partials_partitions = partitions[kafka.partials_topic]
    expected_sources = [source_name(t, p) for t, p in input_partitions(kafka, partitions)]
    prom_host, prom_port = (cfg.prometheus or PrometheusExporter()).host_port
    app = faust.App(
        # Stage 1 reads the input in the group receivers.kafka.group_id (pipelines.intake);
        # faust's own consumer reads only the partials topic, in a group of its own.
        f"{kafka.group_id}.partials",
        broker=[f"kafka://{b}" for b in kafka.brokers],
        broker_client_id=kafka.client_id,
        store="memory://",
        datadir=_faust_dir(kafka.group_id),
        autodiscover=False,
        topic_allow_declare=False,  # topics are created up front (see pipelines.topics)
        topic_disable_leader=True,
        # An internal topic: a new group reads it from its start (initial_offset is for the
        # input topics), or keys stage 1 sent before the group first joined would be lost.
        consumer_auto_offset_reset="earliest",
        broker_credentials=faust_credentials(kafka),
        # held messages are acked when their results are durable, not when the batch ends
        stream_wait_empty=False,
        broker_rebalance_timeout=10.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        web_enabled=True,
        # Only our pages (pipelines/api.py): faust's /router, /table, /graph and stats
        # pages would show internals to anyone who can reach the metrics port.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        web_bind=prom_host,
        web_port=prom_port,
        web_host=prom_host,
        web_in_thread=False,
        producer_acks=-1,
        # Records are small (one trace each): fetch and buffer many per round trip.
        consumer_max_fetch_size=8 * 1024 * 1024,
        broker_max_poll_records=max(kafka.max_batch_records * 4, 2000),
        stream_buffer_maxsize=max(kafka.max_batch_records * 8, 8192),
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    partials = app.topic(kafka.partials_topic, **raw)
    dlq: Any = app.topic(cfg.dlq.topic, **raw)
    if separate_dlq(cfg):
        dlq = DeadLetterProducer(cfg.dlq.brokers, cfg.dlq.topic, kafka.client_id)
        app.on_before_shutdown.connect(lambda sender, **kw: dlq.stop())  # type: ignore[arg-type]
    outbox = KafkaOutbox(partials, partials_partitions, rekey=app.topic(kafka.rekey_topic, **raw),
                         dlq=dlq)
    w = AgentState()
    io.on_fatal = lambda exc: _fail(w, exc)  # a store call failed for good: stop
    stage1 = Stage1(cfg, io.store, io.call, outbox, metrics, partitions)
    stage2 = Stage2(cfg.windows, expected_sources, io.store, io.call, metrics)
    anomaly = None
    if cfg.anomaly is not None:
        from pipelines.anomalies import AnomalyStage

        anomaly = AnomalyStage(cfg, io, metrics, app.topic(cfg.anomaly.topic, **raw), partials_partitions)
        stage2.on_final = anomaly.remember
    wait_s = kafka.max_batch_wait.seconds

    async def process2(events: list[Any]) -> None:
        for ev in events:
            msg = stage2.receive(ev.message.offset, ev.value, ev.message.partition)
            # Keys are released once their final row is written; watermarks (and malformed
            # records) once every key before them is.
            w.held2.hold(ev, msg if msg is not None and not isinstance(msg, Watermark) else None)
        await stage2.finalize_ready()
        w.held2.release(stage2.is_pending)

    @app.agent(partials, name="stage2")
    async def stage2_agent(stream: Any) -> None:
        async for events in stream.take_events(2000, within=wait_s):
            async with w.stage2_lock:
                with _busy(metrics, "stage2"):
                    await _guarded(w, process2, list(events))

    intake = Intake(kafka, stage1, metrics, lambda step: _busy(metrics, step),
                    lambda exc: _fail(w, exc), io.background)

    @app.task
    async def stage1_intake() -> None:
        await intake.run()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def stop_intake(sender: object, **kw: object) -> None:
        await intake.stop()

    def partials_owned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic == kafka.partials_topic}

    reported: dict[int, int] = {}

    async def finalize_and_report(_: list[Any]) -> None:
        async with w.stage2_lock:
            mine = partials_owned()
            with _busy(metrics, "stage2"):
                await stage2.finalize_ready()
                stage2.keep_partitions(mine)
                w.held2.keep_only({(kafka.partials_topic, p) for p in mine})
                w.held2.release(stage2.is_pending)
                # After the rows: the anomaly judge reads these to know a window is complete.
                marks = stage2.finalized_through(mine)
                changed = {q: m for q, m in marks.items() if reported.get(q) != m}
                if changed:
                    await io.call(io.store.save_watermarks, kafka.group_id, kafka.partials_topic, changed)
                    reported.update(changed)

    @app.timer(0.5)
    async def stage2_timer() -> None:
        await _guarded(w, finalize_and_report, [])

    if anomaly is not None:
        async def judge(_: list[Any]) -> None:
            mine = partials_owned()
            await anomaly.tick(0 in mine, all_local=len(mine) == partials_partitions)  # counts its own time

        @app.timer(0.5)
        async def anomaly_timer() -> None:
            # Beside stage 2, not under its lock: catching up on many windows after downtime
            # must not stall finalisation (each tick judges a bounded number of windows).
            await _guarded(w, judge, [])

    from pipelines.rollup_task import TICK_S, RollupTask

    rollup = RollupTask(cfg, io, metrics)

    async def roll_up(_: list[Any]) -> None:
        await rollup.tick(0 in partials_owned())

    @app.timer(TICK_S)
    async def rollup_timer() -> None:
        # Beside the stages, on the owner of partials partition 0 (one builder at a time).
        await _guarded(w, roll_up, [])

    models = None
    if cfg.narrator is not None:
        from processor.insights.models import ModelRouter

        models = ModelRouter(cfg.narrator, metrics)  # one budget for every task

    publisher = None
    if cfg.dashboards is not None:
        from pipelines.dashboard_api import add_routes
        from pipelines.dashboards import DashboardPublisher, FaustSink

        publisher = DashboardPublisher(cfg, io, metrics, FaustSink(app.topic(cfg.dashboards.topic, **raw)), models)
        if (cfg.prometheus or PrometheusExporter()).api.enabled:  # the query API's switch and token
            add_routes(app, io, publisher, auth or BearerAuth())
        log.info("dashboards are laid out by %s", publisher.describe())

    if cfg.narrator is not None:
        from pipelines.insights import InsightStage
        from processor.insights.llm import LLMNarrator

        assert models is not None
        narrator = LLMNarrator(models)
        log.info("insights are narrated by %s", narrator.describe())
        insights = InsightStage(cfg, io, metrics, app.topic(cfg.narrator.topic, **raw), narrator, publisher)

        @app.timer(1.0)
        async def insights_timer() -> None:
            # Its own consumer and no stage lock: a slow model call delays only stage 3.
            if w.failed:
                return
            try:
                with _busy(metrics, "insights"):  # wall time, its awaits included
                    await insights.tick(0 in partials_owned())
            except Exception as exc:
                _fail(w, exc)

        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def stop_insights(sender: object, **kw: object) -> None:
            await insights.close()

        app.insights = insights  # type: ignore[attr-defined]

    readiness = WorkerReadiness(io, intake, lambda: w.failed, lambda: getattr(app, "gateway", None))
    install_pages(app, cfg.prometheus or PrometheusExporter(), auth or BearerAuth(), io, metrics,
                  lambda: {"partitions": len(stage1.aggregators)}, readiness.problems)

    if anomaly is not None:
        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def stop_training(sender: object, **kw: object) -> None:
            anomaly.close()

    app.stage1 = stage1  # type: ignore[attr-defined]
    app.stage2 = stage2  # type: ignore[attr-defined]
    app.agent_state = w  # type: ignore[attr-defined]
    app.intake = intake  # type: ignore[attr-defined]
    return app


def _faust_dir(group_id: str) -> str:
    """faust's data directory: our tables live in memory, but faust still makes one; keep
    it out of the working directory."""
    path = os.path.join(tempfile.gettempdir(), "otel-insights-faust", group_id)
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def _busy(metrics: Metrics, step: str) -> Iterator[None]:
    """Count the wall time of a step: which stage saturates, and what detection costs."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        metrics.inc("otel_insights_stage_busy_seconds_total", time.perf_counter() - t0, step=step)


async def _guarded(w: AgentState, fn: Any, events: list[Any]) -> None:
    """Run a stage step; an unexpected error stops the worker instead of skipping records.

    Bad input never gets here (it goes to the DLQ). Anything else means in-memory state may
    be half-updated, so the only safe move is a clean stop: acked offsets cover only durable
    results, and the restart replays the rest.
    """
    if w.failed:
        return
    try:
        await fn(events)
    except Exception as exc:
        _fail(w, exc)


def _fail(w: AgentState, exc: BaseException) -> None:
    """Stop the worker, once. An error we know (ClickHouse failed for good) is one line; an
    unexpected one is a bug, so its traceback is logged too."""
    if w.failed:
        return
    w.failed = True
    if isinstance(exc, OtelInsightsError):
        log.critical("stopping: %s", exc)
    else:
        log.critical("internal error, stopping so a restart replays from the last safe offset: %r",
                     exc, exc_info=exc)
    os.kill(os.getpid(), signal.SIGTERM)
