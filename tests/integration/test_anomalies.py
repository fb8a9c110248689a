"""Injected faults through the real broker and chdb become one incident; clean traffic none."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Iterator

import pytest

from processor.config import load_config
from processor.dashboards import spec
from processor.dashboards.spec import dashboard_id
from processor.detect.autoencoder import Autoencoder
from processor.generate import FaultSpec, ShopGenerator
from processor.generate.sinks import send_kafka
from processor.insights import message
from processor.storage.open import open_store
from processor.storage.store import Store
from tests.integration.harness import Pipeline, make_pipeline, read_topic, wait_until
from tests.llm_stub import LLMStub, instructed_reply

pytestmark = pytest.mark.integration
W_NS = 2_000_000_000
LATENCY_METRICS = {"p50_ms", "p95_ms", "p99_ms", "server_p50_ms", "server_p95_ms", "server_p99_ms",
                   "client_p50_ms", "client_p95_ms", "client_p99_ms"}


@contextlib.contextmanager
def _store(p: Pipeline) -> Iterator[Store]:
    """The stopped worker's ClickHouse store (chdb: one process at a time)."""
    store = open_store(load_config(p.config_path).clickhouse)  # type: ignore[arg-type]
    try:
        yield store
    finally:
        store.close()


def _traffic(start: int, faults: list[FaultSpec], seconds: int = 70) -> tuple[list, int]:
    gen = ShopGenerator(seed=41, rate=120, start_ns=start, faults=faults)
    # Traffic that simply stops would end in a genuine traffic drop: send whole windows only.
    traces = [t for t in gen.traces(seconds) if t.end_ns < start + seconds * 10**9]
    return traces, max(t.end_ns for t in traces) // W_NS * W_NS


def _wait_judged(p: Pipeline, last_window: int) -> None:
    # Detection judges a window a few seconds after it is final: wait for the last one.
    wait_until(lambda: p.metric("otel_insights_anomaly_judged_window_seconds") * 1e9
               >= last_window - W_NS, 120, "detectors to judge every window", p)


def _run(broker, new_topic, unique_name, tmp_path, faults_at: float | None, narrator: bool = False):
    topic = new_topic("spans")
    start = (time.time_ns() // W_NS - 120) * W_NS
    faults = []
    if faults_at is not None:
        faults = [FaultSpec("latency_shift", "product-catalog", start + int(faults_at * 1e9),
                            start + int((faults_at + 10) * 1e9), 5.0)]
    traces, last_window = _traffic(start, faults)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("a"), anomaly=True,
                      narrator=narrator).start()
    try:
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        _wait_judged(p, last_window)
        if narrator:  # the incident ends gap windows after its last: wait for its final version
            def resolved() -> bool:  # on the topic, and counted (the stage counts after sending)
                sent = _insights(p, broker)
                return bool(sent) and sent[-1]["status"] == "resolved" and \
                    p.metric("otel_insights_insights_total") == len(sent)

            wait_until(resolved, 60, "the incident's insight to resolve", p)
        return start, p.query("anomalies"), p.metric("otel_insights_anomalies_total"), p, last_window
    finally:
        p.stop()


def _ns(iso: str) -> int:
    from tests.truth_compare import iso_to_ns

    return iso_to_ns(iso)


def _insights(p: Pipeline, broker) -> list[dict]:
    topic = load_config(p.config_path).narrator.topic  # type: ignore[union-attr]
    return asyncio.run(read_topic(broker.bootstrap, topic))


