"""State shared by the agents of one worker: decoder, aggregators, finaliser, store, metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from processor.aggregate.finalize import Finalizer, HealthRules
from processor.aggregate.partition import Emission, PartitionAggregator
from processor.config import Config
from processor.config.components import KafkaReceiver
from processor.detect.entity_vector import group_by_window
from processor.graph import GraphSettings
from processor.otlp.batch import StringTable
from processor.otlp.decode import SpanDecoder
from processor.storage.store import Store
from processor.telemetry import Telemetry

log = logging.getLogger("otel_insights.pipeline")
FINAL_WINDOWS_PER_READ = 60  # stored final windows per ClickHouse read when replaying history


@dataclass
class Runtime:
    config: Config
    store: Store
    telemetry: Telemetry
    expected_sources: set[str]
    strings: StringTable = field(default_factory=StringTable)
    aggregators: dict[tuple[str, int], PartitionAggregator] = field(default_factory=dict)
    idle: set[tuple[str, int]] = field(default_factory=set)
    lock1: asyncio.Lock = field(default_factory=asyncio.Lock)
    lock2: asyncio.Lock = field(default_factory=asyncio.Lock)
    # One thread: chdb sessions are single-threaded, and it keeps inserts in order.
    failed: bool = False  # set on an internal error: stop consuming, let the restart replay
    io: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, "clickhouse"))

    def __post_init__(self) -> None:
        if self.config.kafka is None:
            raise ValueError("the traces pipeline has no kafka receiver")
        self.kafka: KafkaReceiver = self.config.kafka
        sg = self.config.servicegraph
        self.decoder = SpanDecoder(
            self.strings,
            virtual_node_peer_attributes=list(sg.virtual_node_peer_attributes),
            database_name_attributes=list(sg.database_name_attributes),
        )
        self.graph = GraphSettings(ttl_ns=sg.store.ttl.ns, max_items=sg.store.max_items)
        w = self.config.windows
        h = w.health
        self.finalizer = Finalizer(
            size_ms=w.size.ms,
            rules=HealthRules(h.min_requests, h.error_rate_degraded, h.error_rate_critical,
                              h.latency_degraded_ratio, h.latency_critical_ratio, h.baseline_windows),
            expected_sources=set(self.expected_sources),
        )

    async def final_windows(self, since_ms: int, until_ms: int
                            ) -> AsyncIterator[tuple[int, list[Mapping[str, Any]], list[Mapping[str, Any]]]]:
        """Stored final windows with since_ms <= start < until_ms, oldest first, as
        (window_start, health rows, edge rows); read a chunk of windows at a time, so a day
        of history never sits in memory at once."""
        first = await self.io_call(self.store.first_final_window, since_ms)
        if first is None:
            return
        chunk = FINAL_WINDOWS_PER_READ * self.config.windows.size.ms
        for lo in range(first, until_ms, chunk):
            health, edges = await self.io_call(self.store.final_rows_between, lo, min(lo + chunk, until_ms))
            for window in group_by_window(health, edges):
                yield window

    async def io_call(self, fn: Any, *args: Any) -> Any:
        """Run a store call on the ClickHouse thread, retrying while ClickHouse is down.

        Nothing is acknowledged until the write lands, so waiting here loses nothing; it
        only stops consumption (back-pressure) with one clear log line per failure.
        """
        delay = 0.5
        while True:
            try:
                return await asyncio.get_running_loop().run_in_executor(self.io, fn, *args)
            except Exception as exc:  # StorageError and driver errors alike
                self.telemetry.inc("otel_insights_clickhouse_insert_errors_total")
                log.error("clickhouse: %s (retrying in %.1fs)", str(exc).splitlines()[0], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def aggregator(self, topic: str, partition: int) -> PartitionAggregator:
        key = (topic, partition)
        agg = self.aggregators.get(key)
        if agg is None:
            group = self.kafka.group_id
            marks = await self.io_call(self.store.load_watermarks, group, topic)
            closed_ms = int(marks.get(partition, 0))
            w = self.config.windows
            agg = PartitionAggregator(topic, partition, self.strings, self.graph, w.size.ns,
                                      w.allowed_lateness.ns, closed_until_ns=closed_ms * 1_000_000)
            self.aggregators[key] = agg
        return agg

    async def persist(self, agg: PartitionAggregator, em: Emission) -> None:
        """Make an emission durable: partial rows first, then the partition's watermark."""
        if em.health:
            await self.io_call(self.store.insert_health_partials, em.health)
        if em.edges:
            await self.io_call(self.store.insert_edge_partials, em.edges)
        await self.io_call(self.store.save_watermarks, self.kafka.group_id, agg.topic,
                           {agg.partition: em.watermark_ms})

    def source_name(self, topic: str, partition: int) -> str:
        return f"{topic}/{partition}"

    def is_idle(self, agg: PartitionAggregator) -> bool:
        return time.monotonic() - agg.last_record_wall >= self.config.windows.idle_timeout.seconds
