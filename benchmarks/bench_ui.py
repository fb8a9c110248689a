"""The web UI's two latencies, printed (never asserted).

  .venv/bin/python benchmarks/bench_ui.py [--services 200] [--hours 24] [--runs 10] [--cards 20]

1. The map over `--hours` of 1-minute final windows of `--services` services on chdb (with
   their latency sketches): building the hourly rollups, the map's queries over the final
   windows and over the rollups, and as the UI serves them (its map cache).
2. An insight produced on the insights topic (local broker) -> its card visible in headless
   Chromium on the feed page, through the UI's topic consumer and server-sent events.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processor.config import parse_config  # noqa: E402
from processor.storage.open import open_store  # noqa: E402
from processor.windows import sketch  # noqa: E402

MINUTE_MS = 60_000
CONFIG = """
receivers: {{kafka: {{brokers: ["{bootstrap}"], group_id: bench, traces: {{topics: [bench]}}}}}}
processors: {{anomaly: {{}}, narrator: {{topic: bench-insights}}, dashboards: {{topic: bench-dashboards}}}}
exporters: {{clickhouse: {{endpoint: "chdb://{path}", ttl: 0s}}}}
extensions: {{ui: {{endpoint: "127.0.0.1:{port}"}}}}
service:
  extensions: [ui]
  pipelines: {{traces: {{receivers: [kafka], processors: [anomaly, narrator, dashboards], exporters: [clickhouse]}}}}
