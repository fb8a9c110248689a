"""The anomaly judge takes a window only once every stage-2 partition has written its rows."""

from __future__ import annotations

import asyncio
from typing import Any

from pipelines.anomalies import AnomalyStage
from pipelines.store_io import StoreIO
from processor.aggregate import messages
from processor.aggregate.messages import HealthKey, Watermark
from processor.aggregate.stage2 import Stage2
from processor.config import parse_config
from processor.storage.window_store import MemoryStore
from processor.telemetry import Metrics
from tests.unit.spans import windows_config

SIZE_MS = 10_000
W0 = 1_700_000_000_000
W1 = W0 + SIZE_MS
CONFIG = """
receivers:
  kafka: {traces: {topics: [spans]}, group_id: g}
processors:
  windows: {size: 10s}
  anomaly: {detectors: [robust]}
exporters: {clickhouse: {endpoint: "chdb://unused"}}
service: {pipelines: {traces: {receivers: [kafka], processors: [windows, anomaly], exporters: [clickhouse]}}}
"""


async def _direct(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _partial(service: str, ws: int) -> dict:
    return {"window_start": ws, "window_end": ws + SIZE_MS, "service": service, "input_topic": "spans",
            "input_partition": 0, "calls": 3, "errors": 0, "latency_keys": [], "latency_counts": [],
            "applied_through": 1, "correction": 0, "version": 1}


def test_a_partials_partition_vouches_only_for_keys_it_has_read_and_written() -> None:
    store = MemoryStore()
    store.insert_health_partials([_partial("fe", W0), _partial("cart", W0)])
    stage2 = Stage2(windows_config(SIZE_MS), ["spans/0"], store, _direct, Metrics())
    # Partition 0 carries fe's key and then the watermark past W0; partition 1 carries cart's
    # key but its copy of the watermark has not been read yet.
    stage2.receive(0, messages.encode(HealthKey("fe", W0)), partition=0)
    stage2.receive(0, messages.encode(HealthKey("cart", W0)), partition=1)
    stage2.receive(1, messages.encode(Watermark("spans/0", W1, False)), partition=0)
    assert stage2.finalized_through([0, 1]) == {0: W0}  # fe's row is not written yet

    asyncio.run(stage2.finalize_ready())  # the global watermark makes both rows final
    assert {r["service"] for r in store.final_rows_between(W0)[0]} == {"fe", "cart"}
    # Partition 0 now vouches for W0; partition 1 still cannot: it has not read a watermark.
    assert stage2.finalized_through([0, 1]) == {0: W1}

    stage2.receive(1, messages.encode(Watermark("spans/0", W1, False)), partition=1)
    assert stage2.finalized_through([0, 1]) == {0: W1, 1: W1}

    # A key that arrives for a window already final holds its partition until it is written.
    stage2.receive(2, messages.encode(HealthKey("cart", W0)), partition=1)
    assert stage2.finalized_through([0, 1]) == {0: W1, 1: W0}
    stage2.keep_partitions([0])  # partition 1 revoked: its new owner reads it again
    assert stage2.finalized_through([0, 1]) == {0: W1}


def test_the_judge_waits_for_every_partials_partition_to_report() -> None:
    cfg = parse_config(CONFIG, environ={})
    store = MemoryStore()
    metrics = Metrics()
    io = StoreIO(store, metrics, SIZE_MS)  # type: ignore[arg-type]
    judge = AnomalyStage(cfg, io, metrics, topic=None, partials_partitions=3)
    async def complete() -> int | None:
        return await judge.complete_before()

    assert asyncio.run(complete()) is None
    store.save_watermarks("g", "otel-insights-partials", {0: W1 + SIZE_MS, 2: W1 + SIZE_MS})
    assert asyncio.run(complete()) is None  # partition 1 has not reported
    store.save_watermarks("g", "otel-insights-partials", {1: W1})
    assert asyncio.run(complete()) == W1
    # Another group's reports (or another topic's) vouch for nothing here.
    store.save_watermarks("other", "otel-insights-partials", {1: W1 + 9 * SIZE_MS})
    store.save_watermarks("g", "spans", {1: W1 + 9 * SIZE_MS})
    assert asyncio.run(complete()) == W1


def _final(service: str, ws: int, calls: int) -> dict:
    return {"window_start": ws, "window_end": ws + SIZE_MS, "service": service, "calls": calls,
            "errors": 0, "error_rate": 0.0, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0,
            "health": "healthy"}


def test_a_correction_of_a_window_already_judged_is_counted_and_its_verdicts_stand() -> None:
    cfg = parse_config(CONFIG, environ={})
    metrics = Metrics()
    judge = AnomalyStage(cfg, StoreIO(MemoryStore(), metrics, SIZE_MS), metrics,  # type: ignore[arg-type]
                         topic=None, partials_partitions=1)
    judge.owner, judge.last_window_ms = True, W0  # W0 judged, W1 not yet
    judge.remember([_final("fe", W1, 5)], [])
    judge.remember([_final("fe", W0, 7), _final("cart", W0, 2), _final("fe", W1, 6)], [])
    assert metrics.registry.get_sample_value("otel_insights_anomaly_corrected_windows_total") == 1
    assert judge.last_window_ms == W0  # W0 is not judged again
    assert W0 not in judge.local
    assert judge.local[W1][0]["fe"]["calls"] == 6  # W1 will be judged on its corrected row
