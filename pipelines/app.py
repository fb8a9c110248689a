"""The faust app: topics, the two stage agents, timers and the HTTP endpoints.

Stream topology (read this file to see all of it):

  <traces.topic> ──stage1──▶ partials (ClickHouse *_partial) ──▶ <partials_topic> keyed by entity
        │  └─ not keyed by trace id ─▶ <rekey_topic> ─▶ stage1
        └─ undecodable ─▶ <dlq topic>
  <partials_topic> ──stage2──▶ final rows (ClickHouse service_health / service_edges)
                        └─ processors.anomaly (on the owner of partials partition 0)
                               ─▶ anomalies table + <anomaly topic> (incidents)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pipelines.runtime import Runtime
from pipelines.stage1 import Stage1
from pipelines.stage2 import Stage2
from processor.since import parse_since
from processor.storage.queries import rows_to_jsonable

log = logging.getLogger("otel_insights.app")

QUERY_NAMES = ("health", "edges", "topology", "anomalies")
_EXPOSITION_TYPE = ";".join(p for p in CONTENT_TYPE_LATEST.split(";") if "charset" not in p)


def create_app(rt: Runtime, partials_partitions: int) -> faust.App:
    cfg = rt.config
    kafka = rt.kafka
    prom_host, prom_port = cfg.prometheus.host_port if cfg.prometheus else ("127.0.0.1", 9464)
    app = faust.App(
        kafka.group_id,
        broker=[f"kafka://{b}" for b in kafka.brokers],
        store="memory://",
        datadir=_faust_dir(kafka.group_id),
        autodiscover=False,
        topic_allow_declare=False,  # topics are created up front (see pipelines.topics)
        topic_disable_leader=True,
        consumer_auto_offset_reset=kafka.initial_offset,
        # held messages are acked when their results are durable, not when the batch ends
        stream_wait_empty=False,
        broker_rebalance_timeout=10.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        web_enabled=True,
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
    inputs = app.topic(kafka.traces.topic, kafka.rekey_topic, **raw)
    rekey = app.topic(kafka.rekey_topic, **raw)
    partials = app.topic(kafka.partials_topic, **raw)
    dlq = app.topic(cfg.dlq.topic, **raw)

    stage1 = Stage1(rt, dlq=dlq, rekey=rekey, partials=partials, partials_count=partials_partitions)
    anomaly = None
    if cfg.anomaly is not None:
        from pipelines.anomalies import AnomalyStage

        anomaly = AnomalyStage(rt, cfg.anomaly, app.topic(cfg.anomaly.topic, **raw))
    stage2 = Stage2(rt, on_final=anomaly.remember if anomaly is not None else None)
    wait_s = kafka.max_batch_wait.seconds
    stage1_topics = {kafka.traces.topic, kafka.rekey_topic}

    @app.agent(inputs, name="stage1")
    async def stage1_agent(stream: Any) -> None:
        async for events in stream.take_events(kafka.max_batch_records, within=wait_s):
            async with rt.lock1:
                with _busy(rt, "stage1"):
                    await _guarded(app, rt, stage1.process, list(events))

    @app.agent(partials, name="stage2")
    async def stage2_agent(stream: Any) -> None:
        async for events in stream.take_events(2000, within=wait_s):
            async with rt.lock2:
                with _busy(rt, "stage2"):
                    await _guarded(app, rt, stage2.process, list(events))

    @app.timer(1.0)
    async def stage1_timer() -> None:
        if rt.failed:
            return
        assigned = {(tp.topic, tp.partition) for tp in app.consumer.assignment()
                    if tp.topic in stage1_topics}
        backlog = await _lag_and_backlog(app, rt, assigned)
        async with rt.lock1:
            with _busy(rt, "stage1"):
                await stage1.tick(assigned, backlog)

    @app.timer(0.5)
    async def stage2_timer() -> None:
        if rt.failed:
            return
        async with rt.lock2:
            with _busy(rt, "stage2"):
                await stage2.finalize_ready()
            if anomaly is not None:
                mine = {tp.partition for tp in app.consumer.assignment() if tp.topic == kafka.partials_topic}
                await anomaly.tick(0 in mine, all_local=len(mine) == partials_partitions)  # counts its own time

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset inside content_type, so drop it from the exposition type.
        return web.bytes(generate_latest(rt.telemetry.registry),
                         content_type=_EXPOSITION_TYPE)

    @app.page("/api/query/{name}")
    async def query(web: Any, request: Any, name: str) -> Any:
        if name not in QUERY_NAMES:
            return web.json({"error": f"unknown query {name!r}; one of {list(QUERY_NAMES)}"}, status=404)
        try:
            since_ms = parse_since(request.query.get("since", "15m"))
        except ValueError as exc:
            return web.json({"error": str(exc)}, status=400)
        rows = await rt.io_call(rt.store.named_query, name, since_ms)
        return web.bytes(json.dumps(rows_to_jsonable(rows)).encode(), content_type="application/json")

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "partitions": len(rt.aggregators), "time": time.time()})

    if anomaly is not None:
        @app.on_before_shutdown.connect  # type: ignore[arg-type]
        async def stop_training(sender: object, **kw: object) -> None:
            anomaly.close()

    app.stage1 = stage1  # type: ignore[attr-defined]
    app.stage2 = stage2  # type: ignore[attr-defined]
    return app


def _faust_dir(group_id: str) -> str:
    """faust's data directory: our tables live in memory, but faust still makes one; keep
    it out of the working directory."""
    path = os.path.join(tempfile.gettempdir(), "otel-insights-faust", group_id)
    os.makedirs(path, exist_ok=True)
    return path


@contextlib.contextmanager
def _busy(rt: Runtime, step: str) -> Iterator[None]:
    """Count the wall time of a step: which stage saturates, and what detection costs."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        rt.telemetry.inc("otel_insights_stage_busy_seconds_total", time.perf_counter() - t0, step=step)


