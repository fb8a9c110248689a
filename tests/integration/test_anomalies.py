"""Injected faults through the real broker and chdb become one incident; clean traffic none."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from processor.generate import FaultSpec, ShopGenerator
from processor.generate.sinks import send_kafka
from tests.integration.harness import make_pipeline, wait_until

pytestmark = pytest.mark.integration
W_NS = 2_000_000_000
LATENCY_METRICS = {"p50_ms", "p95_ms", "p99_ms", "server_p50_ms", "server_p95_ms", "server_p99_ms",
                   "client_p50_ms", "client_p95_ms", "client_p99_ms"}


def _run(broker, new_topic, unique_name, tmp_path, faults_at: float | None):
    topic = new_topic("spans")
    start = (time.time_ns() // W_NS - 120) * W_NS
    faults = []
    if faults_at is not None:
        faults = [FaultSpec("latency_shift", "product-catalog", start + int(faults_at * 1e9),
                            start + int((faults_at + 10) * 1e9), 5.0)]
    gen = ShopGenerator(seed=41, rate=120, start_ns=start, faults=faults)
    # Traffic that simply stops would end in a genuine traffic drop: send whole windows only.
    traces = [t for t in gen.traces(70) if t.end_ns < start + 70 * 10**9]
    last_window = max(t.end_ns for t in traces) // W_NS * W_NS
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("a"), anomaly=True).start()
    try:
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        # Detection judges a window a few seconds after it is final: wait for the last one.
        wait_until(lambda: p.metric("otel_insights_anomaly_judged_window_seconds") * 1e9
                   >= last_window - W_NS, 120, "detectors to judge every window", p)
        return start, p.query("anomalies"), p.metric("otel_insights_anomalies_total")
    finally:
        p.stop()


def _ns(iso: str) -> int:
    from tests.integration.truth_compare import iso_to_ns

    return iso_to_ns(iso)


def test_latency_fault_becomes_one_incident_on_the_right_entity(broker, new_topic, unique_name, tmp_path) -> None:
    start, rows, counted = _run(broker, new_topic, unique_name, tmp_path, faults_at=44.0)
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


def test_fault_free_traffic_produces_no_anomaly(broker, new_topic, unique_name, tmp_path) -> None:
    _, rows, _ = _run(broker, new_topic, unique_name, tmp_path, faults_at=None)
    assert rows == []
