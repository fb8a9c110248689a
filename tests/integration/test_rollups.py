"""Hourly rollups stay equal to their final windows: built, after a late correction, rebuilt twice,
and kept by a running worker (real broker, chdb)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from processor.generate.sinks import send_kafka
from processor.storage import rollups
from tests.integration.harness import make_pipeline, shop_traffic, wait_until
from tests.shop_store import ShopStore, module_fixture

pytestmark = pytest.mark.integration
shop = module_fixture(minutes=12, fault=False)
ALL = (0, 9_999_999_999_999)


def _by(rows: list[dict[str, Any]], key: str) -> dict[str, tuple]:
    return {r[key]: (r["requests"], r["error_rate"], r["p50_ms"] if "p50_ms" in r else r["server_p95_ms"],
                     r.get("p95_ms", r.get("client_p95_ms")), r["health"]) for r in rows}


def _same_map(s: ShopStore) -> None:
    """The map from the rollups equals the map from the final windows over the same whole hours."""
    since = s.start_ms - s.start_ms % rollups.HOUR_MS
    finals_nodes = s.store.catalogue("topology_nodes", {"since_ms": since})
    finals_edges = s.store.catalogue("topology", {"since_ms": since})
    assert _by(s.store.catalogue("map_nodes", {"since_ms": since}), "id") == _by(finals_nodes, "id")
    assert _by(s.store.catalogue("map_edges", {"since_ms": since}), "id") == _by(finals_edges, "id")


def test_rollups_built_from_final_windows_give_the_same_map(shop: ShopStore) -> None:
    assert rollups.stale_hours(shop.store.backend, shop.store.database, *ALL) == {
        "service_health": [], "service_edges": []}
    # A range that starts inside an hour still checks whole hours (nothing is stale).
    assert rollups.stale_hours(shop.store.backend, shop.store.database, shop.start_ms + 1234, shop.end_ms) == {
        "service_health": [], "service_edges": []}
    _same_map(shop)


def test_a_corrected_window_makes_its_hour_stale_and_a_rebuild_exact(shop: ShopStore) -> None:
    b, db = shop.store.backend, shop.store.database
    (row,) = b.query(f"SELECT * FROM {db}.service_health FINAL WHERE service = 'cart' ORDER BY window_start LIMIT 1")
    hour = int(row["window_start"].timestamp() * 1000) // rollups.HOUR_MS * rollups.HOUR_MS
    # A late span re-finalises the window: a new version with one more call.
    shop.store.insert_health_final([{**row, "window_start": int(row["window_start"].timestamp() * 1000),
                                     "window_end": int(row["window_end"].timestamp() * 1000),
                                     "calls": row["calls"] + 1, "version": time.time_ns()}])
    stale = rollups.stale_hours(b, db, *ALL)
    assert stale == {"service_health": [hour], "service_edges": []}
    for _ in range(2):  # two builders racing (an ownership handover) end the same
        rollups.rebuild(b, db, "service_health", stale["service_health"])
    assert rollups.stale_hours(b, db, *ALL)["service_health"] == []
    (n,) = b.query(f"SELECT count() AS n FROM {db}.service_health_hourly FINAL WHERE service = 'cart'")
    assert n["n"] == len({int(r["window_start"].timestamp() * 1000) // rollups.HOUR_MS for r in
                          b.query(f"SELECT window_start FROM {db}.service_health FINAL WHERE service = 'cart'")})
    _same_map(shop)


def test_a_running_worker_keeps_the_rollups(broker, new_topic, unique_name, tmp_path) -> None:
    topic = new_topic("spans")
    traces, _ = shop_traffic(seed=9, seconds=10)
    p = make_pipeline(tmp_path, broker.bootstrap, topic, unique_name("roll")).start()
    try:
        asyncio.run(send_kafka(traces, [broker.bootstrap], topic))
        since = (traces[0].end_ns // 10**6) // rollups.HOUR_MS * rollups.HOUR_MS

        def total(name: str) -> int:
            return sum(r["requests"] for r in p.get(f"/api/query/{name}?since_ms={since}"))

        wait_until(lambda: total("topology_nodes") > 0 and total("map_nodes") == total("topology_nodes"), 90,
                   "the worker's rollups to equal the final windows", p)
        assert p.metric("otel_insights_rollup_builds_total", table="service_health") >= 1
    finally:
        p.stop()


def test_the_sweep_rolls_up_an_old_hour_finalised_late(shop: ShopStore) -> None:
    """A backlog after downtime finalises windows hours old: the sweep finds their hour."""
    from pipelines.rollup_task import RollupTask
    from pipelines.store_io import StoreIO
    from processor.telemetry import Metrics

    b, db = shop.store.backend, shop.store.database
    task = RollupTask(shop.config, StoreIO(shop.store, Metrics(), shop.context.window_ms), Metrics())
    for _ in range(12):  # the first pass over the retention, a day per tick
        asyncio.run(task.tick(owner=True))
    assert not task._first_pass
    (row,) = b.query(f"SELECT * FROM {db}.service_health FINAL WHERE service = 'email' LIMIT 1")
    old = (int(time.time() * 1000) // rollups.HOUR_MS - 5) * rollups.HOUR_MS  # five hours ago
    shop.store.insert_health_final([{**row, "window_start": old, "window_end": old + 10_000, "version": time.time_ns()}])
    assert rollups.stale_hours(b, db, *ALL)["service_health"] == [old]
    for _ in range(60):  # the slow sweep: a day a minute (6 ticks), 8 days
        asyncio.run(task.tick(owner=True))
    assert rollups.stale_hours(b, db, *ALL)["service_health"] == []
