"""Store calls off the event loop: one ClickHouse thread, retried while ClickHouse is down."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from processor.detect.entity_vector import group_by_window
from processor.storage.store import Store
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.pipeline")
FINAL_WINDOWS_PER_READ = 60  # stored final windows per ClickHouse read when replaying history


class StoreIO:
    """The worker's store and the one thread its calls run on."""

    def __init__(self, store: Store, metrics: Metrics, window_ms: int) -> None:
        self.store = store
        self.metrics = metrics
        self.window_ms = window_ms
        # One thread: chdb sessions are single-threaded, and it keeps inserts in order.
        self._thread = ThreadPoolExecutor(1, "clickhouse")

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run a store call on the ClickHouse thread, retrying while ClickHouse is down.

        Nothing is acknowledged until the write lands, so waiting here loses nothing; it
        only stops consumption (back-pressure) with one clear log line per failure.
        """
        delay = 0.5
        while True:
            try:
                return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)
            except Exception as exc:  # StorageError and driver errors alike
                self.metrics.inc("otel_insights_clickhouse_insert_errors_total")
                log.error("clickhouse: %s (retrying in %.1fs)", str(exc).splitlines()[0], delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def final_windows(self, since_ms: int, until_ms: int
                            ) -> AsyncIterator[tuple[int, list[Mapping[str, Any]], list[Mapping[str, Any]]]]:
        """Stored final windows with since_ms <= start < until_ms, oldest first, as
        (window_start, health rows, edge rows); read a chunk of windows at a time, so a day
        of history never sits in memory at once."""
        first = await self.call(self.store.first_final_window, since_ms)
        if first is None:
            return
        chunk = FINAL_WINDOWS_PER_READ * self.window_ms
        for lo in range(first, until_ms, chunk):
            health, edges = await self.call(self.store.final_rows_between, lo, min(lo + chunk, until_ms))
            for window in group_by_window(health, edges):
                yield window

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        self.store.close()