"""


def _sketch(rng: np.random.Generator, n: int, scale: float) -> tuple[list[int], list[int]]:
    keys, counts = np.unique(sketch.keys_for(rng.lognormal(np.log(scale), 0.5, size=n)), return_counts=True)
    return keys.tolist(), counts.tolist()


def fill(store: Any, services: int, hours: float) -> int:
    """`hours` of minute windows: each service called by its parent (a tree) and calling one database."""
    rng = np.random.default_rng(7)
    now = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    windows = int(hours * 60)
    names = [f"svc-{i:03d}" for i in range(services)]
    rows = 0
    for w in range(windows):
        ws = now - (windows - w) * MINUTE_MS
        health, edges = [], []
        for i, name in enumerate(names):
            k, c = _sketch(rng, 40, 10 + i % 50)
            calls = int(sum(c))
            health.append({"window_start": ws, "window_end": ws + MINUTE_MS, "service": name, "calls": calls,
                           "errors": int(rng.integers(0, 3)), "error_rate": 0.01, "p50_ms": 10.0, "p95_ms": 20.0,
                           "p99_ms": 30.0, "health": "healthy", "latency_keys": k, "latency_counts": c,
                           "partitions": 1, "version": 1})
            parent = "user" if i == 0 else names[(i - 1) // 2]
            for client, server, ctype in ((parent, name, ""), (name, f"db-{i % 20}", "database")):
                sk, sc = _sketch(rng, 40, 8)
                edges.append({"window_start": ws, "window_end": ws + MINUTE_MS, "client": client, "server": server,
                              "connection_type": ctype, "requests": int(sum(sc)), "failed": 0, "error_rate": 0.0,
                              "server_p50_ms": 8.0, "server_p95_ms": 12.0, "server_p99_ms": 15.0,
                              "client_p50_ms": 9.0, "client_p95_ms": 13.0, "client_p99_ms": 16.0,
                              "server_keys": sk, "server_counts": sc, "client_keys": sk, "client_counts": sc,
                              "version": 1})
        store.insert_health_final(health)
        store.insert_edges_final(edges)
        rows += len(health) + len(edges)
    return rows


def _timed(fn: Any, runs: int) -> tuple[Any, list[float]]:
    out, times = None, []
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return out, times


def _say(label: str, rows: Any, times: list[float]) -> None:
    n = len(rows) if isinstance(rows, list) else rows
    print(f"  {label:<52} {n:>5} rows: median {statistics.median(times):8.1f} ms, min {min(times):8.1f}, "
          f"max {max(times):8.1f} over {len(times)} runs")


def bench(services: int, hours: float, runs: int, cards: int) -> None:
    """Fill a chdb store, build its rollups, time the map's queries, then serve the UI on it."""
    from aiokafka import AIOKafkaProducer
    from playwright.sync_api import sync_playwright

    from pipelines.store_io import StoreIO
    from pipelines.ui import UiServer
    from processor.localstack import LocalBroker, free_port
    from processor.storage import rollups
    from processor.telemetry import Metrics

    port = free_port()
    with LocalBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        for t in ("bench", "bench-insights", "bench-dashboards"):
            broker.create_topic(t, 3)
        cfg = parse_config(CONFIG.format(bootstrap=broker.bootstrap, path=Path(tmp) / "ch", port=port), environ={})
        store = open_store(cfg.clickhouse, windows=cfg.windows)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        rows = fill(store, services, hours)
        print(f"  filled {rows:,} final rows ({services} services, {hours:g} h of 1-minute windows) "
              f"in {time.perf_counter() - t0:.0f} s")
        t0 = time.perf_counter()
        built = sum(rollups.rebuild(store.backend, store.database, table, h) for table, h in
                    rollups.stale_hours(store.backend, store.database, 0, 9_999_999_999_999).items())
        print(f"  built {built} hourly rollups in {time.perf_counter() - t0:.1f} s "
              f"({(time.perf_counter() - t0) / max(1, built) * 1000:.0f} ms per hour and table)")
        t0 = time.perf_counter()
        stale = rollups.stale_hours(store.backend, store.database, int(time.time() * 1000) - 3 * 3_600_000,
                                    int(time.time() * 1000) + 3_600_000)
        print(f"  stale-hour check over the last 3 h: {(time.perf_counter() - t0) * 1000:.0f} ms "
              f"({sum(len(v) for v in stale.values())} stale)")
        since = int(time.time() * 1000) - int(hours * 3600 * 1000)
        for name in ("topology_nodes", "topology"):  # the final windows: what a map read without rollups
            got, times = _timed(lambda n=name: store.catalogue(n, {"since_ms": since}), 1)
            _say(f"{name} over the final windows", got, times)
        for name in ("map_nodes", "map_edges"):
            store.catalogue(name, {"since_ms": since})
            got, times = _timed(lambda n=name: store.catalogue(n, {"since_ms": since}), runs)
            _say(f"{name} over the hourly rollups", got, times)
        io = StoreIO(store, Metrics(), cfg.windows.size.ms)
        loop = asyncio.new_event_loop()
        server = UiServer(cfg, cfg.ui, io, Metrics())  # type: ignore[arg-type]
        threading.Thread(target=loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(60)
        try:
            _serve_map(port, hours, runs)
            _cards(loop, broker.bootstrap, server, port, cards, AIOKafkaProducer, sync_playwright)
        finally:
            asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
            io.close()


def _serve_map(port: int, hours: float, runs: int) -> None:
    import urllib.request

    for name in ("map_nodes", "map_edges"):
        url = f"http://127.0.0.1:{port}/api/query/{name}?since={int(hours)}h"
        with urllib.request.urlopen(url, timeout=120) as r:  # the first, uncached
            r.read()
        got, times = _timed(lambda u=url: json.loads(urllib.request.urlopen(u, timeout=60).read()), runs)
        _say(f"GET {name} ?since={int(hours)}h through the UI (its map cache)", got, times)


def _cards(loop: Any, bootstrap: str, server: Any, port: int, cards: int, producer_cls: Any, sync_playwright: Any) -> None:
    async def make_producer() -> Any:
        prod = producer_cls(bootstrap_servers=bootstrap, linger_ms=0)
        await prod.start()
        return prod

    producer = asyncio.run_coroutine_threadsafe(make_producer(), loop).result(30)
    deadline = time.monotonic() + 60
    while not server.feed.assigned and time.monotonic() < deadline:
        time.sleep(0.2)
    lat = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/#/insights")
        page.wait_for_selector("#live[data-state='live']", timeout=30_000)
        for i in range(cards):
            body = _insight(f"inc-bench-{i}")
            t0 = time.perf_counter()
            asyncio.run_coroutine_threadsafe(producer.send_and_wait(
                "bench-insights", json.dumps(body).encode(), key=body["incident_id"].encode()), loop).result(10)
            page.wait_for_selector(f"article.insight[data-insight-id='{body['insight_id']}']", timeout=10_000)
            lat.append((time.perf_counter() - t0) * 1000)
        browser.close()
    asyncio.run_coroutine_threadsafe(producer.stop(), loop).result(10)
    lat.sort()
    print(f"  insight produced -> card visible: median {statistics.median(lat):.0f} ms, "
          f"p90 {lat[int(0.9 * (len(lat) - 1))]:.0f} ms, max {lat[-1]:.0f} ms over {len(lat)} insights")


def _insight(incident: str) -> dict[str, Any]:
    """A valid insight (the UI refuses what its schema refuses), as stage 3 would build it."""
    from processor.insights import facts as facts_mod
    from processor.insights import message

    now_ms = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
    rows = [{"window_start": now_ms, "entity_type": "service", "entity": "checkout", "metric": "p95_ms",
             "observed": 80.0, "expected": 20.0, "score": 0.9, "severity": "warning", "attribution": []}]
    facts = facts_mod.build(incident, rows, [], MINUTE_MS)
    return message.build(facts, message.template_narration(facts), insight_id=incident, version=1,
                         status="open", change="opened")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--services", type=int, default=200)
    ap.add_argument("--hours", type=float, default=24)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--cards", type=int, default=20)
    args = ap.parse_args()
    bench(args.services, args.hours, args.runs, args.cards)


if __name__ == "__main__":
    main()
