"""Hostile records on a running worker (real broker, chdb): a compression bomb and a flood of
made-up service names cost bounded memory, and everything else is still counted exactly."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import pytest
from aiokafka import AIOKafkaProducer

from processor.generate.sinks import send_kafka
from processor.windows.cardinality import OVERFLOW
from tests.hostile import compression_bomb, distinct_services
from tests.integration.harness import (
    WINDOW_NS,
    make_pipeline,
    read_records,
    shop_traffic,
    wait_exact,
    wait_until,
)

pytestmark = pytest.mark.integration
MB = 1024 * 1024


class RssPeak:
    """The highest RSS of a process, sampled every 20 ms on a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()

    @contextmanager
    def watching(self) -> Iterator[RssPeak]:
        def run() -> None:
            while not self._stop.wait(0.02):
                try:
                    self.peak = max(self.peak, self.proc.memory_info().rss)
                except psutil.Error:
                    return

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def now(self) -> int:
        return self.proc.memory_info().rss


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    prod = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_request_size=4 * MB)
    await prod.start()
    try:
        futs = [await prod.send(topic, value, key=key) for key, value in records]
        for f in futs:
            await f
    finally:
        await prod.stop()


def test_a_compression_bomb_goes_to_the_dlq_and_memory_stays_bounded(
        broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    traces, truth = shop_traffic(seed=53, seconds=8)
    bomb = compression_bomb(2 * 1024 * MB)  # 2 GiB of zeros in ~64 KB of zstd
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("bomb"))
    try:
        p.start()
        assert p.proc is not None
        rss = RssPeak(p.proc.pid)
        half = len(traces) // 2
        asyncio.run(send_kafka(traces[:half], [broker.bootstrap], topic))
        wait_until(lambda: p.metric("otel_insights_spans_total") > 0, 60, "first spans", p)
        before = rss.now()
        with rss.watching():
            asyncio.run(_produce(broker.bootstrap, topic, [(b"0" * 32, bomb)]))
            [dead] = asyncio.run(read_records(broker.bootstrap, f"{topic}-dlq", 1))
        headers = dict(dead.headers)
        assert dead.value == bomb and headers["otel-insights-reason"] == b"too_large"
        assert b"max_record_bytes" in headers["otel-insights-error"]
        # The limit (16 MiB) and the decode budget bound it; inflating would take 2 GiB.
        assert rss.peak - before < 200 * MB, (before // MB, rss.peak // MB)
        assert p.metric("otel_insights_dlq_records_total", reason="too_large") == 1
        asyncio.run(send_kafka(traces[half:], [broker.bootstrap], topic))
        wait_exact(p, truth)
    finally:
        p.stop()


def test_100k_service_names_in_one_window_keep_memory_flat(broker, new_topic, unique_name, tmp_path) -> None:
    """A cardinality attack: 100,000 made-up service names, every one a call and a
    `user -> name` edge, all in one window. With cardinality_limit 500 a window keeps at most
    500 services and 500 edges per input partition; the rest are counted, exactly, under
    otel.metric.overflow, and the worker's memory hardly moves."""
    topic = new_topic("spans")
    limit, n = 500, 100_000
    traces, truth = shop_traffic(seed=59, seconds=10)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("flood"), batch=1000,
                      windows_options=f"cardinality_limit: {limit}")
    try:
        p.start()
        assert p.proc is not None
        rss = RssPeak(p.proc.pid)
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        wait_exact(p, truth)  # warmed up on ordinary traffic
        before = rss.now()
        window = (time.time_ns() // WINDOW_NS - 20) * WINDOW_NS
        flood = distinct_services(n, window + WINDOW_NS // 10, WINDOW_NS // 2)
        with rss.watching():
            asyncio.run(_produce(broker.bootstrap, topic, flood))
            wait_until(lambda: p.metric("otel_insights_spans_total") >= truth_spans(traces) + n, 180,
                       "the flood decoded", p)
            start_iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(window / 1e9))

            def flood_rows() -> list[dict]:
                return [r for r in p.query("health") if r["window_start"].startswith(start_iso)]

            wait_until(lambda: sum(r["calls"] for r in flood_rows()) == n, 120, "the flood's final rows", p)
        rows = flood_rows()
        named = [r for r in rows if r["service"] != OVERFLOW]
        [overflow] = [r for r in rows if r["service"] == OVERFLOW]
        assert len(named) <= 3 * limit
        assert overflow["calls"] == n - len(named)
        assert p.metric("otel_insights_cardinality_overflow_total", what="span") == n - len(named)
        edges = [r for r in p.query("edges") if r["window_start"].startswith(start_iso)]
        assert sum(r["requests"] for r in edges) == n and len(edges) <= 3 * limit + 1
        growth = rss.peak - before
        print(f"worker RSS {before // MB} MB before the flood, peak {rss.peak // MB} MB during it")
        assert growth < 150 * MB, (before // MB, rss.peak // MB)
    finally:
        p.stop()


def truth_spans(traces: list) -> int:
    return sum(t.span_count for t in traces)
