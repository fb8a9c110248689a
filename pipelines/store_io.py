"""Store calls off the event loop: one ClickHouse thread; transient failures retried, then a stop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from processor.config.components import RetryOnFailure
from processor.detect.entity_vector import group_by_window
from processor.errors import StorageError
from processor.storage.retry import Backoff
from processor.storage.schema import MIGRATIONS, applied_versions
from processor.storage.store import Store
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.pipeline")
FINAL_WINDOWS_PER_READ = 60  # stored final windows per ClickHouse read when replaying history


class StoreIO:
    """The worker's store and the one thread its calls run on.

    ``on_fatal`` is told once when a pipeline call fails for good (see `call`); the worker
    then stops. After that every pipeline call fails at once: nothing more is written.
    """

    def __init__(self, store: Store, metrics: Metrics, window_ms: int,
                 retry: RetryOnFailure | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.metrics = metrics
        self.window_ms = window_ms
        self.retry = retry or RetryOnFailure()
        self.clock = clock
        self.on_fatal: Callable[[StorageError], None] | None = None
        self.fatal: StorageError | None = None
        # One thread: chdb sessions are single-threaded, and it keeps inserts in order.
        self._thread = ThreadPoolExecutor(1, "clickhouse")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def call(self, fn: Any, *args: Any) -> Any:
        """Run a pipeline store call on the ClickHouse thread.

        A transient failure (unreachable, timeout, overload, too many parts) is retried
        with capped exponential backoff for at most retry_on_failure.max_elapsed_time;
        nothing is acknowledged until the write lands, so waiting loses nothing, it only
        holds consumption back. A permanent failure (ClickHouse rejected the statement), or
        retries used up, raises StorageError after telling ``on_fatal``: retrying a
        rejected row cannot succeed and would stall every stage behind it.
        """
        backoff = Backoff(self.retry)
        started = self.clock()
        while True:
            if self.fatal is not None:
                raise StorageError(f"not run, the worker is stopping: {self.fatal}",
                                   operation=self.fatal.operation)
            try:
                return await self._run(fn, *args)
            except StorageError as exc:
                elapsed = self.clock() - started
                delay = backoff.next_delay(elapsed) if exc.transient else None
                self.metrics.inc("otel_insights_clickhouse_errors_total", operation=exc.operation,
                                 outcome="failed" if delay is None else "retried")
                if delay is None:
                    raise self._give_up(exc, backoff.attempts, elapsed) from None
                log.warning("clickhouse %s failed (attempt %d, retrying in %.1fs): %s",
                            exc.operation, backoff.attempts - 1, delay, exc)
                await asyncio.sleep(delay)

    def _give_up(self, exc: StorageError, attempts: int, elapsed_s: float) -> StorageError:
        if exc.transient:
            why = (f"still failing after {attempts} attempts over {elapsed_s:.0f}s "
                   "(exporters.clickhouse.retry_on_failure)")
        else:
            why = "not retried, it cannot succeed"
        fatal = StorageError(f"{exc} ({exc.operation} {why}). Nothing past it is committed: "
                             "fix the cause and restart, which replays from there",
                             operation=exc.operation)
        if self.fatal is None:
            self.fatal = fatal
            if self.on_fatal is not None:
                self.on_fatal(fatal)
        return fatal

    async def query(self, fn: Any, *args: Any) -> Any:
        """Run a read for a client (the query API): one attempt, its failure goes back to
        the client and never stops the worker."""
        return await self._once(False, fn, *args)

    async def background(self, fn: Any, *args: Any) -> Any:
        """Run work that a later tick repeats (the hourly rollups, what a commit stores
        first): one attempt; a transient failure counts as retried, the next tick is the retry."""
        return await self._once(True, fn, *args)

    async def _once(self, repeated: bool, fn: Any, *args: Any) -> Any:
        try:
            return await self._run(fn, *args)
        except StorageError as exc:
            retried = repeated and exc.transient
            self.metrics.inc("otel_insights_clickhouse_errors_total", operation=exc.operation,
                             outcome="retried" if retried else "failed")
            raise

    async def schema_current(self) -> bool:
        """Whether every migration is applied (one attempt: for /readyz, never a stop)."""
        versions = await self.query(applied_versions, self.store.backend, self.store.database)
        return bool(versions) and max(versions) >= MIGRATIONS[-1].version

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
