"""Stage 3 on the real broker and chdb: one insight per incident, versioned, resolved, and
exactly one message per version across crashes at each step of publishing.

The stage runs in this process (so a crash can be placed exactly); the anomalies it reads
are stored rows, as the judge writes them, and the judge's progress is its stored mark.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from pipelines.insights import InsightStage
from pipelines.store_io import StoreIO
from processor.config import load_config
from processor.insights import message
from processor.storage.open import open_store
from processor.telemetry import Metrics
from tests.integration.harness import make_pipeline, read_topic

pytestmark = pytest.mark.integration
W = 2000  # window ms, as the harness config


class Crash(Exception):
    """The process dies here."""


class Sender:
    """The stage's topic: a real producer, which can die before or after a send."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer, self.topic = producer, topic
        self.crash_before: int | None = None  # version whose send never happens
        self.crash_after: int | None = None  # version sent, then the process dies

    async def send(self, key: bytes, value: bytes) -> asyncio.Future:
        version = json.loads(value)["version"]
        if version == self.crash_before:
            raise Crash(f"before sending v{version}")
        fut = await self.producer.send(self.topic, key=key, value=value)
        if version == self.crash_after:
            await fut
            raise Crash(f"after sending v{version}")
        return fut


def _anomaly(entity: str, window: int, t0: int, severity: str = "warning", score: float = 0.7,
             metric: str = "p95_ms", entity_type: str = "service", incident: str = "inc-test") -> dict:
    return {"detected_at": t0, "window_start": t0 + window * W, "window_end": t0 + (window + 1) * W,
            "entity_type": entity_type, "entity": entity, "incident_id": incident, "metric": metric,
            "observed": 480.0 + window, "expected": 40.0, "score": score, "severity": severity,
            "detectors": ["robust"], "factors": json.dumps({"factors": [], "attribution": []})}


def _edge(client: str, server: str, window: int, t0: int, p95: float) -> dict:
    return {"window_start": t0 + window * W, "window_end": t0 + (window + 1) * W, "client": client,
            "server": server, "connection_type": "", "requests": 50, "failed": 0, "error_rate": 0.0,
            "server_p50_ms": p95 / 2, "server_p95_ms": p95, "server_p99_ms": p95, "client_p50_ms": p95 / 2,
            "client_p95_ms": p95, "client_p99_ms": p95, "server_keys": [], "server_counts": [],
            "client_keys": [], "client_counts": [], "version": 1}


@pytest.fixture
def world(broker, new_topic, unique_name, tmp_path: Path) -> Iterator[dict]:
    topic = new_topic("spans")
    for suffix in ("anomalies", "insights"):
        broker.create_topic(f"{topic}-{suffix}", 3)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("ins"), narrator=True, cooldown="1h")
    cfg = load_config(p.config_path)
    store = open_store(cfg.clickhouse)  # type: ignore[arg-type]
    io = StoreIO(store, Metrics(), W)
    try:
        yield {"cfg": cfg, "io": io, "store": store, "topic": f"{topic}-insights", "broker": broker.bootstrap}
    finally:
        io.close()


async def _scenario(world: dict, crash_before: int | None = None, crash_after: int | None = None) -> list[dict]:
    """An incident on checkout and payment over three windows; the second raises its severity.
    Crash at the given version, then restart as a new process would."""
    cfg, io, store = world["cfg"], world["io"], world["store"]
    group, anomaly_topic = cfg.kafka.group_id, cfg.anomaly.topic
    t0 = (int(time.time() * 1000) // W - 30) * W
    store.insert_edges_final([_edge("frontend", "checkout", w, t0, 300) for w in range(3)]
                             + [_edge("checkout", "payment", w, t0, 280) for w in range(3)])
    producer = AIOKafkaProducer(bootstrap_servers=[world["broker"]], acks="all")
    await producer.start()
    sender = Sender(producer, world["topic"])
    sender.crash_before, sender.crash_after = crash_before, crash_after
    crashes = 0

    async def tick(stage: InsightStage) -> InsightStage:
        """A few timer ticks, as the worker runs them (records take a moment to arrive)."""
        nonlocal crashes
        for _ in range(8):
            try:
                await stage.tick(True)
            except Crash:
                crashes += 1
                await stage.stop()
                sender.crash_before = sender.crash_after = None
                stage = InsightStage(cfg, io, Metrics(), sender)  # the restarted process
            await asyncio.sleep(0.25)
        return stage

    async def judge(window: int, rows: list[dict]) -> None:
        store.insert_anomalies(rows)
        for r in rows:  # what the judge sends: the topic wakes the stage
            await producer.send_and_wait(anomaly_topic, key=r["entity"].encode(),
                                         value=json.dumps({**r, "schema_version": 1}).encode())
        store.save_watermarks(group, anomaly_topic, {0: t0 + window * W})

    try:
        stage = InsightStage(cfg, io, Metrics(), sender)
        await stage.tick(True)  # starts its consumer at the end of the anomaly topic
        await judge(0, [_anomaly("payment", 0, t0), _anomaly("checkout", 0, t0, score=0.6)])
        stage = await tick(stage)
        await judge(1, [_anomaly("payment", 1, t0, "critical", 0.9), _anomaly("checkout", 1, t0)])
        stage = await tick(stage)
        await judge(2, [_anomaly("payment", 2, t0, "critical", 0.9)])
        stage = await tick(stage)  # within the cooldown, same severity: nothing
        for window in (3, 4):  # two quiet windows judged: the incident has ended
            store.save_watermarks(group, anomaly_topic, {0: t0 + window * W})
            stage = await tick(stage)
        stage = await tick(stage)
        await stage.stop()
        assert crashes == (crash_before is not None) + (crash_after is not None)
    finally:
        await producer.stop()
    return await read_topic(world["broker"], world["topic"])


def _check(messages: list[dict], world: dict) -> None:
    for m in messages:
        message.validate(m)
    assert [(m["insight_id"], m["version"], m["change"]) for m in messages] == [
        ("inc-test", 1, "opened"), ("inc-test", 2, "escalated"), ("inc-test", 3, "resolved")]
    first, escalated, resolved = messages
    assert first["severity"] == "warning" and escalated["severity"] == "critical"
    assert resolved["status"] == "resolved" and resolved["windows"] == 3
    for m in messages:
        assert m["grounded"] and m["narrator"] == "template"
        assert m["suspected_origin"]["entity"] == "payment"  # deepest, its caller anomalous too
    stored = world["store"].latest_insights(0)
    assert [(r["version"], r["status"], r["published"]) for r in stored] == [(3, "resolved", 1)]
    assert json.loads(stored[0]["message"]) == resolved


def test_incident_opens_escalates_and_resolves_once(world) -> None:
    _check(asyncio.run(_scenario(world)), world)


@pytest.mark.parametrize("step", ["before", "after"])
def test_crash_around_a_send_publishes_each_version_exactly_once(world, step) -> None:
    kwargs = {"crash_before": 2} if step == "before" else {"crash_after": 2}
    _check(asyncio.run(_scenario(world, **kwargs)), world)
