"""Stage 2: partials messages -> final rows, once every input partition has passed the window.

Transport-free like stage 1: `receive` takes one partials-topic record, `finalize_ready`
merges the stored partials of every window that became final and writes the final rows
(store calls through `io`). The caller commits a key's record once `is_pending` says its
final row is written, and reports `finalized_through` for the anomaly judge.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from processor import failpoints
from processor.aggregate import messages
from processor.aggregate.finalize import Finalizer, SourceState, final_before, heard
from processor.aggregate.messages import EdgeKey, HealthKey, PartialsMessage, Watermark
from processor.config.components import WindowsConfig
from processor.errors import DecodeError
from processor.storage.window_store import IoCall, Row, WindowStore
from processor.telemetry import Metrics

log = logging.getLogger("otel_insights.stage2")


class Stage2:
    def __init__(self, windows: WindowsConfig, expected_sources: Iterable[str], store: WindowStore,
                 io: IoCall, metrics: Metrics,
                 on_final: Callable[[list[Row], list[Row]], None] | None = None) -> None:
        self.finalizer = Finalizer(windows, expected_sources)
        self.store = store
        self.io = io
        self.metrics = metrics
        self.on_final = on_final  # sees every final row written (the anomaly judge keeps them)
        self._seeded = False
        # What each partials partition's own records tell: the watermarks read on it, and
        # which pending keys came through it (see finalized_through).
        self.heard: dict[int, dict[str, SourceState]] = {}
        self.key_partition: dict[HealthKey | EdgeKey, int] = {}

    def receive(self, offset: int, value: bytes | None, partition: int = 0) -> PartialsMessage | None:
        """Take one partials record (of partials ``partition``); None (logged) when it is not
        a partials message."""
        try:
            msg = messages.decode(value)
        except DecodeError:
            log.error("ignoring malformed partials message at offset %d", offset)
            return None
        fin = self.finalizer
        if isinstance(msg, Watermark):
            fin.on_watermark(msg)
            heard(self.heard.setdefault(partition, {}), msg)
            return msg
        if isinstance(msg, HealthKey):
            fin.on_health_key(msg, offset)
        else:
            fin.on_edge_key(msg, offset)
        self.key_partition[msg] = partition
        return msg

    def finalized_through(self, partitions: Iterable[int]) -> dict[int, int]:
        """Per partials partition: every window ending at or before this has its final rows
        written, as far as that partition can ever send keys for it.

        Stage 1 sends a window's keys before the watermark that passes it, to the same
        partition, so a watermark read on a partition vouches for every key that partition
        holds below it. Judged by the partition's own records only (not by watermarks other
        partitions brought), a new owner replaying a partition cannot vouch for keys it has
        not read yet. Partitions that have not heard every source are left out.
        """
        fin = self.finalizer
        lowest: dict[int, int] = {}
        for key, q in self.key_partition.items():
            lowest[q] = min(lowest.get(q, key.window_start), key.window_start)
        out: dict[int, int] = {}
        for q in partitions:
            limit = final_before(fin.expected_sources, self.heard.get(q, {}))
            if limit is not None:
                out[q] = min(limit, lowest.get(q, limit))
        return out

    def keep_partitions(self, partitions: Iterable[int]) -> None:
        """Forget what revoked partials partitions told (their new owner reads them again)."""
        mine = set(partitions)
        for q in [q for q in self.heard if q not in mine]:
            del self.heard[q]
        self.key_partition = {k: q for k, q in self.key_partition.items() if q in mine}

    def is_pending(self, key: HealthKey | EdgeKey) -> bool:
        """Whether the key's window still waits for its final row (its record must not be committed)."""
        return self.finalizer.is_pending(key)

    async def _seed_baselines(self) -> None:
        """Latency baselines survive restarts: start from the stored final windows."""
        fin = self.finalizer
        history = await self.io(self.store.recent_health_p95, None, int(time.time() * 1000),
                                fin.rules.baseline_windows)
        for service, values in history.items():
            # Stored windows predate anything this process finalises: number them below zero.
            for i, p95 in enumerate(values):
                fin.seed_baseline(service, i - len(values), p95)
        self._seeded = True

    async def finalize_ready(self) -> None:
        """Write the final rows of every pending key whose window is final now."""
        fin = self.finalizer
        health_keys, edge_keys = fin.take_ready()
        if not health_keys and not edge_keys:
            return
        store = self.store
        if not self._seeded:
            await self._seed_baselines()
        health_rows: list[Row] = []
        edge_rows: list[Row] = []
        if health_keys:
            partials = await self.io(store.read_health_partials, health_keys)
            health_rows = fin.final_health(partials)
        if edge_keys:
            partials = await self.io(store.read_edge_partials, edge_keys)
            edge_rows = fin.final_edges(partials)
        if health_rows:
            await self.io(store.insert_health_final, health_rows)
            self.metrics.inc("otel_insights_windows_finalized_total", len(health_rows),
                             table="service_health")
        if edge_rows:
            await self.io(store.insert_edges_final, edge_rows)
            self.metrics.inc("otel_insights_windows_finalized_total", len(edge_rows),
                             table="service_edges")
        failpoints.reach("stage2.final_written")
        if self.on_final is not None:
            self.on_final(health_rows, edge_rows)
        newest_end = max([k.window_start for k in health_keys] + [k.window_start for k in edge_keys]) + fin.size_ms
        self.metrics.set("otel_insights_window_close_lag_seconds", time.time() - newest_end / 1000)
        fin.done(health_keys, edge_keys)
        for hk in health_keys:
            self.key_partition.pop(hk, None)
        for ek in edge_keys:
            self.key_partition.pop(ek, None)