def test_latency_fault_becomes_one_incident_and_one_insight(broker, new_topic, unique_name, tmp_path) -> None:
    start, rows, counted, p, last_window = _run(broker, new_topic, unique_name, tmp_path, faults_at=44.0,
                                                narrator=True)
    assert rows, "no anomaly detected for a 5x latency shift"
    fault_from, fault_to = start + 44 * 10**9, start + 54 * 10**9
    inside = [r for r in rows if fault_from - 2 * W_NS <= _ns(r["window_start"]) < fault_to + 2 * W_NS]
    outside = [r for r in rows if r not in inside]
    assert not outside, outside
    assert len({r["incident_id"] for r in inside}) == 1, [(r["entity"], r["incident_id"]) for r in inside]
    catalog = [r for r in inside if r["entity"] == "product-catalog" and r["entity_type"] == "service"]
    assert catalog and all(r["metric"] in LATENCY_METRICS for r in catalog), catalog
    first = min(_ns(r["window_start"]) for r in catalog)
    assert first <= fault_from + 2 * W_NS  # detected within two windows of onset
    factors = json.loads(catalog[0]["factors"])
    assert factors["factors"] and factors["factors"][0]["observed"] > factors["factors"][0]["expected"]
    assert counted == len(rows)

    # Stage 3: one insight for the incident, versions 1..n each once, the last resolved.
    published = _insights(p, broker)
    for m in published:
        message.validate(m)
    (incident,) = {r["incident_id"] for r in inside}
    assert {m["insight_id"] for m in published} == {incident}
    assert [m["version"] for m in published] == list(range(1, len(published) + 1))
    assert published[0]["change"] == "opened" and published[-1]["status"] == "resolved"
    assert all(m["status"] == "open" for m in published[:-1])
    assert all(m["grounded"] and m["narrator"] == "template" for m in published)
    assert published[-1]["suspected_origin"]["entity"] == "product-catalog"
    assert _ns(published[0]["first_window"]) <= fault_from + 2 * W_NS

    # Its dashboard: one spec per insight version, same id, each valid, none twice.
    specs = asyncio.run(read_topic(broker.bootstrap, f"{load_config(p.config_path).kafka.traces.topics[0]}-dashboards"))
    assert [s["version"] for s in specs] == [m["version"] for m in published]
    assert {s["id"] for s in specs} == {dashboard_id("incident", incident)}
    for s in specs:
        assert spec.check(s) == [], s
        assert s["incident_id"] == incident and s["kind"] == "incident"
    assert _ns(specs[0]["time_range"]["from"]) <= fault_from
    with _store(p) as store:
        (stored,) = store.catalogue("dashboards", {"since_ms": 0, "incident_id": incident})
        assert stored["version"] == specs[-1]["version"]
        assert store.unpublished_dashboards(0) == []

    # A worker that dies after the fault's windows are final but before they are judged:
    # rewind the stored progress mark to before the fault and drop the verdicts. The
    # restarted worker must judge those windows (and only those) again.
    mark = fault_from - 4 * W_NS
    with _store(p) as store:
        group = load_config(p.config_path).kafka.group_id  # type: ignore[union-attr]
        topic = load_config(p.config_path).anomaly.topic  # type: ignore[union-attr]
        store.save_watermarks(group, topic, {0: mark // 10**6})
        store.backend.command(f"TRUNCATE TABLE {store.database}.anomalies")
    p.start()
    try:
        _wait_judged(p, last_window)
        again = p.query("anomalies")
    finally:
        p.stop()
    assert "judging from" in p.log()
    assert {(r["entity"], r["window_start"]) for r in again} == {(r["entity"], r["window_start"]) for r in rows}
    # The re-judged incident has the same id and facts: its resolved insight is not published
    # again, nor its dashboard.
    assert _insights(p, broker) == published
    assert asyncio.run(read_topic(broker.bootstrap, f"{load_config(p.config_path).kafka.traces.topics[0]}-dashboards")) == specs


MODELS = ("models: [{{name: claude, model: anthropic/claude-sonnet-4-5, api_key: \"${{env:T_ANTHROPIC_KEY}}\", "
          "api_base: \"{base}\"}}, {{name: gpt, model: openai/gpt-4o-mini, api_key: \"${{env:T_OPENAI_KEY}}\", "
          "api_base: \"{base}/v1\"}}], routes: {{narrative: [claude, gpt]}}, timeout: 5s, retries: 0")


def test_a_model_narrates_the_incident_after_the_first_provider_fails(broker, new_topic, unique_name, tmp_path,
                                                                       monkeypatch) -> None:
    """The real worker process, its litellm Router and provider adapters, against the stub."""
    keys = {"T_ANTHROPIC_KEY": "sk-ant-e2e-secret-1111", "T_OPENAI_KEY": "sk-e2e-secret-2222"}
    for k, v in keys.items():
        monkeypatch.setenv(k, v)
    with LLMStub(instructed_reply) as stub:
        stub.behaviour["anthropic"] = "error"
        topic = new_topic("spans")
        start = (time.time_ns() // W_NS - 120) * W_NS
        fault = FaultSpec("latency_shift", "product-catalog", start + 44 * 10**9, start + 54 * 10**9, 5.0)
        traces, last_window = _traffic(start, [fault])
        p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("m"), narrator=True,
                          narrator_options=MODELS.format(base=stub.base)).start()
        try:
            asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
            _wait_judged(p, last_window)
            sent = wait_until(lambda: [m for m in _insights(p, broker) if m["status"] == "resolved"], 60,
                              "the resolved insight", p)
            fallbacks = p.metric("otel_insights_llm_fallbacks_total", reason="failed")
            ok = p.metric("otel_insights_llm_requests_total", model="openai/gpt-4o-mini", outcome="ok")
        finally:
            p.stop()
    published = _insights(p, broker)
    for m in published:
        message.validate(m)
    assert {m["insight_id"] for m in published} == {sent[0]["insight_id"]}
    assert all(m["narrator"] == "openai/gpt-4o-mini" and m["grounded"] for m in published), \
        [(m["narrator"], m["violations"]) for m in published]
    assert published[0]["tokens"] == {"prompt": 900, "completion": 300} and published[0]["cost_usd"] > 0
    # Tokens are counted once per call: a version whose facts were narrated before is a cache hit.
    assert sum(m["tokens"]["prompt"] for m in published) == 900 * stub.calls("openai") == 900 * ok
    assert "`product-catalog`" in published[-1]["narrative"]["summary"]
    assert fallbacks >= 1 and stub.calls("anthropic") >= 1
    log = p.log_path.read_text(errors="replace")
    assert "claude-sonnet-4-5 failed" in log
    assert not any(v in log for v in keys.values())


def test_fault_free_traffic_produces_no_anomaly(broker, new_topic, unique_name, tmp_path) -> None:
    _, rows, _, _, _ = _run(broker, new_topic, unique_name, tmp_path, faults_at=None)
    assert rows == []


def test_autoencoders_train_on_stored_windows_are_stored_and_reload(broker, new_topic, unique_name,
                                                                  tmp_path) -> None:
    topic = new_topic("spans")
    start = (time.time_ns() // W_NS - 120) * W_NS
    traces, last_window = _traffic(start, [])
    options = ("detectors: [robust, ewma, autoencoder], "
               "autoencoder: {retrain_interval: 10s, min_history: 40s, hidden: [4, 2], epochs: 20}")
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("ae"), anomaly=True,
                      anomaly_options=options).start()
    try:
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        _wait_judged(p, last_window)
        # Judging and detection's own ClickHouse calls (progress, model reads) are timed apart.
        busy = {step: p.metric("otel_insights_stage_busy_seconds_total", step=step)
                for step in ("detection", "detection_io")}
        assert busy["detection"] > 0 and busy["detection_io"] > 0, busy
        # Training is due at start (nothing stored) and every 10 s: one of them has the windows.
        models = wait_until(lambda: p.metric("otel_insights_anomaly_models"), 90, "trained models", p)
        assert p.metric("otel_insights_anomaly_model_trainings_total", outcome="ok") >= 1
        assert p.metric("otel_insights_anomaly_model_trainings_total", outcome="failed") == 0
    finally:
        p.stop()
    with _store(p) as store:
        stored = store.latest_models("autoencoder")
    assert len(stored) == models
    entities = {(r["entity_type"], r["entity"]) for r in stored}
    assert ("service", "frontend") in entities and any(t == "edge" for t, _ in entities)
    for r in stored:
        model = Autoencoder.from_bytes(base64.b64decode(r["model"]))
        assert model.n_features == (7 if r["entity_type"] == "service" else 5)
        assert r["windows"] >= 20
    # A restart loads the stored models instead of starting without them.
    p.start()
    try:
        wait_until(lambda: p.metric("otel_insights_anomaly_models") == models, 60, "models reloaded", p)
    finally:
        p.stop()


def test_total_silence_is_judged_as_a_traffic_drop(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    start = (time.time_ns() // W_NS - 30) * W_NS
    traces, last_window = _traffic(start, [], seconds=50)  # ends about 10 s before now
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("quiet"), anomaly=True,
                      judge_empty=True).start()
    try:
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        # Nothing more arrives: once the inputs are idle, the windows after the traffic are
        # final with no rows, and every service that had traffic is missing from them.
        rows = wait_until(lambda: [r for r in p.query("anomalies") if r["entity"] == "frontend"],
                          120, "the silence to be flagged on frontend", p)
        every = p.query("anomalies")
    finally:
        p.stop()
    assert all(_ns(r["window_start"]) > last_window for r in every), "flagged before the traffic stopped"
    assert rows[0]["entity_type"] == "service" and rows[0]["metric"] == "rate"
    assert rows[0]["observed"] == 0 and rows[0]["expected"] > 20