async def _guarded(app: faust.App, rt: Runtime, fn: Any, events: list[Any]) -> None:
    """Run a stage step; an unexpected error stops the worker instead of skipping records.

    Bad input never gets here (it goes to the DLQ). Anything else means in-memory state may
    be half-updated, so the only safe move is a clean stop: acked offsets cover only durable
    results, and the restart replays the rest.
    """
    if rt.failed:
        return
    try:
        await fn(events)
    except Exception as exc:
        rt.failed = True
        log.critical("internal error, stopping so a restart replays from the last safe offset: %r", exc,
                     exc_info=True)
        os.kill(os.getpid(), signal.SIGTERM)


async def _lag_and_backlog(app: faust.App, rt: Runtime, assigned: set[tuple[str, int]]) -> set[tuple[str, int]]:
    """Set the consumer lag of each assigned input partition; return those with a backlog.

    Lag: log end offset - fetch position. Backlog: the log end is past what stage 1 has
    processed (the aggregator's next offset; before its first record, the fetch position),
    which counts fetched records still waiting in the stream too. A transactional
    producer's trailing commit marker would read as a backlog of one; the collectors'
    Kafka exporters do not write transactions.
    """
    backlog: set[tuple[str, int]] = set()
    consumer = app.consumer
    for tp in consumer.assignment():
        key = (tp.topic, tp.partition)
        if key not in assigned:
            continue
        try:
            end = consumer.highwater(tp)
            pos = await consumer.position(tp)
        except Exception as exc:  # unknown is no backlog (idleness works as before), and no metric
            log.debug("offsets of %s unknown: %s", key, exc)
            continue
        if end is None:
            continue
        if pos is not None:
            rt.telemetry.set("otel_insights_consumer_lag_records", max(0, end - pos),
                             topic=tp.topic, partition=str(tp.partition))
        agg = rt.aggregators.get(key)
        done = agg.next_offset if agg is not None and agg.next_offset >= 0 else pos
        if done is not None and end > done:
            backlog.add(key)
    return backlog
