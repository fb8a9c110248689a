"""Keeps the hourly rollups in step with the final windows (processor/storage/rollups.py).

On the worker that owns partials partition 0 (like the anomaly judge: one builder at a time,
and a second one during a handover is harmless, since a build only ever replaces an hour with
what its final rows say), every tick checks the hours within reach of late corrections and
rebuilds the stale ones inside ClickHouse. A sweep over the whole retention goes on beside
it, a day per tick at first and a day a minute after that, so hours finalised long after
they happened (a backlog after downtime) are caught up too.

Rollups are derived data: a failed check or build is logged and retried on a later tick,
never a reason to stop the pipeline.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from pipelines.store_io import StoreIO
from processor.config import Config
from processor.errors import StorageError
from processor.storage import rollups
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.rollups")
TICK_S = 10.0
HOURS_PER_TICK = 6  # rebuilt at most per tick: a backlog is caught up in slices
RETENTION_MS = 8 * 24 * rollups.HOUR_MS  # swept (at most the TTL)
DAY_MS = 24 * rollups.HOUR_MS
SLOW_SWEEP_TICKS = 6  # once the first pass is done, a day of the sweep every minute


class RollupTask:
    def __init__(self, cfg: Config, io: StoreIO, metrics: Metrics) -> None:
        w = cfg.windows
        # Late spans correct windows up to correction_horizon behind the watermark, which is
        # allowed_lateness behind the newest span: nearer hours are checked every tick.
        self.reach_ms = w.correction_horizon.ms + w.allowed_lateness.ms + w.size.ms + rollups.HOUR_MS
        ttl_ms = cfg.clickhouse.ttl.ns // 1_000_000 if cfg.clickhouse is not None else 0
        self.retention_ms = min(RETENTION_MS, ttl_ms) if ttl_ms > 0 else RETENTION_MS
        self.io = io
        self.metrics = metrics
        self._owner = False
        self._sweep = 0  # the start of the next day to sweep
        self._first_pass = True
        self._ticks = 0

    async def tick(self, owner: bool) -> None:
        """The recent hours first (what readers look at), then a day of the sweep."""
        if not owner:
            self._owner = False
            return
        now = int(time.time() * 1000)
        recent = now - self.reach_ms
        if not self._owner:
            self._owner, self._first_pass, self._sweep = True, True, now - self.retention_ms
        self._ticks += 1
        left = await self._catch_up(recent, now + rollups.HOUR_MS, HOURS_PER_TICK)
        if left == 0 or (not self._first_pass and self._ticks % SLOW_SWEEP_TICKS):
            return
        until = min(self._sweep + DAY_MS, recent)
        if await self._catch_up(self._sweep, until, left) > 0:  # that day is done: the next one
            self._sweep = until
            if until >= recent:
                self._sweep, self._first_pass = now - self.retention_ms, False

    async def _catch_up(self, since: int, until: int, budget: int) -> int:
        """Rebuild stale hours in [since, until), at most ``budget``; what is left of it
        (0: some may remain, or ClickHouse failed)."""
        if until <= since:
            return budget
        store = self.io.store
        try:
            stale = await self._q(rollups.stale_hours, store.backend, store.database, since, until)
            todo = [(table, hour) for table, hours in stale.items() for hour in hours]
            for table, hour in todo[:budget]:
                await self._q(rollups.rebuild, store.backend, store.database, table, [hour])
                self.metrics.inc("otel_insights_rollup_builds_total", table=table)
        except StorageError as exc:
            log.warning("rollups: %s (tried again on a later tick)", exc)
            return 0
        return budget - len(todo) if len(todo) < budget else 0

    async def _q(self, fn: Any, *args: Any) -> Any:
        return await self.io.background(fn, *args)
